"""LoRA training checkpoints and the saved adapter, one format for lora-train and persona-train:
what a checkpoint is valid for (its fingerprint), writing and finding complete ones atomically,
and writing peft's adapter format at the end. Under FSDP every process calls the savers (they
gather shards).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterable

import torch

from ..core.atomic import atomic_dir, write_json
from .adapter import make_path_independent

CHECKPOINT_PREFIX = "step-"
KEEP_CHECKPOINTS = 2
SEED_STRIDE = 1_000_003  # step/epoch seeds are seed * SEED_STRIDE + n: a resumed step draws what it drew first


def fingerprint(settings: dict, data: Iterable[bytes]) -> str:
    """What a checkpoint is only valid for: `settings` (the LoRA section, the base model, the
    resolved precision it trains in, never "auto") and the training data, as bytes."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for chunk in data:
        digest.update(chunk)
    return digest.hexdigest()[:16]


def read_state(directory: Path) -> dict | None:
    try:
        state = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return None
    complete = all((directory / name).exists() for name in ("adapter.safetensors", "optimizer.pt"))
    return state if complete and isinstance(state, dict) else None


def usable_checkpoints(directory: Path, fp: str) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints made with fingerprint `fp`, oldest first."""
    found = []
    for path in directory.glob(f"{CHECKPOINT_PREFIX}*"):
        state = read_state(path)
        if state is not None and state.get("fingerprint") == fp:
            found.append((int(state["step"]), path))
    return sorted(found)


def clear_stale(directory: Path, fp: str) -> None:
    """Drop what a rerun must never resume from: half-written (hidden temporary) directories
    and checkpoints of other settings or data."""
    directory.mkdir(parents=True, exist_ok=True)
    keep = {path for _, path in usable_checkpoints(directory, fp)}
    for path in directory.iterdir():
        if path not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def prune(directory: Path, fp: str) -> None:
    for _, path in usable_checkpoints(directory, fp)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(path, ignore_errors=True)


def trainable_state(accelerator, module, optimizer) -> tuple[dict, dict]:
    """Full (unsharded) adapter weights and optimizer state, keyed by parameter name.
    Every process must call it: under FSDP it gathers the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights, optim = get_state_dict(module, optimizer, options=options)
    # A frozen weight tied to another (Gemma's LM head is its embedding) can slip through
    # ignore_frozen_params; keep the trainable (LoRA) tensors only.
    trainable = {clean_name(n) for n, p in accelerator.unwrap_model(module).named_parameters() if p.requires_grad}
    return {k: v for k, v in weights.items() if k in trainable}, optim


def clean_name(name: str) -> str:
    for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):
        name = name.replace(wrapper, "")
    return name.removeprefix("module.")


def save_checkpoint(directory: Path, accelerator, module, optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    weights, optim = trainable_state(accelerator, module, optimizer)
    if accelerator.is_main_process:
        with atomic_dir(directory / f"{CHECKPOINT_PREFIX}{state['step']:06d}") as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "adapter.safetensors")
            torch.save(optim, tmp / "optimizer.pt")
            write_json(state, tmp / "state.json")
        prune(directory, state["fingerprint"])
    accelerator.wait_for_everyone()


def load_checkpoint(path: Path, module, optimizer) -> dict:
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    weights = load_file(path / "adapter.safetensors")
    optim = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    # Each process reads the full state from the shared directory; FSDP shards it on load.
    set_state_dict(module, optimizer, model_state_dict=weights, optim_state_dict=optim,
                   options=StateDictOptions(full_state_dict=True, strict=False))
    return json.loads((path / "state.json").read_text())


def write_adapter(out_adapter: Path, accelerator, module, optimizer, summary: dict, summary_name: str,
                  base_fingerprint: str) -> None:
    """peft's adapter format (adapter_config.json + adapter_model.safetensors), atomically, with
    `summary` (what it was trained on and how far) beside it as `summary_name`. `module` holds
    the peft model as its `lm`."""
    weights, _ = trainable_state(accelerator, module, optimizer)
    if accelerator.is_main_process:
        peft_model = accelerator.unwrap_model(module).lm
        with atomic_dir(out_adapter) as tmp:
            peft_model.save_pretrained(tmp, state_dict={k.removeprefix("lm."): v for k, v in weights.items()},
                                       safe_serialization=True)
            make_path_independent(tmp, base_fingerprint)
            write_json(summary, tmp / summary_name)
    accelerator.wait_for_everyone()
