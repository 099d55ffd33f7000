"""games stage: per-cell comparison of the teacher, the small LMs and the small students.

For a scenario that lists `cells` (scenarios/games.yaml: game x context), every held-out
split of the evaluate stage is broken down cell by cell: each model's mean decision and its
Jensen-Shannon divergence to the teacher, with bootstrap intervals, and slm_tuned's guarded
gap-closed share. The scenario's `zero_shot` files (the public-goods game), never trained on,
are answered by the teacher and both small LMs and reported the same way. A scenario without
cells (the ice-cream default) gets a one-line "skipped" record. See decision_distill/evaluation/games.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, default=Path("data/predictions.parquet"),
                        help="evaluate stage output (default: %(default)s)")
    parser.add_argument("--splits", type=Path, default=Path("data/splits"),
                        help="split stage output; train.parquet tells which values were trained on (default: %(default)s)")
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"),
                        help="teacher model directory, for the zero-shot scenarios (default: %(default)s)")
    parser.add_argument("--slm-base", type=Path, default=Path("models/slm"),
                        help="base SLM directory (default: %(default)s)")
    parser.add_argument("--slm-tuned", type=Path, default=Path("models/slm_merged"),
                        help="merged SLM directory (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/games.json"),
                        help="where to write the report (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file; reads scenario, games, evaluate.gap_min, teacher, slm and "
                             "generate.cache (default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    scenario = load_scenario(params.scenario)
    if not scenario.cells:
        write_json({"skipped": f"scenario {scenario.name} lists no cells"}, args.metrics)
        print(f"games: scenario {scenario.name} lists no cells; nothing to report")
        return
    for path, stage in ((args.predictions, "evaluate"), (args.splits / "train.parquet", "split")):
        if not path.exists():
            raise UserError(f"{path}: not found; run the {stage} stage first")
    from decision_distill.evaluation.games import games_report
    from decision_distill.lm.answer_cache import AnswerCache
    from decision_distill.slm.answers import slm_model_dirs

    slm_models = slm_model_dirs(params, args.slm_base, args.slm_tuned)
    cache = AnswerCache(params.generate.cache)
    try:
        report = games_report(pd.read_parquet(args.predictions), pd.read_parquet(args.splits / "train.parquet"),
                              scenario, params, args.teacher, slm_models, cache)
    finally:
        cache.close()
    write_json(report, args.metrics)
    for split, block in report["splits"].items():
        print(f"{split}: {len(block['cells'])} cells, " + ", ".join(
            f"{m} JSD {s['jsd_mean']:.4f}" for m, s in block["summary"].items() if "jsd_mean" in s))


if __name__ == "__main__":
    main()
