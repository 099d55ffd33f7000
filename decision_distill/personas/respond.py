"""persona-respond: each person's tuned model and two baselines answer the person's reviewed
questions, by seeded sampling, through the answer cache (a rerun, or a run after a kill,
generates nothing twice).

  tuned         the person's merged LoRA model; the prompt names the person, nothing more
  base+profile  the base SLM given the person's hand-written profile
  base+chunks   the base SLM given `respond.context_chunks` of the person's training chunks
                (never the chunk the question was drawn from)

An answer is the sampled text up to its first line break (one speaking turn); it is kept as
text for the judge, never parsed into a number.

With `chat` (the params key that turned it on: agents.chat_template) every prompt is asked
inside the model's chat template (lm.chat) and the answer is the reply's first line; the
keys hold the prompt as written here and the setting (cache_keys), so a rerun still loads
no model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..lm.answer_cache import AnswerCache, answer_key
from ..lm.batch_generate import generate_batch
from ..lm.chat import chat_prompts
from ..lm.load import LoadedModel
from ..lm.source import read_model_json
from .cache_keys import persona_key
from .chunks import Chunk, TRAIN

TUNED, BASE_PROFILE, BASE_CHUNKS = "tuned", "base+profile", "base+chunks"
INTRO = "Transcript of a public meeting.\n"


def prompts_for(persona: str, profile: str | None, question: dict, chunks: list[Chunk], context: int,
                seed: int) -> dict[str, str]:
    name = persona.replace("_", " ")
    ask = f"Question to {name}: {question['question']}\n{name}:"
    others = [c for c in chunks if c.split == TRAIN and c.id != question["chunk"]]
    rng = np.random.default_rng([seed, *question["id"].encode()])
    picked = [others[i] for i in sorted(rng.permutation(len(others))[:context])]
    said = "".join(f'Earlier, {name} said: "{c.text}"\n' for c in picked)
    described = f"{name}: {profile}\n" if profile else ""
    return {TUNED: INTRO + ask, BASE_PROFILE: INTRO + described + ask, BASE_CHUNKS: INTRO + said + ask}


def batch_seed(seed: int, model: str, prompts: list[str]) -> int:
    """One seed per (model, batch of prompts): a model answers all of a person's questions in
    one sampled batch, so an answer depends on the prompts sampled beside it (and the cache key
    holds them all)."""
    digest = answer_key(seed=seed, model=model, prompts=prompts)
    return int(digest[:8], 16) % 2**31


def sample_answers(loaded: LoadedModel, prompts: list[str], seed: int, max_new_tokens: int, temperature: float,
                   top_p: float) -> list[str]:
    """Seeded sampling of every prompt in one left-padded batch (lm.batch_generate: the 262k-entry
    output layer costs about the same for 9 rows as for 1), each answer up to its first line break."""
    texts = generate_batch(loaded, prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    return [t.strip().split("\n", 1)[0].strip() for t in texts]


def respond(reviewed: dict, profile: str | None, chunks: list[Chunk], models: dict[str, Path],
            load: Callable[[Path], LoadedModel], cache: AnswerCache, settings, dtype: str, device: str,
            chat: str | None = None) -> dict:
    """`models`: TUNED / BASE_PROFILE / BASE_CHUNKS -> a model directory; `load` is called only
    when an answer is missing from the cache. `chat`: the params key that asks for the models'
    chat template (None: completion prompts). Returns the answers file's content."""
    persona, decoding = reviewed["persona"], {"max_new_tokens": settings.max_new_tokens,
                                              "temperature": settings.temperature, "top_p": settings.top_p}
    by_id = {c.id: c for c in chunks}
    questions = reviewed["questions"]
    prompts = [prompts_for(persona, profile, q, chunks, settings.context_chunks, settings.seed) for q in questions]
    generated, seconds, texts = 0, 0.0, {}
    for name, directory in models.items():
        batch = [p[name] for p in prompts]
        seed = batch_seed(settings.seed, name, batch)
        fingerprint = read_model_json(directory)["fingerprint"]
        keys = [persona_key("persona-respond", fingerprint, dtype, device, prompt, chat_template=chat is not None,
                            batch=batch, seed=seed, decoding=decoding) for prompt in batch]
        found = cache.get_many(keys)
        if batch and len(found) < len(keys):
            loaded = load(directory)
            sent = chat_prompts(loaded.tokenizer, batch, chat)
            start = time.perf_counter()
            answers = sample_answers(loaded, sent, seed, **decoding)
            seconds += time.perf_counter() - start
            generated += len(answers)
            found = {k: {"text": a} for k, a in zip(keys, answers)}
            cache.put_many(found)  # the whole batch at once: a kill loses at most this model's batch
        texts[name] = [found[k]["text"] for k in keys]
    items = []
    for i, q in enumerate(questions):
        source = by_id.get(q["chunk"])
        items.append({**q, "chunk_text": source.text if source else None, "profile": profile,
                      "answers": {name: texts[name][i] for name in models}})
    return {"persona": persona, "items": items, "generated": generated, "generation_seconds": seconds,
            "answers_per_second": generated / seconds if seconds else None,
            "stale_reviews_left_out": reviewed["stale_reviews_left_out"], "not_reviewed": reviewed["not_reviewed"]}
