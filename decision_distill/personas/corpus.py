"""A persona corpus: what each person said, optional profiles and recorded votes.

A corpus is a directory holding either
  NAME.txt per person (UTF-8; monologues separated by blank lines; NAME is the persona), or
  one *.jsonl file with {"persona": ..., "text": ...} rows (one monologue per row),
and optionally
  profiles.yaml   persona -> a short hand-written description
  votes.csv       question,persona,vote (for the votes stage): Aye/Yes/For or Nay/No/Against in
                  any case; Abstain, Absent or blank is a row with no recorded vote.

A persona name holds only letters, digits, _ and -, and starts with a letter or digit: it
becomes a DVC stage name (persona-train@NAME), a path and an unquoted shell argument.

Every problem is a UserError naming the file and the fix, raised before anything is written.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from ..core.errors import UserError

VOTES = ("Aye", "Nay")
NO_VOTES = ("Abstain", "Absent", "blank")  # a votes.csv row that records no vote, and why
# Every accepted spelling, case-folded, and what it means.
SPELLINGS = {"aye": "Aye", "yes": "Aye", "for": "Aye", "nay": "Nay", "no": "Nay", "against": "Nay",
             "abstain": "Abstain", "absent": "Absent", "": "blank"}
ACCEPTED = "Aye, Yes or For; Nay, No or Against; Abstain, Absent or blank for no recorded vote (any case)"
_BLANK_LINES = re.compile(r"\n\s*\n")
# \w is Unicode-aware: José_Núñez is a valid name (DVC accepts it in a stage name), a space or
# punctuation is not (the unquoted ${item} of personas/dvc.yaml would split or break the command).
_PERSONA_NAME = re.compile(r"[^\W_][\w-]*")
NAME_RULE = "only letters, digits, _ and -, starting with a letter or digit"


@dataclass(frozen=True)
class Vote:
    question: str
    persona: str
    vote: str  # Aye | Nay in Corpus.votes; Abstain | Absent | blank in Corpus.no_votes


@dataclass
class Corpus:
    monologues: dict[str, list[str]]  # persona -> monologues, in file order
    profiles: dict[str, str] = field(default_factory=dict)
    votes: list[Vote] = field(default_factory=list)  # recorded votes only
    no_votes: list[Vote] = field(default_factory=list)  # rows of votes.csv that record no vote

    @property
    def personas(self) -> list[str]:
        return sorted(self.monologues)

    def words(self, persona: str) -> int:
        return sum(len(m.split()) for m in self.monologues[persona])


def read_utf8(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 (byte {err.start}); re-save the file as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty; add the person's monologues or remove the file")
    return text.removeprefix("\ufeff")


def file_name(name: str) -> str:
    """The persona name a spoken name becomes: "Margaret Okafor" -> Margaret_Okafor (as the example
    corpus spells its people), "Sean O'Brien" -> Sean_OBrien; "" when nothing valid is left."""
    name = unicodedata.normalize("NFC", name)  # one spelling of é, whatever the source wrote
    name = re.sub(r"[^\w-]", "", re.sub(r"\s+", "_", name.strip()))
    return re.sub(r"_+", "_", name).strip("_-")


def check_name(name: str, source: str) -> None:
    if not _PERSONA_NAME.fullmatch(name):
        hint = f" (e.g. {file_name(name)})" if file_name(name) else ""
        raise UserError(f"{source}: persona name '{name}' may hold {NAME_RULE}: it becomes a DVC stage name and "
                        f"a shell argument; rename it{hint} and list that name in corpus.personas")


def split_monologues(text: str) -> list[str]:
    """Monologues are separated by blank lines; line breaks inside one are spaces."""
    return [" ".join(block.split()) for block in _BLANK_LINES.split(text) if block.strip()]


def _from_txt(files: list[Path]) -> dict[str, list[str]]:
    monologues: dict[str, list[str]] = {}
    seen: dict[str, Path] = {}
    for path in files:
        name = path.stem
        check_name(name, str(path))
        key = name.casefold()
        if key in seen:
            raise UserError(f"{path}: persona '{name}' already comes from {seen[key].name} (names differ only in "
                            "case); merge the two files or rename one")
        seen[key] = path
        monologues[name] = split_monologues(read_utf8(path))
    return monologues


def _from_jsonl(path: Path) -> dict[str, list[str]]:
    monologues: dict[str, list[str]] = {}
    for number, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: line {number} is not JSON; write one "
                            '{"persona": ..., "text": ...} object per line') from None
        if not isinstance(row, dict) or not isinstance(row.get("persona"), str) or not isinstance(row.get("text"), str):
            raise UserError(f'{path}: line {number} needs string fields "persona" and "text"')
        name, text = row["persona"].strip(), " ".join(row["text"].split())
        if not name or not text:
            raise UserError(f'{path}: line {number} has an empty "persona" or "text"; fill it in or drop the line')
        check_name(name, f"{path}: line {number}")
        monologues.setdefault(name, []).append(text)
    if not monologues:
        raise UserError(f"{path}: no rows; add one {{\"persona\": ..., \"text\": ...}} object per line")
    folded: dict[str, str] = {}
    for name in monologues:
        if name.casefold() in folded:
            raise UserError(f"{path}: personas '{folded[name.casefold()]}' and '{name}' differ only in case; "
                            "spell each person's name one way")
        folded[name.casefold()] = name
    return monologues


def _profiles(path: Path, personas: set[str]) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        raw = YAML(typ="safe", pure=True).load(read_utf8(path))
    except YAMLError:
        raise UserError(f"{path}: not valid YAML; write one 'persona: description' line per person") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise UserError(f"{path}: must map each persona to a text description ('NAME: description')")
    unknown = sorted(str(k) for k in raw if str(k) not in personas)
    if unknown:
        raise UserError(f"{path}: {', '.join(unknown)} has no text in the corpus; "
                        f"use one of {', '.join(sorted(personas))}")
    return {str(k): " ".join(v.split()) for k, v in raw.items()}


def _votes(path: Path, personas: set[str]) -> tuple[list[Vote], list[Vote]]:
    """(recorded votes, rows recording no vote)."""
    if not path.exists():
        return [], []
    rows = list(csv.reader(read_utf8(path).splitlines()))
    if [c.strip() for c in rows[0]] != ["question", "persona", "vote"]:
        raise UserError(f"{path}: the header must be question,persona,vote (found {','.join(rows[0])})")
    votes, no_votes, seen = [], [], set()
    for number, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 3:
            raise UserError(f"{path}: line {number} has {len(row)} fields, not 3; quote a question that holds commas")
        question, persona, vote = (c.strip() for c in row)
        if not question:
            raise UserError(f"{path}: line {number} has an empty question; fill it in or drop the row")
        if persona not in personas:
            raise UserError(f"{path}: line {number}: persona '{persona}' has no text in the corpus; "
                            f"use one of {', '.join(sorted(personas))} or add {persona}.txt")
        if vote.casefold() not in SPELLINGS:
            raise UserError(f"{path}: line {number}: vote '{vote}' is not an accepted spelling; write {ACCEPTED}")
        if (question, persona) in seen:
            raise UserError(f"{path}: line {number}: {persona} already has a row on this question; keep one row")
        seen.add((question, persona))
        meaning = SPELLINGS[vote.casefold()]
        (votes if meaning in VOTES else no_votes).append(Vote(question, persona, meaning))
    return votes, no_votes


def load_corpus(directory: str | Path) -> Corpus:
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such corpus directory; set corpus.path in personas/params.yaml")
    txt, jsonl = sorted(directory.glob("*.txt")), sorted(directory.glob("*.jsonl"))
    if txt and jsonl:
        raise UserError(f"{directory}: holds both NAME.txt files and {jsonl[0].name}; keep one format")
    if len(jsonl) > 1:
        raise UserError(f"{directory}: holds {len(jsonl)} .jsonl files; put every row in one file")
    if not txt and not jsonl:
        raise UserError(f"{directory}: no NAME.txt or .jsonl file; add one text file per person")
    monologues = _from_jsonl(jsonl[0]) if jsonl else _from_txt(txt)
    names = set(monologues)
    votes, no_votes = _votes(directory / "votes.csv", names)
    return Corpus(monologues, _profiles(directory / "profiles.yaml", names), votes, no_votes)
