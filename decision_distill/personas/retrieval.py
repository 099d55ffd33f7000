"""The retrieval arms of persona-votes: before each question, the model reads the k passages of
the person's own text most similar to it, then votes as in decision_distill.personas.votes.

Passages are every monologue of the person cut as the split stage cuts them (chunks.cut at
chunks.words): the held-out monologues too, since the votes are other data than the text
and nothing of the text is being predicted here. Each person's passages are embedded once per
run in batches (decision_distill.lm.embeddings, L2-normalised, so a dot product is the cosine
similarity), the questions once, and each question takes its k most similar passages (ties to
the earlier passage). The prompt is vote_suffix_passages: the member line, one line per
passage in rising similarity (the closest next to the question), the question, `Vote:`; the
readout is the " Aye"/" Nay" tokens of votes.OPTIONS, as for every other arm. No profile: the
arm measures what the person's own words carry. Nothing is cached between runs (the stage
reruns when a votes.* param changes), so no stored number can outlive the prompt or k.

Budget: the k passages share votes.retrieval.max_tokens tokens of the voting model's tokenizer;
each passage keeps the longest run of its leading whole words that is at most
max_tokens // k tokens. A prompt longer than the model's context is a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.errors import UserError
from ..lm.load import LoadedModel
from ..lm.scorer import TokenScorer
from .chunks import cut
from .votes import OPTIONS, PREFIX, Table, vote_suffix_passages


@dataclass(frozen=True)
class Passage:
    id: str  # PERSONA/MONOLOGUE/CHUNK, as chunks.Chunk.id
    text: str


def person_passages(persona: str, monologues: list[str], words: int) -> list[Passage]:
    """All of the person's monologues, in chunks of about `words` words (chunks.cut)."""
    return [Passage(f"{persona}/{m}/{c}", piece) for m, text in enumerate(monologues)
            for c, piece in enumerate(cut(text, words))]


def nearest(passage_vectors: np.ndarray, question_vectors: np.ndarray, k: int) -> np.ndarray:
    """[questions, min(k, passages)] passage indices, most similar first. Rows must be L2-normalised
    (cosine = dot product); a stable sort gives a tie to the earlier passage."""
    similarity = question_vectors @ passage_vectors.T
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def retrieve(passages: dict[str, list[Passage]], questions: list[str], k: int,
             embed: Callable[[list[str]], np.ndarray]) -> dict[str, list[list[Passage]]]:
    """persona -> per question (in order), its k passages most similar to the question, most
    similar first. `embed` runs once on the questions and once per person (each a batched call)."""
    question_vectors = embed(questions)
    out = {}
    for persona, own in passages.items():
        picks = nearest(embed([p.text for p in own]), question_vectors, k)
        out[persona] = [[own[j] for j in row] for row in picks]
    return out


def truncate(tokenizer, text: str, max_tokens: int) -> str:
    """The longest run of `text`'s leading whole words that the tokenizer makes at most
    `max_tokens` tokens (no special tokens); a binary search over the number of words."""
    def tokens(n: int) -> int:
        return len(tokenizer(" ".join(words[:n]), add_special_tokens=False).input_ids)

    words = text.split()
    if tokens(len(words)) <= max_tokens:
        return text
    fits, over = 0, len(words)  # tokens(fits) <= max_tokens < tokens(over)
    while over - fits > 1:
        mid = (fits + over) // 2
        fits, over = (mid, over) if tokens(mid) <= max_tokens else (fits, mid)
    return " ".join(words[:fits])


def retrieval_suffixes(tokenizer, persona: str, questions: list[str], picked: list[list[Passage]],
                       budget: int) -> list[tuple[str, str]]:
    """The vote prompts after PREFIX, one per question; each distinct passage is cut once."""
    cuts: dict[str, str] = {}
    for passage in {p.id: p for row in picked for p in row}.values():
        cuts[passage.id] = truncate(tokenizer, passage.text, budget)
    return [vote_suffix_passages(persona, None, q, [cuts[p.id] for p in reversed(row)])
            for q, row in zip(questions, picked)]


def check_context(scorer: TokenScorer, model: LoadedModel, suffixes: list[tuple[str, str]], persona: str) -> None:
    """Refuse, before any forward pass, a prompt longer than the model's context: past it a model
    does not fail, it reads positions it was never trained on."""
    limit = getattr(model.model.config, "max_position_embeddings", None)
    longest = len(scorer.encode_prefix(PREFIX)) + max(map(len, scorer.encode_suffixes(suffixes)))
    if limit is not None and longest > limit:
        raise UserError(f"votes.retrieval.max_tokens: {persona}'s longest vote prompt is {longest} tokens, past the "
                        f"model's context of {limit}; lower votes.retrieval.max_tokens")


def score_retrieval(table: Table, questions: list[str], retrieved: dict[str, list[list[Passage]]],
                    models: dict[str, Callable[[str], LoadedModel]], max_tokens: int, k: int,
                    batch_size: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(P(Aye), option mass) per arm and table row, as votes.score_all gives them; `models`: arm ->
    load(persona). Each passage gets max_tokens // k tokens, also when a person has fewer than k."""
    p_by, mass_by = {}, {}
    for name, load in models.items():
        p_by[name], mass_by[name] = np.zeros(len(table.truth)), np.zeros(len(table.truth))
        for persona in dict.fromkeys(table.persona.tolist()):
            rows = np.flatnonzero(table.persona == persona)
            model = load(persona)
            suffixes = retrieval_suffixes(model.tokenizer, persona, [questions[q] for q in table.question[rows]],
                                          [retrieved[persona][q] for q in table.question[rows]], max_tokens // k)
            scorer = TokenScorer(model, OPTIONS, batch_size)
            check_context(scorer, model, suffixes, persona)
            scores = scorer.score(PREFIX, suffixes)
            p_by[name][rows], mass_by[name][rows] = scores.probs[:, 0], scores.option_mass
    return p_by, mass_by
