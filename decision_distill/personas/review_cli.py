"""Reviewing generated questions by hand: accept, edit or drop each one (and its summary).

Decisions go to one file per person (personas/reviewed/NAME.json, tracked in git, not a
pipeline output), written atomically after every decision, so quitting keeps what was
reviewed and a later stage that depends on NAME.json reruns for exactly the people whose
review changed. A question regenerated with new text comes back for review; unchanged
ones keep their decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core.atomic import write_json
from .reviewed_questions import STATUSES, load_reviewed

HELP = "[a]ccept  [e]dit  [d]rop  [s]kip for now  [q]uit"


def _pending(generated: dict, reviewed: dict[str, dict]) -> bool:
    done = reviewed.get(generated["id"])
    # Reviewed against other generated text (the extract stage reran): ask again.
    return done is None or (done["generated_question"], done["generated_summary"]) != (generated["question"],
                                                                                        generated["summary"])


def review(questions: list[dict], directory: Path, ask: Callable[[str], str] = input,
           say: Callable[[str], None] = print, redo: bool = False) -> dict[str, int]:
    """Walk the pending questions; returns counts of this session's decisions."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys((*STATUSES, "skipped"), 0)
    by_person: dict[str, list[dict]] = {}
    for q in questions:
        by_person.setdefault(q["persona"], []).append(q)
    for persona, items in sorted(by_person.items()):
        reviewed = load_reviewed(directory, persona)
        todo = [q for q in items if redo or _pending(q, reviewed)]
        for n, q in enumerate(todo, 1):
            say(f"\n{persona} ({n}/{len(todo)}), {q['category']}, P(yes) {q['p_yes']:.2f}, chunk {q['chunk']}")
            say(f"  summary:  {q['summary']}")
            say(f"  question: {q['question']}")
            while (choice := ask(f"{HELP}? ").strip().lower()[:1]) not in ("a", "e", "d", "s", "q"):
                say(f"  please answer one of: {HELP}")
            if choice == "q":
                return counts
            if choice == "s":
                counts["skipped"] += 1
                continue
            item = {"id": q["id"], "persona": persona, "category": q["category"], "chunk": q["chunk"],
                    "summary": q["summary"], "question": q["question"],
                    "generated_summary": q["summary"], "generated_question": q["question"]}
            if choice == "e":
                item["question"] = ask("  new question (empty keeps it): ").strip() or q["question"]
                item["summary"] = ask("  new summary (empty keeps it): ").strip() or q["summary"]
            changed = (item["question"], item["summary"]) != (q["question"], q["summary"])
            item["status"] = {"a": "accepted", "d": "dropped"}.get(choice, "edited" if changed else "accepted")
            counts[item["status"]] += 1
            reviewed[q["id"]] = item
            write_json({"persona": persona, "items": sorted(reviewed.values(), key=lambda i: i["id"])},
                       directory / f"{persona}.json")
    return counts
