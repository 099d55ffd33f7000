"""The merge stage: fold a LoRA adapter into its base SLM, giving a plain model directory.

The merged directory loads like any teacher or SLM (`load_causal_lm`): safetensors
weights, the tokenizer, and a model.json whose fingerprint is a hash of the
merged weights themselves, so the answer cache never mixes the tuned model's
answers with the base model's (or with another adapter's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from ..lm.load import load_causal_lm
from ..lm.source import MODEL_JSON, is_model_marker, write_model_marker
from .adapter import ADAPTER_CONFIG, adapter_is_marker, check_adapter


def weights_fingerprint(model_dir: Path) -> str:
    """sha256 over every safetensors file in full: a LoRA changes a few projection
    matrices anywhere in the file, which a sampled fingerprint could miss."""
    digest = hashlib.sha256()
    for file in sorted(model_dir.glob("*.safetensors")):
        digest.update(file.name.encode())
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32",
                  device: str = "auto", trust_remote_code: bool = False) -> dict:
    """Write base + adapter, merged (peft merge_and_unload), to `out_dir` atomically; return its model.json."""
    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if is_model_marker(base_dir) or adapter_is_marker(adapter_dir):
        return write_model_marker(out_dir, "no adapter was trained (slm.enabled is false or lora-train skipped)")
    check_adapter(adapter_dir)
    from peft import PeftModel

    base = load_causal_lm(base_dir, dtype, device, trust_remote_code)
    try:
        tuned = PeftModel.from_pretrained(base.model, adapter_dir, is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as err:  # e.g. an adapter trained on another model
        raise UserError(f"{adapter_dir}: does not fit the base SLM in {base_dir}: {str(err).splitlines()[0]}; "
                        "retrain the adapter (lora-train) on this slm.model") from None
    merged = tuned.merge_and_unload()
    adapter = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    with atomic_dir(out_dir) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        base.tokenizer.save_pretrained(staging)
        info = {"source": "merged", "path": ".", "base": base.fingerprint,
                "adapter": {k: sorted(v) if isinstance(v := adapter.get(k), list) else v  # not set order
                            for k in ("r", "lora_alpha", "target_modules")},
                "fingerprint": f"merged:sha256:{weights_fingerprint(staging)}"}
        write_json(info, staging / MODEL_JSON)
    return info
