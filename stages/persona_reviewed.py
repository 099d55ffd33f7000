"""persona-reviewed stage: one person's accepted and edited questions, from the review file
personas/reviewed/NAME.json (kept in git, written by `python stages/review.py`), checked
against the questions extract generated now. A person with no review file stops here with
the command to run; a question reviewed against older generated text is left out and counted.

The stage depends on the personas/reviewed directory (which always exists), not on NAME.json
(DVC refuses a missing dependency with a bare "No such file" before a stage could explain);
its output changes only when this person's kept questions do, so the respond stage after it
reruns for exactly the people whose review changed.

example:
  python stages/persona_reviewed.py --persona Walter_Henning --reviewed personas/reviewed \
      --questions data/personas/questions.json --out data/personas/reviewed/Walter_Henning.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import stage_main
from decision_distill.personas.reviewed_questions import reviewed_for


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", required=True)
    parser.add_argument("--reviewed", type=Path, default=Path("personas/reviewed"))
    parser.add_argument("--questions", type=Path, default=Path("data/personas/questions.json"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    reviewed = reviewed_for(args.reviewed, args.questions, args.persona)
    write_json(reviewed, args.out)
    print(f"persona-reviewed: {args.persona}: {len(reviewed['questions'])} questions kept, "
          f"{reviewed['dropped']} dropped, {reviewed['stale_reviews_left_out']} reviewed against older text left out, "
          f"{reviewed['not_reviewed']} not reviewed yet")


if __name__ == "__main__":
    main()
