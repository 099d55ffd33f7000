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
arm measures what the person's own words carry.

The arms are ordinary arms of votes.score_all (retrieval_prompt is their Prompter): every answer
goes through the answer cache, keyed on the full prompt text (cache_keys.persona_key), passages
included, so a change of k, max_tokens or embedder that changes a passage or its cut changes
the key, and one that changes no prompt changes no answer. A content-free question of the
contextual calibration (votes.content_free) goes through the arm as a real question does: its
k passages are retrieved with the content-free text itself, so the calibration sees the arm's
own prompt format, passages included, with no question content.

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
from ..lm.tokens import encode_prefix, encode_suffixes
from .chunks import cut
from .votes import PREFIX, Prompter, vote_suffix_passages


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


def check_context(model: LoadedModel, suffixes: list[tuple[str, str]], persona: str) -> None:
    """Refuse, before any forward pass, a prompt longer than the model's context: past it a model
    does not fail, it reads positions it was never trained on."""
    limit = getattr(model.model.config, "max_position_embeddings", None)
    longest = len(encode_prefix(model.tokenizer, PREFIX)) + max(map(len, encode_suffixes(model.tokenizer, suffixes)))
    if limit is not None and longest > limit:
        raise UserError(f"votes.retrieval.max_tokens: {persona}'s longest vote prompt is {longest} tokens, past the "
                        f"model's context of {limit}; lower votes.retrieval.max_tokens")


def retrieval_prompt(retrieved: dict[str, dict[str, list[Passage]]], max_tokens: int, k: int) -> Prompter:
    """The Prompter of a retrieval arm for votes.score_all: `retrieved` is persona -> question text
    (real and content-free) -> its passages, most similar first. Each passage gets max_tokens // k
    tokens of the arm's own tokenizer, also when a person has fewer than k; a prompt past the
    model's context is refused before anything is scored."""
    def prompt(model: LoadedModel, persona: str, questions: list[str]) -> list[tuple[str, str]]:
        suffixes = retrieval_suffixes(model.tokenizer, persona, questions, [retrieved[persona][q] for q in questions],
                                      max_tokens // k)
        check_context(model, suffixes, persona)
        return suffixes

    return prompt
