"""A LoRA adapter on a causal LM, and its files.

`with_lora` is shared by lora-train (decision_distill.slm.lora) and the persona adapters
(decision_distill.personas.train); the adapter directory they write is peft's format
(adapter_config.json + adapter_model.safetensors), made path-independent, or a marker
when lora-train trained nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SKIPPED_JSON = "skipped.json"  # the marker adapter directory lora-train writes under slm.enabled: false


def with_lora(model, section, key: str, quantize: str = "none"):
    """`model` with a fresh peft LoRA adapter from `section` (rank, alpha, dropout,
    target_modules, seed: params' LoRA or PersonaLoRA), in training mode. `key` names
    the target_modules setting in the error for a layer name the model lacks (e.g.
    "lora.target_modules"); quantize "4bit" prepares an NF4 base for training (QLoRA)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantize == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(section.seed)  # the adapter's initial weights
    config = LoraConfig(r=section.rank, lora_alpha=section.alpha, lora_dropout=section.dropout,
                        target_modules=list(section.target_modules), task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"{key}: {str(err).splitlines()[0]}; name linear layers of slm.model "
                        "(e.g. q_proj, v_proj)") from None
    peft_model.train()
    return peft_model


def adapter_is_marker(adapter_dir: Path) -> bool:
    """lora-train writes a directory holding only a small JSON note instead of an adapter
    when it trained nothing (slm.enabled: false)."""
    return (adapter_dir / SKIPPED_JSON).exists() and not (adapter_dir / ADAPTER_CONFIG).exists()


def check_adapter(adapter_dir: Path) -> None:
    if not (adapter_dir / ADAPTER_CONFIG).exists():
        raise UserError(f"{adapter_dir}: no LoRA adapter ({ADAPTER_CONFIG} missing); run the lora-train stage first")
    if not (adapter_dir / ADAPTER_WEIGHTS).exists():
        raise UserError(f"{adapter_dir}: the adapter weights must be {ADAPTER_WEIGHTS} (safetensors); "
                        "retrain it with the lora-train stage")


def make_path_independent(adapter_dir: Path, base_fingerprint: str) -> None:
    """The same adapter from any checkout, byte for byte (dvc.lock must not change with the
    clone's folder): peft records the base model's absolute path, and target_modules in
    set order, which varies with PYTHONHASHSEED. The base is named by its fingerprint
    instead; load the adapter with PeftModel.from_pretrained(base_model, adapter_dir)."""
    config_path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_fingerprint
    for key in ("target_modules", "exclude_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    # peft's model card is a template that repeats the base path and says nothing else.
    (adapter_dir / "README.md").unlink(missing_ok=True)
