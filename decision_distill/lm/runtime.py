"""The runtime a machine resolves: what `auto` becomes here, and the library versions that
move numbers. The runtime stage writes it to data/runtime.json, and every stage that loads a
model depends on that file, so a machine that would compute differently (another device,
another precision, another torch) shows those stages as changed in `dvc status` after
`dvc repro runtime`, and `dvc repro` reruns them.

`auto` precision is float32 everywhere. bfloat16 answers are not a deterministic function of
the state: their rounding depends on which batch (which padded shape) a state was scored in,
and that noise, which no student can learn, doubled every student's measured error on the
default run (docs/results.md#precision). bfloat16 stays available by name.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import torch

from ..core.errors import UserError
from .scorer import SCORER_VERSION


def pick_device(device: str) -> torch.device:
    """`auto` is CUDA where a card is visible, else the CPU; `cuda` without a card is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("teacher.device: cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: str = "auto") -> str:
    """The dtype a model is actually loaded in: `dtype` itself, float32 for `auto`. Every
    answer-cache key and checkpoint fingerprint uses this, never "auto". `device` is checked
    (cuda without a card is an error) so that a resolution never succeeds where loading fails."""
    pick_device(device)
    return "float32" if dtype == "auto" else dtype


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
    """True where torch's CPU kernels (oneDNN) run bfloat16 on native instructions: reported
    beside benchmarks (bench/dtype_fidelity.py), never used to pick a precision."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the probe
        return False
    return onednn and bool(cpu_flags() & FAST_BF16_CPU_FLAGS)


@lru_cache(maxsize=None)
def software_versions() -> dict[str, object]:
    """The libraries and scorer code whose upgrade can move the answers' numbers.
    Device and batch size are left out of answer keys: they move token answers by ~1e-6
    (the stability stage's numerics check measures it), and keying them would split a
    shared cache."""
    return {"scorer": SCORER_VERSION, "torch": version("torch"), "transformers": version("transformers"),
            "tokenizers": version("tokenizers")}


def resolved_runtime(params) -> dict:
    """What this machine makes of params' `auto` settings, per model role, and the versions of
    the libraries that compute the numbers: the content of data/runtime.json."""
    roles = {}
    for role in ("teacher", "slm"):
        section = getattr(params, role)
        roles[role] = {"dtype": resolve_dtype(section.dtype, section.device),
                       "device": pick_device(section.device).type}
    return roles | {"software": software_versions()}
