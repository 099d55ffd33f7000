"""How a language model is asked about scenario states, through the answer cache.

`Readout` is how one model is asked and read: the teacher with params' teacher section
(`Readout.teacher`), the small LM student with its own precision and batch size
(`Readout.slm`), a stability run with another readout (`.with_(readout=...)`). From it come
the prompts (`build_prompts`), the option texts the token readout reads, and the answer
cache's key of every prompt (`answer_keys`): everything that changes an answer's numbers,
so no answer is ever served for another model, precision or library.

Asking is resumable: answers are committed to the cache chunk by chunk
(BATCHES_PER_COMMIT batches), so a killed run loses at most one chunk and the rerun
asks only what is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.errors import UserError
from ..core.params import Params
from ..data.scenario import Scenario, State
from ..lm.answer_cache import AnswerCache, answer_key
from ..lm.chat import chat_wrap, reply_options
from ..lm.load import load_causal_lm
from ..lm.runtime import resolve_dtype, software_versions
from ..lm.source import read_model_json
from ..lm.verbalized import GENERATION_VERSION, VerbalizedReader


@dataclass(frozen=True)
class Readout:
    """How one model is asked and read: the settings that shape its prompts and answers
    (and so its answer-cache keys), and how it is loaded."""

    readout: str  # "tokens" | "verbalized"
    chat_template: bool
    batch_size: int
    dtype: str  # as params give it ("auto" included); keys hold what it resolves to
    device: str
    quantize: str  # how the weights are loaded: "none" | "4bit"
    trust_remote_code: bool
    max_new_tokens: int  # verbalized only
    temperature: float  # verbalized only
    seed: int  # the torch seed of sampled verbalized answers

    @classmethod
    def teacher(cls, params: Params) -> "Readout":
        """The teacher as params' teacher section asks it."""
        t = params.teacher
        # The decoding settings are read only for a verbalized readout: a stage that reads token
        # answers neither uses nor declares them (tests/test_params_declared.py).
        decoding = (dict(max_new_tokens=t.max_new_tokens, temperature=t.temperature, seed=params.generate.seed)
                    if t.readout == "verbalized" else TOKENS_ONLY)
        return cls(readout=t.readout, chat_template=t.chat_template, batch_size=t.batch_size, dtype=t.dtype,
                   device=t.device, quantize="none", trust_remote_code=t.trust_remote_code, **decoding)

    @classmethod
    def slm(cls, params: Params) -> "Readout":
        """The small LM student: read like a token-readout teacher on the plain prompt, in its
        own precision and batch size (slm.dtype, .device, .quantize, .batch_size), never the
        teacher's."""
        s = params.slm
        return cls(readout="tokens", chat_template=False, batch_size=s.batch_size, dtype=s.dtype, device=s.device,
                   quantize=s.quantize, trust_remote_code=s.trust_remote_code, **TOKENS_ONLY)

    def with_(self, **changes) -> "Readout":
        return dataclasses.replace(self, **changes)


# A token readout decodes nothing: its Readout carries no decoding settings.
TOKENS_ONLY = {"max_new_tokens": 0, "temperature": 0.0, "seed": 0}

BATCHES_PER_COMMIT = 16  # batches per cache commit: a kill loses at most this much work


@dataclass(frozen=True)
class Prompts:
    prefix: str  # shared by every state (intro + worked examples)
    suffixes: list[tuple[str, str]]  # per state (head, tail), ending where the answer begins

    def full(self, i: int) -> str:
        return self.prefix + "".join(self.suffixes[i])


def build_prompts(scenario: Scenario, states: list[State], readout: Readout, tokenizer=None) -> Prompts:
    """Completion-style prompts, or the tokenizer's chat template around them."""
    verbal = readout.readout == "verbalized"
    prefix = scenario.verbalized_prefix() if verbal else scenario.token_prefix()
    cases = [scenario.describe_parts(s) for s in states]
    if not readout.chat_template:
        return Prompts(prefix, cases)
    head, tail = chat_wrap(tokenizer, prefix, "teacher.chat_template")
    return Prompts(head, [(h, t + tail) for h, t in cases])


def option_texts(scenario: Scenario, readout: Readout, tokenizer) -> list[str]:
    """The options' texts as they follow build_prompts' prompt: the scenario's own texts
    (" Yes", completing "...:"), or, after a chat template's generation prompt, where the
    model begins its own reply, the text without its leading space ("Yes")."""
    texts = [o.text for o in scenario.options]
    if not readout.chat_template:
        return texts
    return reply_options(tokenizer, texts, "teacher.chat_template", [f"options[{i}].text" for i in range(len(texts))],
                         "choose texts that are one token without their leading space")


