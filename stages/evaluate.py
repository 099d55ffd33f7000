"""Evaluate stage: score every trained student against the teacher on the held-out splits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decision_distill.atomic import write_json, write_parquet  # noqa: E402
from decision_distill.errors import stage_main  # noqa: E402
from decision_distill.evaluate import evaluate_students  # noqa: E402
from decision_distill.params import ARCHITECTURES, load_params  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Predict the test (and, if non-empty, ood) split with every student "
            f"({', '.join(ARCHITECTURES)}) and compare with the teacher: mse, mae, pearson, "
            "spearman, kl, ce, brier, ece, agreement (defined in decision_distill/metrics.py)."
        )
    )
    parser.add_argument("--splits", type=Path, default=Path("data/splits"),
                        help="split stage output: features.json, test.parquet, ood.parquet (default: %(default)s)")
    parser.add_argument("--students", type=Path, default=Path("models/students"),
                        help="train stage output, one folder per architecture (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/students.json"),
                        help="where to write the metrics JSON, {student: {metric: value, 'ood': {...}}} (default: %(default)s)")
    parser.add_argument("--predictions", type=Path, default=Path("data/predictions.parquet"),
                        help="where to write teacher and student probabilities per state (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file; reads evaluate.ece_bins (default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    metrics, predictions = evaluate_students(args.splits, args.students, ARCHITECTURES, params.evaluate.ece_bins)
    write_parquet(predictions, args.predictions)
    write_json(metrics, args.metrics)


if __name__ == "__main__":
    main()
