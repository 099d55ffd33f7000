"""Distillation losses on logits against the teacher's distribution (soft labels), shared by
the students' training loop and the small LM's LoRA training (decision_distill.slm.lora)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def probability_mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(F.softmax(logits, dim=-1), target)


def kl_divergence(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) in nats; 0 log 0 counts as 0."""
    return (torch.special.xlogy(target, target).sum(dim=-1)).mean() + soft_cross_entropy(logits, target)


LOSSES = {"soft_ce": soft_cross_entropy, "mse": probability_mse}
