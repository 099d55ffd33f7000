"""The generate stage: ask the teacher about every sampled state, through the cache.

Resumable by construction: answers are committed to the answer cache chunk by
chunk (BATCHES_PER_COMMIT batches), and the dataset is written (atomically)
only from the cache at the end. A killed run loses at most one chunk; the rerun
asks only what is missing, and the dataset can hold no lost or duplicated row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .answer_cache import AnswerCache, answer_key
from .atomic import write_json, write_parquet
from .errors import UserError
from .params import Params
from .model_source import read_teacher_json
from .scenario import Scenario, State
from .runtime import pick_device, resolve_dtype, software_versions
from .teacher import load_causal_lm
from .verbalized import GENERATION_VERSION, VerbalizedReader

MIN_USEFUL_P_STD = 0.05
BATCHES_PER_COMMIT = 16  # batches per cache commit: a kill loses at most this much work


@dataclass(frozen=True)
class Prompts:
    prefix: str  # shared by every state (intro + worked examples)
    suffixes: list[tuple[str, str]]  # per state (head, tail), ending where the answer begins

    def full(self, i: int) -> str:
        return self.prefix + "".join(self.suffixes[i])


def build_prompts(scenario: Scenario, states: list[State], params: Params, tokenizer=None) -> Prompts:
    """Completion-style prompts, or the tokenizer's chat template around them."""
    verbal = params.teacher.readout == "verbalized"
    prefix = scenario.verbalized_prefix() if verbal else scenario.token_prefix()
    cases = [scenario.describe_parts(s) for s in states]
    if not params.teacher.chat_template:
        return Prompts(prefix, cases)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError("teacher.chat_template: this tokenizer has no chat template; set it to false")
    marker = "\x00STATE\x00"
    wrapped = tokenizer.apply_chat_template(
        [{"role": "user", "content": prefix + marker}], add_generation_prompt=True, tokenize=False
    )
    head, tail = wrapped.split(marker)
    return Prompts(head, [(h, t + tail) for h, t in cases])


def option_texts(scenario: Scenario, params: Params, tokenizer) -> list[str]:
    """The options' texts as they follow build_prompts' prompt: the scenario's own texts
    (" Yes", completing "...:"), or, after a chat template's generation prompt, where the
    model begins its own reply, the text without its leading space ("Yes")."""
    texts = [o.text for o in scenario.options]
    if not params.teacher.chat_template:
        return texts
    for i, text in enumerate(texts):
        n = len(tokenizer(text.lstrip(), add_special_tokens=False).input_ids)
        if n != 1:
            raise UserError(f"teacher.chat_template: options[{i}].text {text!r} is read as the model's reply "
                            f"{text.lstrip()!r}, which is {n} tokens for this tokenizer; the token readout needs "
                            "one token per option: choose texts that are one token without their leading space, "
                            "or set teacher.chat_template: false")
    return [t.lstrip() for t in texts]


def answer_keys(fingerprint: str, prompts: Prompts, scenario: Scenario, params: Params,
                samples: list[dict] | None = None, quantize: str = "none") -> list[str]:
    """The answer cache's key for each prompt: everything that changes the numbers, so an
    answer is never served for another model, precision or library. `samples` (one dict per
    prompt, e.g. the repeat index and seed of a sampled answer) tells apart answers to the
    same prompt; `quantize` is how the model was loaded (load_causal_lm's quantize)."""
    t = params.teacher
    # The resolved dtype (never "auto"): answers computed in bfloat16 are not float32 answers.
    settings = {"readout": t.readout, "options": [o.text for o in scenario.options],
                "dtype": resolve_dtype(t.dtype, t.device),
                "quantize": quantize, "chat_template": t.chat_template, "software": software_versions()}
    if t.readout == "verbalized":
        settings |= {"max_new_tokens": t.max_new_tokens, "temperature": t.temperature,
                     "key": scenario.verbalized_key, "generation": GENERATION_VERSION}
    extra = [{}] * len(prompts.suffixes) if samples is None else [{"sample": s} for s in samples]
    # The segment boundaries are part of the key: each segment is tokenized on its own.
    return [answer_key(model=fingerprint, prompt=prompts.full(i), **settings, **extra[i],
                       segments=[len(prompts.prefix), len(prompts.suffixes[i][0])])
            for i in range(len(prompts.suffixes))]


def ask_teacher(teacher, scenario: Scenario, params: Params, prompts: Prompts, todo: list[int], progress):
    """Yield (indices, answers) chunk by chunk for the states in `todo`; `progress(n)`
    is called as each batch of n states is done."""
    t = params.teacher
    if t.readout == "tokens":
        scorer = teacher.scorer(option_texts(scenario, params, teacher.tokenizer), t.batch_size)
        # Large chunks let the scorer share heads and sort by length across many
        # states; each chunk is committed to the cache as a whole.
        chunk = t.batch_size * BATCHES_PER_COMMIT
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            scores = scorer.score(prompts.prefix, [prompts.suffixes[i] for i in idx], on_batch=progress)
            yield idx, [
                {"ok": True, "probs": scores.probs[j].tolist(), "option_mass": float(scores.option_mass[j]),
                 "logodds": float(scores.logodds[j])}
                for j in range(len(idx))
            ]
    else:
        reader = VerbalizedReader(teacher, scenario.verbalized_key, t.max_new_tokens, t.temperature, t.batch_size)
        for start in range(0, len(todo), t.batch_size):
            idx = todo[start : start + t.batch_size]
            parsed = reader.answer(prompts.prefix, [prompts.suffixes[i] for i in idx], seed=params.generate.seed)
            progress(len(idx))
            yield idx, [verbalized_answer(p) for p in parsed]


