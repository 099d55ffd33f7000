"""persona-extract: which held-out chunks reveal a belief, a memory or a personality trait,
read from the teacher's answer-token probabilities, then a one-sentence summary and a
probing question for the strongest chunks, at most `cap` per person and category.

Questions come from held-out chunks so that the chunk a question was drawn from can be the
judge's reference for the person's answer: no answerer saw it (the tuned model trained on the
training chunks, base+chunks is shown training chunks), where a training chunk would be text
the tuned model learned and the baselines were denied.

The decision is P(" Yes") / (P(" Yes") + P(" No")) at the answer position (TokenScorer),
never whether generated text starts with "YES" (the research's filter did that, and its
cap of 25 per person did not hold: here the cap is applied before anything is generated
and checked again before anything is written).

The summaries and questions are generated `batch_size` prompts at a time (lm.batch_generate,
persona-respond's batched generation, greedy here), the prompts ordered by length so that a
batch pads little. Greedy text does not depend on the batch beyond float rounding, so a
line's key holds its own prompt, not its batch (as the root pipeline's greedy verbalized
answers are keyed).

With `chat` (the params key that turned it on: teacher.chat_template) every prompt is asked
inside the teacher's chat template (lm.chat): the decision is read from the reply's first
token ("Yes"/"No"), and the lines are the reply's first non-empty line.

Resumable: every P(yes) batch and every generated batch of lines goes to the answer cache as
soon as it is computed (keys: decision_distill.personas.cache_keys), so a killed run's rerun
scores and generates only what is missing and writes the same files.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import UserError
from ..lm.answer_cache import AnswerCache
from ..lm.batch_generate import generate_batch
from ..lm.chat import chat_prompts, chat_wrap, token_scorer
from ..lm.load import LoadedModel
from .cache_keys import persona_key
from .chunks import HELD_OUT, Chunk

OPTIONS = [" Yes", " No"]
PREFIX = ("You read passages from transcripts of school board meetings and say whether a passage "
          "reveals something about the speaker.\n\n"
          'Passage: "When I was a boy we walked two miles to the schoolhouse, rain or shine."\n'
          "Does this passage reveal a memory of the speaker? Answer: Yes\n\n"
          'Passage: "Item four is the approval of last month\'s minutes."\n'
          "Does this passage reveal a belief of the speaker? Answer: No\n\n")


def decision_suffix(chunk: Chunk, category: str) -> tuple[str, str]:
    """(passage, question): the passage is the head segment, shared by every category."""
    return f'Passage: "{chunk.text}"\n', f"Does this passage reveal a {category} of the speaker? Answer:"


BATCHES_PER_COMMIT = 4  # scorer batches per cache commit: a kill loses at most this much scoring


def p_yes(teacher: LoadedModel, chunks: list[Chunk], categories: list[str], cache: AnswerCache,
          batch_size: int = 8, chat: str | None = None) -> np.ndarray:
    """[len(chunks), len(categories)] P(Yes) normalised over the Yes/No tokens, through `cache`,
    keyed by the precision and device the teacher was loaded in."""
    suffixes = [decision_suffix(c, cat) for c in chunks for cat in categories]
    # The segment boundaries are part of the key: the scorer tokenizes each segment on its own.
    keys = [persona_key("persona-extract p_yes", teacher.fingerprint, teacher.dtype, teacher.device.type,
                        PREFIX + head + tail, chat_template=chat is not None, options=OPTIONS,
                        segments=[len(PREFIX), len(head)])
            for head, tail in suffixes]
    known = cache.get_many(keys)
    todo = [i for i, k in enumerate(keys) if k not in known]
    scorer = token_scorer(teacher, OPTIONS, batch_size, chat)
    step = batch_size * BATCHES_PER_COMMIT
    for start in range(0, len(todo), step):
        idx = todo[start:start + step]
        probs = scorer.score(PREFIX, [suffixes[i] for i in idx]).probs[:, 0]
        found = {keys[i]: {"p_yes": float(p)} for i, p in zip(idx, probs)}
        cache.put_many(found)
        known |= found
    return np.array([known[k]["p_yes"] for k in keys]).reshape(len(chunks), len(categories))


def select(chunks: list[Chunk], probs: np.ndarray, categories: list[str], threshold: float,
           cap: int) -> dict[tuple[str, str], list[tuple[Chunk, float]]]:
    """(persona, category) -> the chunks above `threshold`, highest P(yes) first, at most `cap`."""
    chosen: dict[tuple[str, str], list[tuple[Chunk, float]]] = {}
    for j, category in enumerate(categories):
        for i in np.argsort(-probs[:, j], kind="stable"):
            if probs[i, j] <= threshold:
                break
            kept = chosen.setdefault((chunks[i].persona, category), [])
            if len(kept) < cap:
                kept.append((chunks[i], float(probs[i, j])))
    return chosen


LINE_DECODING = "greedy, first non-empty line, special tokens skipped"


def first_line(text: str) -> str:
    """The text is kept for a person to review, never parsed: its first non-empty line."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def line_prompts(chunk: Chunk, category: str) -> tuple[str, str]:
    """(summary prompt, question prompt) for a chunk kept under `category`."""
    passage = f'Passage: "{chunk.text}"\n'
    return (passage + f"In one sentence, the {category} this passage reveals about the speaker:",
            passage + f"A question that asks the speaker about this {category}:")


