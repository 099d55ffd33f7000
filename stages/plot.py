"""Plot stage: figures (PNG) and their data (CSV) comparing the students with the teacher."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from decision_distill.core.errors import UserError, stage_main
from decision_distill.data.schema import Schema
from decision_distill.evaluation.plots import make_plots


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Draw loss curves, student-vs-teacher scatter, calibration, error by state size and a "
            "metric comparison into --out as PNG, with the plotted data as CSV under --out/data."
        )
    )
    parser.add_argument("--predictions", type=Path, default=Path("data/predictions.parquet"),
                        help="evaluate stage output: probabilities per state (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/students.json"),
                        help="evaluate stage output: metrics per student (default: %(default)s)")
    parser.add_argument("--splits", type=Path, default=Path("data/splits"),
                        help="split stage output; only features.json is read (default: %(default)s)")
    parser.add_argument("--live", type=Path, default=Path("dvclive"),
                        help="DVCLive folder of the train stage, for loss curves; may be absent (default: %(default)s)")
    parser.add_argument("--stability", type=Path, default=None,
                        help="stability stage metrics: noise-floor band, ICC plot (default: not drawn)")
    parser.add_argument("--stability-readings", type=Path, default=None,
                        help="stability stage readings, for the per-state spread plot (default: not drawn)")
    parser.add_argument("--games", type=Path, default=None,
                        help="games stage report: per-cell bars per held-out split (default: not drawn)")
    parser.add_argument("--out", type=Path, default=Path("plots"),
                        help="output folder, replaced as a whole (default: %(default)s)")
    return parser.parse_args(argv)


def require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise UserError(f"{path}: not found; run the {stage} stage first")
    return path


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    schema = Schema.load(require(args.splits / "features.json", "split"))
    predictions = pd.read_parquet(require(args.predictions, "evaluate"))
    metrics = json.loads(require(args.metrics, "evaluate").read_text())
    live_root = args.live if args.live.is_dir() else None
    stability = json.loads(require(args.stability, "stability").read_text()) if args.stability else None
    readings = pd.read_parquet(require(args.stability_readings, "stability")) if args.stability_readings else None
    games = json.loads(require(args.games, "games").read_text()) if args.games else None
    make_plots(predictions, metrics, schema, live_root, args.out, stability=stability, stability_readings=readings,
               games=games)


if __name__ == "__main__":
    main()
