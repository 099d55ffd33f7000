"""What TokenScorer's fast path assumes, checked on the prompts and model at hand.

The fast path tokenizes a prompt piece by piece (to cache what prompts share) and
applies the LM head itself (on one position per prompt). Both are exact only under
assumptions that a tokenizer or a model can break; these checks catch that before
a wrong answer is read.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

import torch

from ..core.errors import UserError

# Largest difference in any token's probability (full vocabulary) between the fast
# head and the model's own logits that still counts as the same head: float32
# rounding is ~1e-7, a missed logit scale or cap is orders of magnitude more. Also in
# bfloat16: the probe runs the same kernels on the same shapes both ways, and
# bench/dtype_fidelity.py measured a gap of exactly 0 on the packaged Gemma in both dtypes.
HEAD_TOLERANCE = 1e-4

SEGMENT_NAMES = {2: ("the prefix", "the case text"), 3: ("the prefix", "the case head", "the case tail")}
# What to change so that a boundary falls between tokens, by the segment that starts there.
FIXES = {"the case tail": "put a space or newline before the last {feature} placeholder of prompt.case"}
START_FIX = "start prompt.case with a word of its own after the blank line that ends the worked examples"


def check_tokenization(scorer, prefix: str, suffixes: list[tuple[str, ...]], pieces: list[list[int]]) -> None:
    """Each segment is tokenized on its own, so that work prompts share can be cached.
    That is the prompt's own tokenization only if no token of the whole prompt spans a
    segment boundary (e.g. a word cut in two); refuse any prompt where it is not.
    `pieces`: the suffixes' tokens as the caller tokenized them piece by piece."""
    prefix_ids = scorer.encode_prefix(prefix)
    wholes = scorer.encode_prompts([prefix + "".join(suffix) for suffix in suffixes])
    for suffix, whole, piece in zip(suffixes, wholes, pieces):
        if whole != prefix_ids + piece:
            raise UserError(_boundary_error(scorer, [prefix, *suffix]))


def _boundary_error(scorer, segments: list[str]) -> str:
    """The first boundary at which the pieces stop tokenizing like the whole text."""
    k = next(k for k in range(1, len(segments))
             if scorer.encode_prefix("".join(segments[: k + 1]))
             != scorer.encode_prefix(segments[0]) + scorer.encode_suffix(tuple(segments[1 : k + 1])))
    names = SEGMENT_NAMES.get(len(segments)) or tuple(f"segment {j}" for j in range(len(segments)))
    left, right = "".join(segments[:k])[-20:], segments[k][:20]
    return (f"scenario prompt.case: a prompt tokenized piece by piece differs from the same text tokenized whole "
            f"at the boundary between {names[k - 1]} and {names[k]} ({left!r} | {right!r}): a token would span "
            f"it. Segments must end at a space or newline: {FIXES.get(names[k], START_FIX)}")


@torch.inference_mode()
def head_matches_model(model, prompt_ids: list[int], fast_head: Callable, warn: bool = True) -> bool:
    """Whether `fast_head(model, hidden)` (the LM head as the fast path applies it) gives
    the model's own next-token probabilities on one prompt. A head that does more than
    the fast path knows (a logit scale, another cap) would otherwise be read wrongly;
    on a mismatch the caller reads the model's own logits instead, with a warning."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    # logits_to_keep=1: the model's head on the last position only, as the fast path does it
    # (same shapes, so the same kernels: a low-precision model is not failed on rounding).
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    own = model(input_ids=ids, **keep).logits[:, -1].float().softmax(-1)
    fast = fast_head(model, model.get_decoder()(input_ids=ids).last_hidden_state[:, -1]).float().softmax(-1)
    gap = float((own - fast).abs().max())
    if gap > HEAD_TOLERANCE and warn:
        warnings.warn(f"TokenScorer: the fast readout's LM head differs from {type(model).__name__}'s own "
                      f"(max |difference| in P {gap:.2g} on a probe prompt); reading answers from the model's "
                      "own logits instead (correct, slower)", stacklevel=3)
    return gap <= HEAD_TOLERANCE


def require_fast_head(model, prompt_ids: list[int], fast_head: Callable, key: str) -> None:
    """LoRA training and the perplexity report apply the LM head themselves, on selected
    positions (training needs it differentiable, and the full vocabulary at every position
    would not fit): unlike the scorer they have no slower exact path, so a model whose
    head the fast path does not reproduce is refused rather than trained or measured wrongly."""
    if not head_matches_model(model, prompt_ids, fast_head, warn=False):
        raise UserError(f"{key}: {type(model).__name__}'s LM head does more than a projection with Gemma-style "
                        "soft-capping (e.g. a logit scale), which LoRA training and perplexity apply themselves; "
                        "use a model whose head they reproduce (Gemma, Llama, Qwen, Mistral) or slm.enabled: false")
