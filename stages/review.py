"""Review the generated persona questions in the terminal: accept, edit or drop each
question (and its summary). Decisions are saved after each answer to
personas/reviewed/NAME.json, which later persona stages depend on; quit at any time.

example:
  python stages/review.py                       # the questions not reviewed yet
  python stages/review.py --persona Walter_Henning --redo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from decision_distill.core.errors import UserError, stage_main
from decision_distill.personas.review_cli import review


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=Path("data/personas/questions.json"))
    parser.add_argument("--out", type=Path, default=Path("personas/reviewed"))
    parser.add_argument("--persona", help="review this person only")
    parser.add_argument("--redo", action="store_true", help="review already reviewed questions again")
    args = parser.parse_args(argv)
    try:
        questions = json.loads(args.questions.read_text())
    except (OSError, ValueError):
        raise UserError(f"{args.questions}: missing or not JSON; run `dvc repro personas/dvc.yaml` first") from None
    if args.persona:
        questions = [q for q in questions if q["persona"] == args.persona]
        if not questions:
            raise UserError(f"{args.questions}: no questions for '{args.persona}'; check the name")
    try:
        counts = review(questions, args.out, redo=args.redo)
    except EOFError:
        print("\nreview: input ended; what was decided is saved")
        return
    print("review: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; saved in {args.out}")


if __name__ == "__main__":
    main()
