"""Simulate stage: students (and the tuned small LM), beside two reference deciders (a constant
at the training mean, a lookup of the teacher's answers), deciding inside simulations, compared
with the same simulations driven by the teacher (through the answer cache)."""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.atomic import atomic_dir, write_json
from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.simulation.report import json_safe, read_students_metrics, simulate_all


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(
        "Run every simulate.simulations file written for the pipeline's scenario, simulate.replicates seeded "
        "replicates with the teacher deciding and the same replicates with each simulate.deciders entry; write "
        "population-level fidelity (total difference with a bootstrap interval, spread, Wasserstein, JSD, per "
        "trait group rates, beside each decider's per-decision KL) and how many teacher calls the teacher run needed."))
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"), help="default: %(default)s")
    parser.add_argument("--students", type=Path, default=Path("models/students"), help="default: %(default)s")
    parser.add_argument("--slm-tuned", type=Path, default=Path("models/slm_merged"), help="default: %(default)s")
    parser.add_argument("--splits", type=Path, default=Path("data/splits"),
                        help="train.parquet there tells which values the students never saw and gives the "
                        "`constant` decider its mean P(action) (default: %(default)s)")
    parser.add_argument("--decisions", type=Path, default=Path("data/decisions.parquet"),
                        help="the teacher's answers the `lookup` decider looks states up in (default: %(default)s)")
    parser.add_argument("--students-metrics", type=Path, default=Path("metrics/students.json"),
                        help="evaluate stage metrics, for kl_per_decision (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/simulate.json"), help="default: %(default)s")
    parser.add_argument("--out", type=Path, default=Path("sim_plots"),
                        help="per simulation: <name>.png and <name>_ticks.csv (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="reads scenario, simulate, teacher, slm, generate.cache (default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    students_metrics = read_students_metrics(args.students_metrics)
    with atomic_dir(args.out) as out:  # a failed run leaves the previous plots, not half of new ones
        report = simulate_all(params, args.teacher, args.students, args.slm_tuned, args.splits, args.decisions,
                              students_metrics, out)
        write_json(json_safe(report), args.metrics)
    print(f"simulate: {report['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