def missing(cache: AnswerCache, keys: list[str]) -> list[int]:
    """Indices of the keys the cache has no answer for."""
    known = cache.get_many(keys)
    return [i for i, k in enumerate(keys) if k not in known]


def ask_into_cache(teacher, scenario: Scenario, params: Params, prompts: Prompts, keys: list[str],
                   todo: list[int], cache: AnswerCache, desc: str = "teacher") -> None:
    """Ask the teacher about the prompts in `todo`, committing each chunk to the cache."""
    with tqdm(total=len(todo), desc=desc, unit="state") as bar:
        for idx, answers in ask_teacher(teacher, scenario, params, prompts, todo, bar.update):
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
    t = params.teacher
    if t.readout == "verbalized" and t.temperature > 0:
        # One dataset row per state, keyed without a seed: a sampled answer would depend on
        # which states happened to share a batch, so a resumed run would not be the same run.
        raise UserError(f"teacher.temperature: {t.temperature:g} would sample each state's verbalized answer "
                        "unseeded (a resumed run would differ); set it to 0, the stability stage measures "
                        "sampling with its own seeded repeats")
    fingerprint = read_teacher_json(teacher_dir)["fingerprint"]
    teacher = None
    if t.chat_template:  # the prompt text itself depends on the tokenizer
        teacher = load(teacher_dir, t.dtype, t.device, t.trust_remote_code)
    prompts = build_prompts(scenario, states, params, teacher.tokenizer if teacher else None)
    keys = answer_keys(fingerprint, prompts, scenario, params)
    todo = missing(cache, keys)
    if report:
        print(f"{scenario.name}: {len(states)} states, {len(states) - len(todo)} answered before "
              f"(cache {cache.path}), {len(todo)} to ask", flush=True)
    if todo:
        teacher = teacher or load(teacher_dir, t.dtype, t.device, t.trust_remote_code)
        ask_into_cache(teacher, scenario, params, prompts, keys, todo, cache, desc=desc)
    answers = cache.get_many(keys)
    return [answers[k] for k in keys]


def generate(params: Params, scenario: Scenario, teacher_dir: str | Path, out_dataset: str | Path,
             out_schema: str | Path, out_metrics: str | Path) -> dict:
    t = params.teacher
    if t.readout == "verbalized" and len(scenario.options) != 2:
        raise UserError("teacher.readout: verbalized needs a two-option scenario; use tokens")
    g = params.generate
    cache = AnswerCache(g.cache)
    reserved = None
    try:
        if g.strategy == "active":  # imported here: the default random run needs none of it
            from .active import active_states
            states, answers, reserved = active_states(
                scenario, g.states, g.seed, g.active,
                lambda some: teacher_answers(teacher_dir, scenario, some, params, cache))
        else:
            states = scenario.sample_states(g.states, g.seed)
            answers = teacher_answers(teacher_dir, scenario, states, params, cache)
    finally:
        cache.close()
    questions = [scenario.describe(s) for s in states]
    frame = decisions_frame(scenario, states, questions, answers, t.readout)
    if reserved is not None:  # the split stage puts exactly these random states in test
        frame["reserved_test"] = reserved
    # the runtime the answers were computed in (teacher.dtype and .device as resolved on this machine)
    metrics = teacher_metrics(frame, scenario, t.readout) | {"dtype": resolve_dtype(t.dtype, t.device),
                                                             "device": pick_device(t.device).type}
    write_parquet(frame, out_dataset)
    scenario.schema().save(out_schema)
    write_json(metrics, out_metrics)
    if metrics["p_std"] is not None and metrics["p_std"] < MIN_USEFUL_P_STD:
        print(f"warning: the teacher's P(action) barely varies across states (p_std={metrics['p_std']:.3f}); "
              "every student will look perfect. Improve the prompt or use a stronger teacher.", flush=True)
    return metrics


def decisions_frame(scenario: Scenario, states: list[State], questions: list[str], answers: list[dict],
                    readout: str) -> pd.DataFrame:
    """The dataset contract of decision_distill.schema, one row per state."""
    rows = []
    for state_id, (state, question, a) in enumerate(zip(states, questions, answers)):
        row = {"state_id": state_id, **state}
        probs = a["probs"] or [None] * len(scenario.options)
        row.update({f"p_{o.id}": p for o, p in zip(scenario.options, probs)})
        row.update(ok=a["ok"], option_mass=a["option_mass"], logodds=a["logodds"], question=question)
        if readout == "verbalized":
            row.update(explanation=a["explanation"], raw=a["raw"], error=a["error"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in [f"p_{o.id}" for o in scenario.options] + ["option_mass", "logodds"]:
        frame[col] = frame[col].astype("float64")
    return frame


def teacher_metrics(frame: pd.DataFrame, scenario: Scenario, readout: str) -> dict:
    ok = frame[frame["ok"]]
    p_action = ok[f"p_{scenario.options[0].id}"]
    return {
        "states": int(len(frame)),
        "readout": readout,
        "p_std": float(p_action.std(ddof=0)) if len(ok) else None,
        "p_mean": float(p_action.mean()) if len(ok) else None,
        "option_mass_mean": float(ok["option_mass"].mean()) if readout == "tokens" and len(ok) else None,
        "parse_failures": int((~frame["ok"]).sum()),
    }
