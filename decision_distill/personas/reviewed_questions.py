"""The reviewed questions a persona is asked: personas/reviewed/NAME.json (the review CLI's
file) checked against what persona-extract generated now."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import UserError

STATUSES = ("accepted", "edited", "dropped")  # a review's decision on one question


def load_reviewed(directory: Path, persona: str) -> dict[str, dict]:
    path = directory / f"{persona}.json"
    if not path.exists():
        return {}
    try:
        items = json.loads(path.read_text())["items"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a review file; fix it or delete it to review {persona} again") from None
    return {item["id"]: item for item in items}


def reviewed_for(reviewed_dir: Path, questions_path: Path, persona: str) -> dict:
    """The person's kept questions whose generated text is still what extract generated; a
    question reviewed against older generated text is left out and counted (review it again)."""
    if not (Path(reviewed_dir) / f"{persona}.json").exists():
        raise UserError(f"{reviewed_dir}/{persona}.json: {persona}'s questions are not reviewed; "
                        f"run `python stages/review.py --persona {persona}`")
    try:
        generated = {q["id"]: q for q in json.loads(Path(questions_path).read_text()) if q["persona"] == persona}
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{questions_path}: missing or not JSON; run the persona-extract stage first") from None
    kept, stale, dropped, decided = [], 0, 0, set()
    for qid, item in sorted(load_reviewed(Path(reviewed_dir), persona).items()):
        g = generated.get(qid)
        if not g or (g["question"], g["summary"]) != (item["generated_question"], item["generated_summary"]):
            stale += item["status"] != "dropped"  # reviewed against older generated text: ask again
            continue
        decided.add(qid)
        if item["status"] == "dropped":
            dropped += 1
        else:
            kept.append({k: item[k] for k in ("id", "persona", "category", "chunk", "summary", "question")})
    if not kept:
        raise UserError(f"{reviewed_dir}/{persona}.json: no accepted question matches the current "
                        f"{questions_path}; run `python stages/review.py --persona {persona}`")
    return {"persona": persona, "questions": kept, "stale_reviews_left_out": stale, "dropped": dropped,
            "not_reviewed": sum(i not in decided for i in generated)}
