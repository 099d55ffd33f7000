"""persona-train: one LoRA adapter per person, next-token loss on that person's training chunks.

This module prepares the data (the person's chunks, tokenized and cut at lora.max_tokens)
and the loss; the training loop, its precision, and its resumable checkpoints are the LoRA
trainer's (decision_distill.lora.trainer), shared with lora-train: a killed run resumes
from its newest checkpoint and ends with the adapter an uninterrupted run writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..core.errors import UserError
from ..lm.load import load_causal_lm
from ..lora.adapter import with_lora
from ..lora.checkpoints import fingerprint, write_adapter
from ..lora.trainer import LoraTrainer, check_hardware, make_accelerator, precision
from .chunks import Chunk, TRAIN
from .params import PersonaLoRA
from .text import encode_chunk, sequence_nll

STAGE = "persona-train"
SUMMARY_JSON = "persona_train.json"
KEY = "lora.{} in personas/params.yaml"  # a setting's name in error messages


class NextTokenLoss(torch.nn.Module):
    """The LoRA-wrapped LM whose forward is one sequence's summed next-token loss: one module,
    so the trainer's precision (autocast) covers the whole forward."""

    def __init__(self, peft_model):
        super().__init__()
        self.lm = peft_model

    def forward(self, ids: list[int]) -> torch.Tensor:
        causal_lm = self.lm.get_base_model()  # LoRA layers live inside it
        return sequence_nll(causal_lm, ids, causal_lm.device)[0]


def train_persona(chunks: list[Chunk], persona: str, lora: PersonaLoRA, slm_dir, out_adapter, checkpoints,
                  dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False,
                  after_step: Callable[[int], None] | None = None) -> dict:
    """Train `persona`'s adapter on its training chunks; write it (peft format) to out_adapter."""
    out_adapter, checkpoints = Path(out_adapter), Path(checkpoints)
    mine = [c for c in chunks if c.persona == persona and c.split == TRAIN]
    if not mine:
        raise UserError(f"{STAGE}: no training chunks for '{persona}' in the chunks file; check corpus.personas "
                        "in personas/params.yaml and rerun persona-split")
    check_hardware(STAGE, device)
    how = precision(dtype, device)
    accelerator = make_accelerator(device, how, lora.batch_size, KEY)
    slm = load_causal_lm(slm_dir, how.base_dtype, "cpu", trust_remote_code)
    sequences = [encode_chunk(slm.tokenizer, c.text, lora.max_tokens) for c in mine]
    # "dtype", not the "precision" key of the fingerprints before the shared trainer (issue 24):
    # their checkpoints were in another format and must never match.
    fp = fingerprint({"lora": lora.model_dump(), "dtype": how.label, "base": slm.fingerprint, "persona": persona},
                     (json.dumps(seq).encode() for seq in sequences))

    def loss(module, rows: list[int], backward) -> torch.Tensor:
        nll, tokens = 0.0, sum(len(sequences[r]) - 1 for r in rows)
        for r in rows:  # one sequence at a time, gradients accumulated: the logits stay small
            total = module(sequences[r])
            backward(total / tokens)
            nll += total.item()
        return torch.tensor(nll / tokens, dtype=torch.float64)

    module = NextTokenLoss(with_lora(slm.model, lora, "personas/params.yaml: lora.target_modules"))
    trainer = LoraTrainer(lora, accelerator, module, len(sequences), loss, fp, f"{STAGE}: {persona}", KEY,
                          partial_batches=True)
    losses = trainer.run(checkpoints, after_step=after_step)["train_loss"]
    summary = {"persona": persona, "train_words": sum(c.words for c in mine), "train_chunks": len(mine),
               "train_tokens": sum(map(len, sequences)), "steps": len(losses), "total_steps": trainer.total_steps,
               "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
               "fingerprint": fp}
    write_adapter(out_adapter, accelerator, trainer.module, trainer.optimizer, summary, SUMMARY_JSON, slm.fingerprint)
    return summary
