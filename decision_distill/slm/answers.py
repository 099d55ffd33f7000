"""The small causal LM student (SLM): the prompts it answers and the states they describe.

The teacher reads a prompt with worked examples; the SLM gets the plain short
prompt (the scenario's intro and the case, no examples) and is fine-tuned
(lora-train) to put the teacher's distribution on the same answer tokens. Its
answers are read by the teacher's own TokenScorer: one scorer, two models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .answer_cache import AnswerCache
from .errors import UserError
from .generate import Prompts, answer_keys, ask_into_cache, missing
from .model_source import read_teacher_json
from .params import Params
from .scenario import Scenario, State
from .teacher import load_causal_lm


def slm_prompts(scenario: Scenario, states: list[State]) -> Prompts:
    """Short prompts: shared prefix (intro) and per-state (head, tail) segments."""
    return Prompts(scenario.short_prefix(), [scenario.describe_parts(s) for s in states])


def states_from_frame(frame: pd.DataFrame, scenario: Scenario) -> list[State]:
    """The scenario states behind a decisions frame's rows (set features come back from
    Parquet as arrays); a clear error when the data was not drawn from this scenario."""
    states = []
    for f in scenario.features:
        if f.name not in frame.columns:
            raise UserError(f"scenario: the decisions have no '{f.name}' column that {scenario.name} describes; "
                            "set `scenario` to the file the data was generated from, or slm.enabled: false")
    for _, row in frame.iterrows():
        state = {}
        for f in scenario.features:
            value = row[f.name]
            if f.kind == "set":
                value = [str(v) for v in value]
                unknown = [v for v in value if v not in f.texts]
            elif f.kind == "choice":
                value, unknown = str(value), [] if str(value) in f.texts else [str(value)]
            else:
                value, unknown = float(value), []
            if unknown:
                raise UserError(f"scenario: value(s) {unknown} of '{f.name}' are not in {scenario.name}; "
                                "set `scenario` to the file the data was generated from, or slm.enabled: false")
            state[f.name] = value
        states.append(state)
    return states


def teacher_distribution(frame: pd.DataFrame, options: list[str]) -> np.ndarray:
    """The teacher's P(option | state), [N, K], from the p_<option> columns."""
    return frame[[f"p_{o}" for o in options]].to_numpy(dtype=np.float64)


def slm_answers(model_dir: str | Path, scenario: Scenario, states: list[State], params: Params,
                cache: AnswerCache, desc: str = "slm", load=load_causal_lm) -> np.ndarray:
    """The SLM's P(option | short prompt), [N, K], read like a token-readout teacher and kept
    in the answer cache under the model's fingerprint: asked once, and the model is loaded
    (by `load`, load_causal_lm's signature) only if some state is not cached yet."""
    slm = params.slm
    # Read through the teacher settings, but with the SLM's own precision: the key must name
    # how this model is loaded (slm.dtype, slm.quantize), never the teacher's settings.
    as_reader = params.model_copy(update={"teacher": params.teacher.model_copy(
        update={"readout": "tokens", "chat_template": False, "batch_size": slm.batch_size, "dtype": slm.dtype,
                "device": slm.device})})
    prompts = slm_prompts(scenario, states)
    keys = answer_keys(read_teacher_json(model_dir)["fingerprint"], prompts, scenario, as_reader,
                       quantize=slm.quantize)
    todo = missing(cache, keys)
    if todo:
        model = load(model_dir, slm.dtype, slm.device, slm.trust_remote_code, slm.quantize)
        ask_into_cache(model, scenario, as_reader, prompts, keys, todo, cache, desc=desc)
    answers = cache.get_many(keys)
    return np.array([answers[k]["probs"] for k in keys], dtype=np.float64)
