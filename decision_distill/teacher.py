"""The teacher: load a causal LM and read its decisions.

Two readouts: `TokenScorer` (decision_distill.scorer) reads P(option | prompt) from
the answer tokens' probabilities (fast, exact); `VerbalizedReader` asks for a JSON answer and
parses it strictly. See decision_distill.model_source for where weights come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .model_source import read_teacher_json, refuse_pickle_weights
# The token readout lives in .scorer; TokenScorer stays importable from here, beside the loader.
from .scorer import TokenScorer, has_bos  # noqa: F401

# ---- loading --------------------------------------------------------------------

@dataclass
class LoadedTeacher:
    model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    device: torch.device
    dtype: str = "float32"  # the resolved dtype the weights were loaded in (never "auto")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("teacher.device: cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(device)


# /proc/cpuinfo flags of native bfloat16 matrix instructions (x86 AVX-512-BF16 / AMX, Arm BF16).
# oneDNN's own check also says yes on AVX-512 processors without them, where it emulates
# bfloat16 at float32 speed or worse, so both must agree.
FAST_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_flags() -> set[str]:
    """The processor's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
            for flag in line.split(":", 1)[1].split()}


def cpu_has_fast_bf16() -> bool:
    """True where torch's CPU kernels (oneDNN) run bfloat16 on native instructions."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the probe
        return False
    return onednn and bool(cpu_flags() & FAST_BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, device: str = "auto") -> str:
    """The dtype a model is actually loaded in: `dtype` itself, or for "auto" bfloat16 where
    `device` runs it fast (CUDA with bf16, a CPU with AVX-512-BF16/AMX/Arm BF16) and float32
    elsewhere. Every answer-cache key and checkpoint fingerprint uses this, never "auto"."""
    if dtype != "auto":
        return dtype
    target = pick_device(device)
    if target.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if target.type == "cpu" and cpu_has_fast_bf16() else "float32"


def load_teacher(model_dir: str | Path, dtype: str = "float32", device: str = "auto",
                 trust_remote_code: bool = False, quantize: str = "none") -> LoadedTeacher:
    """dtype: float32 | bfloat16 | float16 | auto (resolve_dtype). quantize: "4bit" loads the
    weights as bitsandbytes NF4 on CUDA (QLoRA's base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = read_teacher_json(model_dir)
    weights = (Path(model_dir) / info["path"]).resolve()
    refuse_pickle_weights(weights, f"{model_dir} (teacher.json path)")
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
    return LoadedTeacher(model, tokenizer, info["fingerprint"], target, dtype)


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


# ---- verbalized readout: ask for JSON, parse strictly --------------------------------

def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice: {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def parse_verbalized(text: str, key: str) -> dict:
    """Strictly read `{"<key>": p, "explanation": "..."}` from the first line of `text`.

    Anything else is a failure with the raw text kept, never a number: no
    regex salvage, no clipping of out-of-range values.
    """
    line = text.strip().split("\n", 1)[0].strip()
    failure = {"ok": False, "probability": None, "explanation": None, "raw": text}
    try:
        data = json.loads(line, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError:
        return {**failure, "error": "not valid JSON"}
    except ValueError as err:  # a key given twice: which value is the answer?
        return {**failure, "error": str(err)}
    if not isinstance(data, dict) or set(data) != {key, "explanation"}:
        return {**failure, "error": f"expected exactly the keys {key!r} and 'explanation'"}
    p, why = data[key], data["explanation"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not np.isfinite(p) or not 0 <= p <= 1:
        return {**failure, "error": f"{key!r} is not a probability in [0, 1]"}
    if not isinstance(why, str) or not why.strip():
        return {**failure, "error": "explanation is not a non-empty string"}
    return {"ok": True, "probability": float(p), "explanation": why.strip(), "raw": text, "error": None}


class VerbalizedReader:
    """Generates the teacher's JSON answer for each prompt (greedy at temperature 0)."""

    def __init__(self, teacher: LoadedTeacher, key: str, max_new_tokens: int, temperature: float,
                 batch_size: int = 8):
        self.model, self.tokenizer, self.device = teacher.model, teacher.tokenizer, teacher.device
        self.key, self.max_new_tokens, self.temperature = key, max_new_tokens, temperature
        self.batch_size = batch_size

    @torch.inference_mode()
    def answer(self, prompts: list[str], seed: int = 0) -> list[dict]:
        self.tokenizer.padding_side = "left"
        results = []
        for i in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(prompts[i : i + self.batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=not has_bos(self.tokenizer, prompts[i]))
            torch.manual_seed(seed + i)
            sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0} \
                if self.temperature > 0 else {"do_sample": False, "top_k": None, "top_p": None}
            out = self.model.generate(
                **batch.to(self.device), max_new_tokens=self.max_new_tokens,
                stop_strings=["\n"], tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id, **sampling,
            )
            new = out[:, batch["input_ids"].shape[1]:]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            results += [parse_verbalized(t, self.key) for t in texts]
        return results

