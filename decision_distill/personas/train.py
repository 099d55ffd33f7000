"""persona-train: one LoRA adapter per person, next-token loss on that person's training chunks.

Resumable like the decision LoRA (decision_distill.lora): every `checkpoint_every` steps a
checkpoint directory appears atomically (adapter weights, optimizer state, step and loss
history); a rerun resumes from the newest one whose fingerprint (settings, base model,
training text) matches and ends with the same adapter an uninterrupted run writes, since a
step's batch order and dropout noise are seeded from (seed, epoch) and (seed, step).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from ..lm.load import load_causal_lm
from ..lm.runtime import resolve_dtype
from ..lora.adapter import make_path_independent, with_lora
from ..lora.checkpoints import CHECKPOINT_PREFIX, KEEP_CHECKPOINTS, SEED_STRIDE, clear_stale, usable_checkpoints
from .chunks import Chunk, TRAIN
from .params import PersonaLoRA
from .text import encode_chunk, sequence_nll

STAGE = "persona-train"
SUMMARY_JSON = "persona_train.json"


def fingerprint(lora: PersonaLoRA, base_fingerprint: str, persona: str, sequences: list[list[int]],
                precision: str) -> str:
    """What a checkpoint is valid for; `precision` is how it trains (float32, bf16-autocast...),
    so a checkpoint never resumes in another precision."""
    digest = hashlib.sha256(json.dumps({"lora": lora.model_dump(), "base": base_fingerprint, "persona": persona,
                                        "precision": precision}, sort_keys=True).encode())
    for seq in sequences:
        digest.update(json.dumps(seq).encode())
    return digest.hexdigest()[:16]


def _save_checkpoint(directory: Path, peft_model, optimizer, state: dict) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    with atomic_dir(directory / f"{CHECKPOINT_PREFIX}{state['step']:06d}") as tmp:
        save_file(weights, tmp / "adapter.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json(state, tmp / "state.json")
    for _, old in usable_checkpoints(directory, state["fingerprint"])[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, peft_model, optimizer) -> dict:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(path / "adapter.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    return json.loads((path / "state.json").read_text())


def train_persona(chunks: list[Chunk], persona: str, lora: PersonaLoRA, slm_dir, out_adapter, checkpoints,
                  dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False,
                  after_step: Callable[[int], None] | None = None) -> dict:
    """Train `persona`'s adapter on its training chunks; write it (peft format) to out_adapter."""
    out_adapter, checkpoints = Path(out_adapter), Path(checkpoints)
    mine = [c for c in chunks if c.persona == persona and c.split == TRAIN]
    if not mine:
        raise UserError(f"{STAGE}: no training chunks for '{persona}' in the chunks file; check corpus.personas "
                        "in personas/params.yaml and rerun persona-split")
    # bfloat16 trains as float32 weights under bf16 autocast, as lora-train does: pure bf16
    # weights would round away most of a small learning rate's updates.
    autocast = resolve_dtype(dtype, device) == "bfloat16"
    slm = load_causal_lm(slm_dir, "float32" if autocast else dtype, device, trust_remote_code)
    sequences = [encode_chunk(slm.tokenizer, c.text, lora.max_tokens) for c in mine]
    fp = fingerprint(lora, slm.fingerprint, persona, sequences, "bf16-autocast" if autocast else slm.dtype)
    peft_model = with_lora(slm.model, lora, "personas/params.yaml: lora.target_modules")
    causal_lm = peft_model.get_base_model()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lora.lr)

    steps_per_epoch = math.ceil(len(sequences) / lora.batch_size)
    total_steps = min(lora.epochs * steps_per_epoch, lora.max_steps)
    clear_stale(checkpoints, fp)
    done = usable_checkpoints(checkpoints, fp)
    state = (_load_checkpoint(done[-1][1], peft_model, optimizer) if done else
             {"fingerprint": fp, "step": 0, "losses": []})
    if done:
        print(f"{STAGE}: {persona}: resuming from the checkpoint at step {state['step']} of {total_steps}", flush=True)
    for step in range(state["step"] + 1, total_steps + 1):
        epoch, index = divmod(step - 1, steps_per_epoch)
        order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(lora.seed * SEED_STRIDE + epoch))
        rows = order[index * lora.batch_size:(index + 1) * lora.batch_size].tolist()
        torch.manual_seed(lora.seed * SEED_STRIDE + step)  # this step's dropout noise
        nll, tokens = 0.0, sum(len(sequences[r]) - 1 for r in rows)
        for r in rows:  # one sequence at a time, gradients accumulated: the logits stay small
            with torch.autocast(slm.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = sequence_nll(causal_lm, sequences[r], slm.device)
            (loss / tokens).backward()
            nll += loss.item()
        if not math.isfinite(nll):
            raise UserError(f"{STAGE}: {persona}: loss became {nll} at step {step}; lower lora.lr in "
                            "personas/params.yaml; no adapter was written")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["losses"].append(nll / tokens)
        state["step"] = step
        print(f"{STAGE}: {persona}: step {step}/{total_steps} loss {nll / tokens:.4f}", flush=True)
        if step % lora.checkpoint_every == 0 or step == total_steps:
            _save_checkpoint(checkpoints, peft_model, optimizer, state)
        if after_step:
            after_step(step)
    summary = {"persona": persona, "train_words": sum(c.words for c in mine), "train_chunks": len(mine),
               "train_tokens": sum(map(len, sequences)), "steps": state["step"], "total_steps": total_steps,
               "first_loss": state["losses"][0] if state["losses"] else None,
               "final_loss": state["losses"][-1] if state["losses"] else None, "fingerprint": fp}
    peft_model.eval()
    with atomic_dir(out_adapter) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        make_path_independent(tmp, slm.fingerprint)
        write_json(summary, tmp / SUMMARY_JSON)
    return summary
