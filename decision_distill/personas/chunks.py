"""Monologues cut into chunks of about `words` words, and a seeded split that holds out
whole monologues per person: no held-out chunk shares a monologue with a training
chunk, so held-out perplexity never rewards memorising the training text.

The split stage writes one file per person (DIRECTORY/NAME.json), so a change to one
person's text reruns only that person's training; every stage reads them with load_chunks."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from .corpus import Corpus

TRAIN, HELD_OUT = "train", "held_out"


@dataclass(frozen=True)
class Chunk:
    persona: str
    monologue: int  # index of the monologue in the person's file (or JSONL rows)
    chunk: int  # index of the chunk inside the monologue
    split: str  # train | held_out
    words: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.persona}/{self.monologue}/{self.chunk}"

    def as_dict(self) -> dict:
        return {"id": self.id, **asdict(self)}


def cut(text: str, words: int) -> list[str]:
    """Near-equal pieces of about `words` words (a 450-word monologue gives 2 of 225, not
    200 + 200 + 50): a stub of a few words would be a poor sample of how someone talks."""
    tokens = text.split()
    pieces = max(1, round(len(tokens) / words))
    bounds = np.linspace(0, len(tokens), pieces + 1).round().astype(int)
    return [" ".join(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def held_out_monologues(lengths: list[int], fraction: float, rng: np.random.Generator) -> set[int]:
    """Whole monologues, in a seeded order, until they hold `fraction` of the words; at
    least one held out and at least one kept for training."""
    order = rng.permutation(len(lengths))
    target, chosen, total = fraction * sum(lengths), set(), 0
    for index in order[:-1]:
        if chosen and total >= target:
            break
        chosen.add(int(index))
        total += lengths[index]
    return chosen


def split_corpus(corpus: Corpus, words: int, held_out: float, seed: int, source: str = "corpus") -> list[Chunk]:
    chunks = []
    for number, persona in enumerate(corpus.personas):
        monologues = corpus.monologues[persona]
        if len(monologues) < 2:
            raise UserError(f"{source}: {persona} has {len(monologues)} monologue; at least 2 are needed (one to "
                            "train on, one held out); separate monologues with a blank line")
        # Each person's draw depends on the seed and their position only, not on other people's text.
        rng = np.random.default_rng([seed, number])
        held = held_out_monologues([len(m.split()) for m in monologues], held_out, rng)
        for m, text in enumerate(monologues):
            for c, piece in enumerate(cut(text, words)):
                chunks.append(Chunk(persona, m, c, HELD_OUT if m in held else TRAIN, len(piece.split()), piece))
    return chunks


def write_chunks(chunks: list[Chunk], profiles: dict[str, str], corpus: str, directory: str | Path) -> None:
    """DIRECTORY/NAME.json per person ({"persona", "corpus", "profile", "chunks"}), all of
    them or none: the directory is replaced as a whole, so a removed person leaves no file."""
    personas = sorted({c.persona for c in chunks})
    for name in personas:
        if "/" in name or "\\" in name or name.startswith("."):
            raise UserError(f"{corpus}: persona name '{name}' cannot be a file name (it holds a slash or starts "
                            "with a dot); rename the person")
    with atomic_dir(directory) as tmp:
        for name in personas:
            write_json({"persona": name, "corpus": corpus, "profile": profiles.get(name),
                        "chunks": [c.as_dict() for c in chunks if c.persona == name]}, tmp / f"{name}.json")


def _read_person(directory: Path, persona: str) -> dict:
    path = directory / f"{persona}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: missing or not JSON; check corpus.personas in personas/params.yaml and "
                        "run the persona-split stage") from None


def _listed(directory: Path, personas: list[str] | None) -> list[str]:
    if personas is not None:
        return list(personas)
    if not directory.is_dir():
        raise UserError(f"{directory}: no chunks directory; run the persona-split stage first")
    return sorted(p.stem for p in directory.glob("*.json"))


def load_chunks(directory: str | Path, personas: list[str] | None = None) -> list[Chunk]:
    """The chunks of `personas` (every person in the directory when None), person by person
    in the order given; reads only those people's files."""
    directory = Path(directory)
    return [Chunk(r["persona"], r["monologue"], r["chunk"], r["split"], r["words"], r["text"])
            for name in _listed(directory, personas) for r in _read_person(directory, name)["chunks"]]


def load_profiles(directory: str | Path, personas: list[str] | None = None) -> dict[str, str | None]:
    """Each person's hand-written description from the corpus's profiles.yaml (None if none)."""
    directory = Path(directory)
    return {name: _read_person(directory, name)["profile"] for name in _listed(directory, personas)}


def split_summary(chunks: list[Chunk]) -> dict:
    out: dict[str, dict] = {}
    for c in chunks:
        row = out.setdefault(c.persona, {"train_words": 0, "train_chunks": 0, "held_out_words": 0,
                                         "held_out_chunks": 0, "monologues": set()})
        row[f"{c.split}_words"] += c.words
        row[f"{c.split}_chunks"] += 1
        row["monologues"].add(c.monologue)
    for row in out.values():
        row["monologues"] = len(row["monologues"])
    return out


def mean_words(chunks: list[Chunk]) -> float:
    return math.fsum(c.words for c in chunks) / max(1, len(chunks))