def answer_keys(fingerprint: str, prompts: Prompts, scenario: Scenario, readout: Readout,
                samples: list[dict] | None = None) -> list[str]:
    """The answer cache's key for each prompt: everything that changes the numbers, so an
    answer is never served for another model, precision or library. `samples` (one dict per
    prompt, e.g. the repeat index and seed of a sampled answer) tells apart answers to the
    same prompt."""
    # The resolved dtype (never "auto"): answers computed in bfloat16 are not float32 answers.
    settings = {"readout": readout.readout, "options": [o.text for o in scenario.options],
                "dtype": resolve_dtype(readout.dtype, readout.device),
                "quantize": readout.quantize, "chat_template": readout.chat_template, "software": software_versions()}
    if readout.readout == "verbalized":
        settings |= {"max_new_tokens": readout.max_new_tokens, "temperature": readout.temperature,
                     "key": scenario.verbalized_key, "generation": GENERATION_VERSION}
    extra = [{}] * len(prompts.suffixes) if samples is None else [{"sample": s} for s in samples]
    # The segment boundaries are part of the key: each segment is tokenized on its own.
    return [answer_key(model=fingerprint, prompt=prompts.full(i), **settings, **extra[i],
                       segments=[len(prompts.prefix), len(prompts.suffixes[i][0])])
            for i in range(len(prompts.suffixes))]


def ask_model(model, scenario: Scenario, readout: Readout, prompts: Prompts, todo: list[int], progress):
    """Yield (indices, answers) chunk by chunk for the states in `todo`, asking `model` (a
    LoadedModel) as `readout` says; `progress(n)` is called as each batch of n states is done."""
    if readout.readout == "tokens":
        scorer = model.scorer(option_texts(scenario, readout, model.tokenizer), readout.batch_size)
        # Large chunks let the scorer share heads and sort by length across many
        # states; each chunk is committed to the cache as a whole.
        chunk = readout.batch_size * BATCHES_PER_COMMIT
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            scores = scorer.score(prompts.prefix, [prompts.suffixes[i] for i in idx], on_batch=progress)
            yield idx, [
                {"ok": True, "probs": scores.probs[j].tolist(), "option_mass": float(scores.option_mass[j]),
                 "logodds": float(scores.logodds[j])}
                for j in range(len(idx))
            ]
    else:
        reader = VerbalizedReader(model, scenario.verbalized_key, readout.max_new_tokens, readout.temperature,
                                  readout.batch_size)
        for start in range(0, len(todo), readout.batch_size):
            idx = todo[start : start + readout.batch_size]
            parsed = reader.answer(prompts.prefix, [prompts.suffixes[i] for i in idx], seed=readout.seed)
            progress(len(idx))
            yield idx, [verbalized_answer(p) for p in parsed]


def missing(cache: AnswerCache, keys: list[str]) -> list[int]:
    """Indices of the keys the cache has no answer for."""
    known = cache.get_many(keys)
    return [i for i, k in enumerate(keys) if k not in known]


def ask_into_cache(model, scenario: Scenario, readout: Readout, prompts: Prompts, keys: list[str],
                   todo: list[int], cache: AnswerCache, desc: str = "teacher") -> None:
    """Ask `model` about the prompts in `todo`, committing each chunk to the cache."""
    with tqdm(total=len(todo), desc=desc, unit="state") as bar:
        for idx, answers in ask_model(model, scenario, readout, prompts, todo, bar.update):
            cache.put_many({keys[i]: a for i, a in zip(idx, answers)})


def verbalized_answer(parsed: dict) -> dict:
    p = parsed["probability"]
    return {"ok": parsed["ok"], "probs": None if p is None else [p, 1.0 - p], "option_mass": None,
            "logodds": None if p is None or p in (0.0, 1.0) else float(np.log(p / (1 - p))),
            "explanation": parsed["explanation"], "raw": parsed["raw"], "error": parsed["error"]}


def teacher_answers(teacher_dir: str | Path, scenario: Scenario, states: list[State], params: Params,
                    cache: AnswerCache, desc: str = "teacher", load=load_causal_lm, report: bool = True) -> list[dict]:
    """The teacher's answer to each state (a cache record: ok, probs, ...), asked through
    `cache`: the teacher is loaded (by `load`, load_causal_lm's signature) only when some state
    is not answered yet. A caller that asks again and again (a simulation, tick by tick)
    passes a `load` that keeps the model, and report=False to skip the per-call summary."""
    t = Readout.teacher(params)
    if t.readout == "verbalized" and t.temperature > 0:
        # One dataset row per state, keyed without a seed: a sampled answer would depend on
        # which states happened to share a batch, so a resumed run would not be the same run.
        raise UserError(f"teacher.temperature: {t.temperature:g} would sample each state's verbalized answer "
                        "unseeded (a resumed run would differ); set it to 0, the stability stage measures "
                        "sampling with its own seeded repeats")
    fingerprint = read_model_json(teacher_dir)["fingerprint"]
    teacher = None
    if t.chat_template:  # the prompt text itself depends on the tokenizer
        teacher = load(teacher_dir, t.dtype, t.device, t.trust_remote_code)
    prompts = build_prompts(scenario, states, t, teacher.tokenizer if teacher else None)
    keys = answer_keys(fingerprint, prompts, scenario, t)
    todo = missing(cache, keys)
    if report:
        print(f"{scenario.name}: {len(states)} states, {len(states) - len(todo)} answered before "
              f"(cache {cache.path}), {len(todo)} to ask", flush=True)
    if todo:
        teacher = teacher or load(teacher_dir, t.dtype, t.device, t.trust_remote_code)
        ask_into_cache(teacher, scenario, t, prompts, keys, todo, cache, desc=desc)
    answers = cache.get_many(keys)
    return [answers[k] for k in keys]
