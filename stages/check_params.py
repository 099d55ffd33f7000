"""check stage: validate params.yaml, the scenario and the simulation files before any other stage runs.

Checks every params key (decision_distill.core.params), the scenario file and the
zero-shot scenarios it names (decision_distill.data.scenario_file), the simulation files
of simulate.simulations (decision_distill.simulation.config; those written for this
scenario against it, as the simulate stage does), and the stability settings that only
make sense together or against the scenario.

Every other stage depends on --out, so a rejected value (`dvc exp run -S
student.mlp.hidden=-5`) stops the pipeline here, before DVC has removed any
other stage's outputs. On success --out always gets the same bytes: a change
to params.yaml reruns this check, but DVC sees an unchanged output and reruns
only the stages whose own params changed.
"""

import argparse
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import check_stability_settings, load_scenario
from decision_distill.simulation.config import check_against_scenario, load_simulation, rollout_config

CHECKED = {"checked": "params.yaml and the scenario files it names are valid"}  # constant: see the docstring


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("data/params_checked.json"),
                        help="written only when everything is valid (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    scenario = load_scenario(params.scenario)
    for path in scenario.zero_shot:  # the games stage answers these too
        load_scenario(path)
    for path in params.simulate.simulations:  # the simulate stage reads these only after every student trained
        simulation = load_simulation(path)
        if simulation.scenario == scenario.name:  # the others it reports as skipped
            check_against_scenario(simulation, scenario, path)
    if params.generate.rollouts.share > 0:  # the generate stage runs it first, before any student exists
        rollout_config(params.generate.rollouts.simulation, scenario)
    check_stability_settings(params.stability, scenario)
    write_json(CHECKED, args.out)
    print(f"{args.params} and scenario {scenario.name} are valid")


if __name__ == "__main__":
    main()
