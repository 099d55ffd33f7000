"""The small causal LM student (SLM): the prompts it answers, its answers, and its model directories.

The teacher reads a prompt with worked examples; the SLM gets the plain short
prompt (the scenario's intro and the case, no examples) and is fine-tuned
(lora-train) to put the teacher's distribution on the same answer tokens. Its
answers are read by the teacher's own TokenScorer: one scorer, two models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.params import Params
from ..data.scenario import Scenario, State
from ..lm.answer_cache import AnswerCache
from ..lm.load import load_causal_lm
from ..lm.source import is_model_marker, read_model_json
from ..teacher.ask import Prompts, Readout, answer_keys, ask_into_cache, missing

SLM_BASE, SLM_TUNED = "slm_base", "slm_tuned"  # the small LM's rows in metrics and predictions


def slm_model_dirs(params: Params, base: str | Path, tuned: str | Path) -> dict[str, Path]:
    """The SLM rows to score, row name -> model directory: none with slm.enabled false, and
    a directory that is only a "not needed" marker (lm.source) is left out."""
    if not params.slm.enabled:
        return {}
    return {name: Path(d) for name, d in ((SLM_BASE, base), (SLM_TUNED, tuned)) if not is_model_marker(d)}


def slm_prompts(scenario: Scenario, states: list[State]) -> Prompts:
    """Short prompts: shared prefix (intro) and per-state (head, tail) segments."""
    return Prompts(scenario.short_prefix(), [scenario.describe_parts(s) for s in states])


def slm_answers(model_dir: str | Path, scenario: Scenario, states: list[State], params: Params,
                cache: AnswerCache, desc: str = "slm", load=load_causal_lm) -> np.ndarray:
    """The SLM's P(option | short prompt), [N, K], read like a token-readout teacher and kept
    in the answer cache under the model's fingerprint: asked once, and the model is loaded
    (by `load`, load_causal_lm's signature) only if some state is not cached yet."""
    # Read like the teacher, but the key names how this model is loaded (slm.dtype,
    # slm.quantize), never the teacher's settings.
    readout = Readout.slm(params)
    prompts = slm_prompts(scenario, states)
    keys = answer_keys(read_model_json(model_dir)["fingerprint"], prompts, scenario, readout)
    todo = missing(cache, keys)
    if todo:
        model = load(model_dir, readout.dtype, readout.device, readout.trust_remote_code, readout.quantize)
        ask_into_cache(model, scenario, readout, prompts, keys, todo, cache, desc=desc)
    answers = cache.get_many(keys)
    return np.array([answers[k]["probs"] for k in keys], dtype=np.float64)
