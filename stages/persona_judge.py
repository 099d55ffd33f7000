"""persona-judge stage: a judge LM (judge.model, default the teacher) rates every answer of
persona-respond 1 to 5 from the rating tokens' probabilities under two rubric wordings, and
compares each tuned answer with each baseline's in both orders (an order-dependent verdict is a
tie); per person and overall, with bootstrap intervals and the judge's own consistency.

example:
  python stages/persona_judge.py --judge models/teacher --answers data/personas/answers \
      --rows data/personas/judge.json --metrics metrics/personas/judge.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import is_model_dir
from decision_distill.personas.judge import judge_all
from decision_distill.personas.params import load_persona_params


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=None, help="the judge model's directory (default: judge.model)")
    parser.add_argument("--answers", type=Path, default=Path("data/personas/answers"),
                        help="holds NAME.json from persona-respond for every persona")
    parser.add_argument("--rows", type=Path, default=Path("data/personas/judge.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/personas/judge.json"))
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--teacher-params", type=Path, default=Path("params.yaml"),
                        help="the judge loads with teacher.dtype, .device, .trust_remote_code (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_persona_params(args.params)
    t = load_params(args.teacher_params).teacher
    judge_dir = args.judge or Path(params.judge.model)
    if not is_model_dir(judge_dir):
        raise UserError(f"{judge_dir}: no model (judge.model); run download@teacher or point judge.model at a "
                        "model directory with model.json")
    items = []
    for persona in params.corpus.personas:
        path = args.answers / f"{persona}.json"
        try:
            items += json.loads(path.read_text())["items"]
        except (OSError, ValueError, KeyError):
            raise UserError(f"{path}: missing or not an answers file; run persona-respond@{persona}") from None
    judge = load_causal_lm(judge_dir, t.dtype, t.device, t.trust_remote_code)
    start = time.perf_counter()
    report, rows = judge_all(judge, items, params.judge)
    report["scoring_seconds"] = time.perf_counter() - start
    write_json(rows, args.rows)
    write_json(report, args.metrics)
    overall = report["overall"]
    print(f"persona-judge: {len(items)} questions in {report['scoring_seconds']:.0f} s; expected score "
          + ", ".join(f"{m} {r['expected_score']['mean'] if r['expected_score']['mean'] is None else round(r['expected_score']['mean'], 2)}"
                      f" ({r['non_compliant']} non-compliant)" for m, r in overall["ratings"].items()))


if __name__ == "__main__":
    main()
