"""Next-token log-likelihood of a person's text: the loss a persona adapter trains on
and the quantity its perplexity reports, computed the same way for both."""

from __future__ import annotations

import torch

from ..lm.scorer import final_logits

LOGIT_ROWS = 128  # positions per vocabulary projection: a 262k vocabulary would otherwise dominate memory


def encode_chunk(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """The tokenizer's own special tokens (BOS) first, as the model saw text in pretraining."""
    ids = tokenizer(text, add_special_tokens=True).input_ids
    return ids[:max_tokens] if max_tokens else ids


def sequence_nll(causal_lm, ids: list[int], device) -> tuple[torch.Tensor, int]:
    """(sum of -log P(token t+1 | tokens <= t) over the sequence, number of predicted tokens).
    One sequence at a time: no padding, and a bounded logits tensor."""
    input_ids = torch.tensor([ids], device=device)
    hidden = causal_lm.get_decoder()(input_ids=input_ids).last_hidden_state[0, :-1]
    targets = input_ids[0, 1:]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), LOGIT_ROWS):
        logits = final_logits(causal_lm, hidden[start:start + LOGIT_ROWS]).float()
        total = total + torch.nn.functional.cross_entropy(logits, targets[start:start + LOGIT_ROWS], reduction="sum")
    return total, len(targets)
