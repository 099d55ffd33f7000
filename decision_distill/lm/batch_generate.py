"""Continuations of whole prompts, several in one left-padded batch, by transformers' generate:
persona-respond's sampled answers and persona-extract's greedy summaries and questions.

Batching is what makes generation affordable on a CPU: each decoding step reads every weight
once for all rows, and the 262k-entry output layer costs about the same for 8 rows as for 1.
Padding is masked and the positions are counted from the attention mask (generate does both),
so a row's greedy continuation is the one it gets alone, up to float rounding: padding changes
the shapes the kernels sum over, which can move a logit by a rounding error and so break an
exact near-tie the other way (tests/test_persona_extract.py holds batch 1 and batch 4 to the
same text on the tiny model).
"""

from __future__ import annotations

import torch

from .tokens import encode_prompts, left_pad


@torch.inference_mode()
def generate_batch(loaded, prompts: list[str], max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                   seed: int = 0) -> list[str]:
    """The decoded continuation of each prompt (special tokens skipped), all in one batch:
    greedy at temperature 0, else sampled (top_p, no top-k) after torch.manual_seed(seed), so
    a sampled row depends on the rows beside it. A prompt that starts with the BOS token (a
    chat template writes it) gets no second one (tokens.encode_prompts)."""
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids, mask = left_pad(encode_prompts(tok, prompts), pad)
    if temperature == 0:
        decoding = {"do_sample": False}
    else:
        torch.manual_seed(seed)
        decoding = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    out = loaded.model.generate(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
                                max_new_tokens=max_new_tokens, pad_token_id=pad, **decoding)
    return tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
