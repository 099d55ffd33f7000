"""generate stage: the teacher's P(option | state) for every sampled state.

Samples generate.states states from the scenario (seeded), asks the teacher
through the answer cache (generate.cache) and writes a Parquet dataset, its
feature schema and metrics/teacher.json. With generate.rollouts.share above 0, that
share of the states comes from market days the teacher drives
(decision_distill.simulation.rollouts). With generate.source: import it reads
import.path instead and loads no teacher. Killed at any moment, a rerun
continues where it stopped.
"""

import argparse

from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.data.importer import import_decisions
from decision_distill.data.scenario_file import load_scenario
from decision_distill.teacher.generate import generate


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="models/teacher", help="from the download stage (default: %(default)s)")
    parser.add_argument("--dataset", default="data/decisions.parquet", help="output dataset (default: %(default)s)")
    parser.add_argument("--schema", default="data/features.json", help="output feature schema (default: %(default)s)")
    parser.add_argument("--metrics", default="metrics/teacher.json", help="output metrics (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args()
    params = load_params(args.params)
    if params.generate.source == "import":
        metrics = import_decisions(params.import_, args.dataset, args.schema, args.metrics)
    else:
        scenario = load_scenario(params.scenario)
        rollouts = None
        if params.generate.rollouts.share > 0:
            from decision_distill.simulation.rollouts import rollout_states

            def rollouts(n, exclude, cache):
                return rollout_states(params, scenario, args.teacher, cache, n, exclude)
        metrics = generate(params, scenario, args.teacher, args.dataset, args.schema, args.metrics, rollouts)
    print(" ".join(f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
