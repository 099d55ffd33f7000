"""persona-judge stage: the judge LM (judge.model, default the teacher) is first checked on
cases whose answer is known (a person's own held-out words against another member's on a
similar topic, and "which member said this?"); then it rates every answer of persona-respond 1
to 5 from the rating tokens' probabilities under two rubric wordings, and compares each tuned
answer with each baseline's in both orders (P(tuned preferred) averaged over the orders); per
person and overall, with bootstrap intervals. Below judge.validity_min the report says the
judge cannot tell the people apart and marks its verdicts interpretable: false. With
teacher.chat_template: true every prompt, the check's too, is asked inside the judge's chat
template.

example:
  python stages/persona_judge.py --judge models/teacher --answers data/personas/answers \
      --chunks data/personas/chunks --rows data/personas/judge.json \
      --check-rows data/personas/judge_check.json --metrics metrics/personas/judge.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.chat import token_scorer
from decision_distill.lm.embeddings import embed  # all-MiniLM-L6-v2, offline
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import is_model_dir
from decision_distill.personas.chunks import load_chunks, load_profiles
from decision_distill.personas.judge import check_references, judge_all
from decision_distill.personas.judge_cases import choice_cases, pair_cases
from decision_distill.personas.judge_check import check_judge
from decision_distill.personas.params import load_persona_params


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=None, help="the judge model's directory (default: judge.model)")
    parser.add_argument("--answers", type=Path, default=Path("data/personas/answers"),
                        help="holds NAME.json from persona-respond for every persona")
    parser.add_argument("--chunks", type=Path, default=Path("data/personas/chunks"),
                        help="persona-split's NAME.json files: the check's cases and the answers' references")
    parser.add_argument("--rows", type=Path, default=Path("data/personas/judge.json"))
    parser.add_argument("--check-rows", type=Path, default=Path("data/personas/judge_check.json"),
                        help="one row per case of the judge's check (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/personas/judge.json"))
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--teacher-params", type=Path, default=Path("params.yaml"),
                        help="the judge loads with teacher.dtype, .device, .trust_remote_code and is asked as "
                        "teacher.chat_template says (default: %(default)s)")
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
    chunks = load_chunks(args.chunks, params.corpus.personas)
    check_references(items, chunks)
    profiles = load_profiles(args.chunks, params.corpus.personas)
    j = params.judge
    pairs, choices = pair_cases(chunks, profiles, embed, j.seed), choice_cases(chunks, profiles, j.seed)
    judge = load_causal_lm(judge_dir, t.dtype, t.device, t.trust_remote_code)
    start = time.perf_counter()
    chat = "teacher.chat_template" if t.chat_template else None
    validity, check_rows = check_judge(lambda options: token_scorer(judge, options, j.batch_size, chat), pairs,
                                       choices, j)
    checked = time.perf_counter()
    report, rows = judge_all(judge, items, j, validity, chat)
    report["check_seconds"], report["scoring_seconds"] = checked - start, time.perf_counter() - checked
    write_json(rows, args.rows)
    write_json(check_rows, args.check_rows)
    write_json(report, args.metrics)
    print(f"persona-judge: checked in {report['check_seconds']:.0f} s, {len(items)} questions judged in "
          f"{report['scoring_seconds']:.0f} s. {validity['statement']}")
    if report["interpretable"]:
        print("expected score " + ", ".join(f"{m} {_shown(r['expected_score'])} ({r['non_compliant']} non-compliant)"
                                           for m, r in report["overall"]["ratings"].items()))
        print("P(tuned preferred), both orders averaged: " + ", ".join(
            f"{k} {_shown(v['p_tuned_preferred'])}" for k, v in report["overall"]["pairwise"].items()))


def _shown(estimate: dict) -> str:
    if estimate["mean"] is None:
        return "none"
    low, high = estimate["ci"]
    return f"{estimate['mean']:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")


if __name__ == "__main__":
    main()
