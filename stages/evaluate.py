"""Evaluate stage: score every trained student against the teacher on the held-out splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from decision_distill.core.atomic import write_json, write_parquet
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import ARCHITECTURES, Params, load_params
from decision_distill.data.schema import Schema
from decision_distill.evaluation.evaluate import FloorIntervals, SLMStudents, add_noise_floor_ratios, evaluate_students
from decision_distill.slm.answers import slm_model_dirs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Predict the test split and each non-empty split.holdouts split with every student "
            f"({', '.join(ARCHITECTURES)}) and, unless slm.enabled is false, the base and merged small LM "
            "(slm_base, slm_tuned; answers kept in generate.cache), and compare with the teacher: mse, mae, "
            "pearson, spearman, kl, ce, brier, ece, agreement (defined in decision_distill/stats/metrics.py); "
            "slm_tuned also gets gap_closed, the share of slm_base's distance to the teacher it removed."
        )
    )
    parser.add_argument("--splits", type=Path, default=Path("data/splits"),
                        help="split stage output: features.json, test.parquet, <holdout>.parquet (default: %(default)s)")
    parser.add_argument("--students", type=Path, default=Path("models/students"),
                        help="train stage output, one folder per architecture (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/students.json"),
                        help="where to write the metrics JSON, "
                             "{student: {metric: value, 'holdouts': {name: {metric: value}}}} (default: %(default)s)")
    parser.add_argument("--predictions", type=Path, default=Path("data/predictions.parquet"),
                        help="where to write teacher and student probabilities per state (default: %(default)s)")
    parser.add_argument("--slm-base", type=Path, default=Path("models/slm"),
                        help="base SLM directory, the slm_base row (default: %(default)s)")
    parser.add_argument("--slm-tuned", type=Path, default=Path("models/slm_merged"),
                        help="merged SLM directory, the slm_tuned row (default: %(default)s)")
    parser.add_argument("--stability", type=Path, default=None,
                        help="stability stage metrics; adds kl_vs_noise_floor and mse_vs_noise_floor "
                             "beside each kl and mse (default: no ratios)")
    parser.add_argument("--noise-floor", type=Path, default=None,
                        help="stability stage's noise floor per state (data/noise_floor.parquet); with --stability, "
                             "gives each ratio a bootstrap interval, <m>_vs_noise_floor_ci (default: no intervals)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file; reads evaluate, split.holdouts, and for the SLM rows scenario, slm and "
                             "generate.cache (default: %(default)s)")
    return parser.parse_args(argv)


def slm_students(args: argparse.Namespace, params: Params) -> SLMStudents | None:
    """The SLM rows (decision_distill.slm.answers.slm_model_dirs), or None when there are none."""
    models = slm_model_dirs(params, args.slm_base, args.slm_tuned)
    return SLMStudents(params, models) if models else None


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    metrics, predictions = evaluate_students(args.splits, args.students, ARCHITECTURES, params.evaluate.ece_bins,
                                             slm_students(args, params), params.evaluate.gap_min,
                                             holdouts=list(params.split.holdouts),
                                             confidence=params.evaluate.confidence)
    if args.stability is not None:
        intervals = None
        if args.noise_floor is not None:
            if not args.noise_floor.exists():
                raise UserError(f"--noise-floor {args.noise_floor}: not found; run the stability stage first")
            e = params.evaluate
            options = list(Schema.load(args.splits / "features.json").options)
            intervals = FloorIntervals(predictions, options, pd.read_parquet(args.noise_floor),
                                       e.bootstrap, e.confidence, e.seed)
        metrics = add_noise_floor_ratios(metrics, read_stability(args.stability), intervals)
    write_parquet(predictions, args.predictions)
    write_json(metrics, args.metrics)


def read_stability(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"--stability {path}: not found; run the stability stage first")
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
