"""The judge's test cases whose answers are known, built from the split's chunks alone.

Pairs: for each held-out chunk of a person X ("own"), the chunk of another member that is
most similar to it in meaning ("other": all-MiniLM-L6-v2 embeddings, cosine), so the two
passages share a topic and only who said them differs. Each pair is judged against a
reference of X: X's profile (if any) and one of X's training chunks, drawn with a seed per
pair. A training chunk comes from another monologue than the held-out chunk by
construction (the split holds out whole monologues), and it is drawn at random rather than
picked for similarity: a reference chosen close to the own chunk would hand the judge a
topic cue that the topic-matched other chunk lacks. (The judge, unlike the agents, never
trained on anything, so which side of the split the reference comes from is fair to it.)

Multiple choice: every held-out chunk, with the N members as options. An option is the
member's profile when every member has one (short: N of them fit one prompt), else one
seeded training chunk of the member, the same for every question (so a rotation's options
are one shared prompt head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .chunks import HELD_OUT, TRAIN, Chunk

Embed = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised rows


@dataclass(frozen=True)
class PairCase:
    persona: str  # X, whose words "own" are
    profile: str | None
    reference: Chunk  # a training chunk of X
    own: Chunk  # a held-out chunk of X
    other: Chunk  # another member's chunk, the most similar to `own`
    similarity: float  # cosine of own and other

    def as_item(self) -> dict:
        """The fields judge.person_block reads: the same person block as the verdicts on agents."""
        return {"persona": self.persona, "profile": self.profile, "chunk_text": self.reference.text}


@dataclass(frozen=True)
class ChoiceCase:
    chunk: Chunk  # a held-out chunk
    answer: int  # index of its speaker in the options


@dataclass(frozen=True)
class Choices:
    members: list[str]
    options: list[str]  # what the judge is shown of each member, in `members` order
    kind: str  # "profiles" | "reference chunks"
    cases: list[ChoiceCase]


def _draw(pool: list[Chunk], seed: int, key: str) -> Chunk:
    # Seeded by the case's own id: one person's draw never depends on anyone else's text.
    return pool[int(np.random.default_rng([seed, *key.encode()]).integers(len(pool)))]


def _by_person(chunks: list[Chunk], split: str) -> dict[str, list[Chunk]]:
    out: dict[str, list[Chunk]] = {}
    for c in chunks:
        if c.split == split:
            out.setdefault(c.persona, []).append(c)
    return out


def pair_cases(chunks: list[Chunk], profiles: dict[str, str | None], embed: Embed, seed: int) -> list[PairCase]:
    """One pair per held-out chunk; none with fewer than two people."""
    people = list(dict.fromkeys(c.persona for c in chunks))
    if len(people) < 2:
        return []
    held, train = _by_person(chunks, HELD_OUT), _by_person(chunks, TRAIN)
    own = [c for p in people for c in held.get(p, [])]
    vectors = embed([c.text for c in chunks])
    index = {c.id: i for i, c in enumerate(chunks)}
    persona = np.array([c.persona for c in chunks])
    cases = []
    for c in own:
        sims = vectors[index[c.id]] @ vectors.T
        sims = np.where(persona == c.persona, -np.inf, sims)
        best = int(np.argmax(sims))
        cases.append(PairCase(c.persona, profiles.get(c.persona), _draw(train[c.persona], seed, c.id), c,
                              chunks[best], float(sims[best])))
    return cases


def choice_cases(chunks: list[Chunk], profiles: dict[str, str | None], seed: int) -> Choices:
    members = list(dict.fromkeys(c.persona for c in chunks))
    if members and all(profiles.get(m) for m in members):
        options, kind = [profiles[m] for m in members], "profiles"
    else:
        train = _by_person(chunks, TRAIN)
        options, kind = [_draw(train[m], seed, m).text for m in members], "reference chunks"
    cases = [ChoiceCase(c, members.index(c.persona)) for c in chunks if c.split == HELD_OUT]
    return Choices(members, options, kind, cases)
