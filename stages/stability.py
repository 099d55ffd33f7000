"""stability stage: how consistent the teacher is, and its noise floor.

Reads the first stability.states states of the test split (--test), the states the
students are scored on, under three
sources of variation, each reported on its own in --metrics: sampled verbalized
answers (stability.repeats at stability.temperature), prompt wording
(stability.paraphrases wordings and stability.shot_orders example orders, token
readout) and numerics (batch sizes, order, no prefix reuse). The noise floor,
the mean KL and MSE between the canonical prompt's answers and each other
wording's, is what evaluate divides student errors by; --floor holds it per state
and wording run. Answers go through the answer cache (generate.cache): a rerun asks
only what is missing. --readings holds P(action) per source, run and state (and the
sampled explanations).
"""

import argparse

from decision_distill.core.atomic import write_json, write_parquet
from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.evaluation.stability import describe, measure_stability


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="models/teacher", help="from the download stage (default: %(default)s)")
    parser.add_argument("--metrics", default="metrics/stability.json", help="output metrics (default: %(default)s)")
    parser.add_argument("--readings", default="data/stability.parquet",
                        help="output: P(action) per source, run and state (default: %(default)s)")
    parser.add_argument("--test", default="data/splits/test.parquet",
                        help="the split stage's test split; its first stability.states states are read "
                             "(default: %(default)s)")
    parser.add_argument("--floor", default="data/noise_floor.parquet",
                        help="output: the noise floor (kl, mse) per state and wording run (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args()
    params = load_params(args.params)
    metrics, readings, floor = measure_stability(params, load_scenario(params.scenario), args.teacher, args.test)
    write_parquet(readings, args.readings)
    write_parquet(floor, args.floor)
    write_json(metrics, args.metrics)
    print("\n".join(describe(metrics)))


if __name__ == "__main__":
    main()