def cached_lines(teacher: LoadedModel, prompts: list[str], max_new_tokens: int, cache: AnswerCache,
                 batch_size: int = 8, chat: str | None = None) -> list[str]:
    """The greedy first line after each prompt, through `cache`: the missing ones are generated
    `batch_size` at a time, shortest prompts first (a batch of similar lengths pads little),
    and each batch is stored as soon as it is generated."""
    keys = [persona_key("persona-extract line", teacher.fingerprint, teacher.dtype, teacher.device.type, prompt,
                        chat_template=chat is not None, max_new_tokens=max_new_tokens, decoding=LINE_DECODING)
            for prompt in prompts]
    known = cache.get_many(keys)
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # a prompt asked twice is generated once
    todo = sorted((i for k, i in first.items() if k not in known), key=lambda i: (len(prompts[i]), i))
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        sent = chat_prompts(teacher.tokenizer, [prompts[i] for i in idx], chat)
        texts = generate_batch(teacher, sent, max_new_tokens)
        found = {keys[i]: {"text": first_line(t)} for i, t in zip(idx, texts)}
        cache.put_many(found)
        known |= found
    return [known[k]["text"] for k in keys]


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))]


def extract(teacher: LoadedModel, chunks: list[Chunk], categories: list[str], threshold: float, cap: int,
            max_new_tokens: int, personas: list[str], cache: AnswerCache, batch_size: int = 8,
            chat: str | None = None) -> tuple[dict, list[dict], dict]:
    """(profiles, questions, metrics) from the held-out chunks, every model result through `cache`.
    `batch_size`: prompts per forward pass, scored and generated; `chat`: the params key that
    asks for the teacher's chat template (None: completion prompts)."""
    if chat is not None:
        chat_wrap(teacher.tokenizer, "", chat)  # a tokenizer without a template: the error before any work
    held = [c for c in chunks if c.split == HELD_OUT]
    probs = p_yes(teacher, held, categories, cache, batch_size, chat)
    chosen = select(held, probs, categories, threshold, cap)
    if any(len(v) > cap for v in chosen.values()):  # the cap is a promise: never write past it
        raise UserError(f"persona-extract: more than extract.cap={cap} items for a person and category")
    kept = [(persona, category, chunk, p) for (persona, category), items in sorted(chosen.items())
            for chunk, p in items]
    # Every summary and question prompt at once, so that they can be generated in batches.
    lines = cached_lines(teacher, [text for _, category, chunk, _ in kept for text in line_prompts(chunk, category)],
                         max_new_tokens, cache, batch_size, chat)
    profiles = {p: {c: [] for c in categories} for p in personas}
    questions = []
    for k, (persona, category, chunk, p) in enumerate(kept):
        summary, question = lines[2 * k], lines[2 * k + 1]
        profiles[persona][category].append({"chunk": chunk.id, "p_yes": p, "summary": summary})
        questions.append({"id": f"{chunk.id}/{category}", "persona": persona, "category": category,
                          "chunk": chunk.id, "p_yes": p, "summary": summary, "question": question})
    counts = {}
    for j, category in enumerate(categories):
        per = {}
        for persona in personas:
            rows = np.array([c.persona == persona for c in held])
            above = int((probs[rows, j] > threshold).sum())
            per[persona] = {"chunks": int(rows.sum()), "above_threshold": above,
                            "share_above": above / max(1, int(rows.sum())),
                            "share_above_ci95": wilson(above, int(rows.sum())),
                            "kept": len(chosen.get((persona, category), [])),
                            "mean_p_yes": float(probs[rows, j].mean()) if rows.any() else None}
        counts[category] = per
    return profiles, questions, {"threshold": threshold, "cap": cap, "categories": counts,
                                 "questions": len(questions)}
