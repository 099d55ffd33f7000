"""Load a causal LM (teacher, small LM, persona base or merged model) from a model directory.

Two readouts read its decisions: `TokenScorer` (decision_distill.lm.scorer) reads P(option |
prompt) from the answer tokens' probabilities (fast, exact); `VerbalizedReader`
(decision_distill.lm.verbalized) asks for a JSON answer and parses it strictly. See
decision_distill.lm.source for where weights come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import UserError
from .runtime import pick_device, resolve_dtype
from .scorer import TokenScorer
from .source import MODEL_JSON, read_model_json, refuse_pickle_weights

# ---- loading --------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, as load_causal_lm returns it."""

    model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    device: torch.device
    dtype: str = "float32"  # the resolved dtype the weights were loaded in (never "auto")
    _scorers: dict = field(default_factory=dict, repr=False, compare=False)

    def scorer(self, option_texts: list[str], batch_size: int) -> TokenScorer:
        """The token scorer for these options, kept with the model: a caller that asks a few
        states at a time (a simulation, tick by tick) then pays the scorer's one-off work
        (the LM-head probe, the prefix's key/value cache) once, not on every call."""
        key = (tuple(option_texts), batch_size)
        if key not in self._scorers:
            self._scorers[key] = TokenScorer(self, option_texts, batch_size)
        return self._scorers[key]


def load_causal_lm(model_dir: str | Path, dtype: str = "float32", device: str = "auto",
                   trust_remote_code: bool = False, quantize: str = "none") -> LoadedModel:
    """A model directory from the download stage (model.json inside) as a causal LM: the
    teacher, the SLM student, a persona's base and a merged model all load here.
    dtype: float32 | bfloat16 | float16 | auto (float32; runtime.resolve_dtype). quantize: "4bit" loads the
    weights as bitsandbytes NF4 on CUDA (QLoRA's base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = read_model_json(model_dir)
    weights = (Path(model_dir) / info["path"]).resolve()
    refuse_pickle_weights(weights, f"{model_dir} ({MODEL_JSON} path)")
    target = pick_device(device)
    dtype = resolve_dtype(dtype, device)
    quantized = {"quantization_config": _nf4_config(dtype), "device_map": {"": target}} if quantize == "4bit" else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            weights, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            use_safetensors=True, **quantized,
        )
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot load the model at {weights}: {str(err).splitlines()[0]}; "
                        "check the model key in params.yaml and rerun its download stage") from None
    if not quantized:  # a quantized model is placed by device_map and cannot be moved
        model.to(target)
    model.eval()
    return LoadedModel(model, tokenizer, info["fingerprint"], target, dtype)


def _nf4_config(dtype: str):
    """4-bit NF4 weights with compute in `dtype`; bitsandbytes is optional (CUDA only)."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("slm.quantize: 4bit needs the bitsandbytes package (`pip install bitsandbytes`, "
                        "CUDA only); install it or set slm.quantize: none") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=getattr(torch, dtype), bnb_4bit_use_double_quant=True)
