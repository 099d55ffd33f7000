"""The token readout: P(option | prompt) from the answer tokens' probabilities.

`TokenScorer` shares the work that prompts have in common (a prefix's and a
case head's key/value caches) and runs the LM head on the answer position only.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..core.errors import UserError
from .scorer_checks import check_tokenization, head_matches_model
from .tokens import Encodes, Suffix, encode_prefix, encode_segments, join_segments, right_pad


class CausalLM(Protocol):
    """What the readouts need of a loaded model (decision_distill.lm.load.LoadedModel is one):
    typed here so that the readouts import nothing of the loader."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: str

# Part of every answer-cache key (lm.runtime.software_versions): bump it with any change to
# how answers are read (tokenization, sharing, readout, option texts) that can move their
# numbers, so answers read the old way are never served.
SCORER_VERSION = 2


@dataclass
class Scores:
    probs: np.ndarray  # [N, K] normalised over the options
    option_mass: np.ndarray  # [N] raw probability mass on the option tokens
    logodds: np.ndarray  # [N] log(p_first / (1 - p_first)) on the normalised distribution


def option_token_ids(tokenizer, option_texts: list[str]) -> list[int]:
    """Each option must be one token, so one forward pass reads every option."""
    ids = []
    for i, text in enumerate(option_texts):
        toks = tokenizer(text, add_special_tokens=False).input_ids
        if len(toks) != 1:
            raise UserError(
                f"scenario options[{i}].text {text!r} is {len(toks)} tokens for this tokenizer; "
                "the token readout needs single-token options (e.g. ' Yes', ' A')"
            )
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise UserError("scenario options: two options map to the same token; make their texts distinct")
    return ids


def scores_from_logits(last_logits: torch.Tensor, option_ids: list[int]) -> Scores:
    return _scores_from_option_logp(torch.log_softmax(last_logits.float(), dim=-1)[:, option_ids])


def option_log_probs(model, hidden: torch.Tensor, option_ids: list[int]) -> torch.Tensor:
    """log P(option token | prompt) over the full vocabulary, [B, K], from the hidden
    states at the answer position ([B, hidden]). The one readout shared by the scorer
    and by LoRA training, so it stays differentiable (no inference_mode here)."""
    return torch.log_softmax(final_logits(model, hidden).float(), dim=-1)[:, option_ids]


def _scores_from_option_logp(option_logp: torch.Tensor) -> Scores:
    logp = option_logp.double()  # [B, K]
    mass = logp.exp().sum(-1)
    probs = torch.softmax(logp, dim=-1)
    logodds = logp[:, 0] - torch.logsumexp(logp[:, 1:], dim=-1)
    return Scores(probs.cpu().numpy().astype(np.float64), mass.cpu().numpy().astype(np.float64),
                  logodds.cpu().numpy().astype(np.float64))


def _concat(parts: list[Scores]) -> Scores:
    return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("probs", "option_mass", "logodds")))


def final_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on selected hidden states only: the 262k-entry vocabulary
    projection is the costliest layer, so it runs on one position per prompt."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# Below this many states per distinct head, a head's own forward pass costs more than sharing it saves.
MIN_STATES_PER_HEAD = 4


class TokenScorer(Encodes):
    """Reads P(option | prefix + suffix) from the answer tokens' probabilities.

    Work that states share is done once: the prefix (intro and worked examples)
    is run through the model once, and a suffix's first segment (its "head",
    e.g. everything before the last feature's value) once per distinct head;
    their key/value caches are reused for every state. Each batch then costs
    only its own remaining tokens, and the vocabulary projection runs on the
    last real token only. Batches are right-padded, so under causal attention
    no real token ever attends to padding.

    A suffix is a tuple of text segments, tokenized one by one and concatenated:
    the token sequence is the same whichever way the work is shared. The fast path
    checks itself: every prompt's pieces must tokenize as the whole prompt does,
    the re-implemented LM head must match the model's own on a probe prompt (else
    the model's logits are used), and a batch whose spliced layout would not fit a
    sliding attention window takes the flat path.
    """

    def __init__(self, teacher: CausalLM, option_texts: list[str], batch_size: int = 16):
        self.model, self.tokenizer, self.device = teacher.model, teacher.tokenizer, teacher.device
        self.dtype = teacher.dtype  # the resolved dtype the model computes in
        self.option_ids = option_token_ids(self.tokenizer, option_texts)
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.fast_head: bool | None = None  # decided by head_matches_model on the first prompt scored
        self._prefix: str | None = None
        self._prefix_cache = None
        self._prefix_len = 0

    @torch.inference_mode()
    def _ensure_prefix(self, prefix: str) -> None:
        if prefix == self._prefix:
            return
        ids = torch.tensor([self.encode_prefix(prefix)], device=self.device)
        out = self.model.get_decoder()(input_ids=ids, use_cache=True)
        self._prefix, self._prefix_cache, self._prefix_len = prefix, out.past_key_values, ids.shape[1]

    @torch.inference_mode()
    def score(self, prefix: str, suffixes: list[Suffix | str], on_batch=None) -> Scores:
        """Scores for each suffix, in batches of `batch_size`; `on_batch(n)` after each."""
        suffixes = [(s,) if isinstance(s, str) else tuple(s) for s in suffixes]
        table = encode_segments(self.tokenizer, (seg for s in suffixes for seg in s))
        tokens = functools.partial(join_segments, table)
        check_tokenization(self, prefix, suffixes, [tokens(s) for s in suffixes])
        if self.fast_head is None:
            probe = self.encode_prefix(prefix) + tokens(suffixes[0])
            self.fast_head = head_matches_model(self.model, probe, final_logits)
        self._ensure_prefix(prefix)
        heads = sorted({s[0] for s in suffixes if len(s) > 1})
        head_ids = [tokens((h,)) for h in heads]
        if (len(suffixes) < MIN_STATES_PER_HEAD * max(len(heads), 1)
                or not self._fits_window(max(map(len, head_ids), default=0))):
            # Too little sharing, or a head reaching past the sliding window (its cached keys would
            # not sit where _head_caches reads them): one flat pass, the segments tokenized as always.
            heads, head_ids = [], []
        head_index = {h: i for i, h in enumerate(heads)}
        head_kv = self._head_caches(head_ids)
        rows = [(head_index[s[0]], tokens(s[1:])) if s[0] in head_index and len(s) > 1
                else (-1, tokens(s)) for s in suffixes]
        # Batch rows of similar length together: padding is wasted compute. A batch's forward pass
        # runs on its rows' remaining tokens, padded to the longest (heads are only cached keys and
        # values), so rows are ordered by that length first, by head length second.
        order = np.lexsort(([len(head_ids[h]) if h >= 0 else 0 for h, _ in rows], [len(r) for _, r in rows]))
        parts = []
        for i in range(0, len(rows), self.batch_size):
            batch = self._within_window([rows[j] for j in order[i : i + self.batch_size]], head_ids)
            parts.append(self._score_batch(batch, head_ids, head_kv))
            if on_batch:
                on_batch(len(parts[-1].probs))
        merged = _concat(parts)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return Scores(merged.probs[inverse], merged.option_mass[inverse], merged.logodds[inverse])

    def _fits_window(self, length: int) -> bool:
        """Whether the prefix and `length` more cache positions stay inside the sliding
        attention window, if the model has one: beyond it the cache drops its oldest
        entries and the window is measured in cache positions, not token positions.
        (Strict: one position of margin, as models differ by one in where a window ends.)"""
        window = getattr(self.model.config, "sliding_window", None)
        return window is None or self._prefix_len + length < window

    def _within_window(self, rows: list[tuple[int, list[int]]], head_ids) -> list[tuple[int, list[int]]]:
        """The batch as it will be built: each row's head padded to the batch's longest
        head, then its remaining tokens padded to the longest. A shorter head leaves a
        gap, so in cache positions a row's tokens lie further from the prefix than in
        the prompt; if that layout does not fit the window, the rows go flat (their full
        suffixes, the same tokens) so that positions are the prompt's own."""
        width = max((len(head_ids[h]) for h, _ in rows if h >= 0), default=0)
        if self._fits_window(width + max(len(r) for _, r in rows)):
            return rows
        return [(-1, head_ids[h] + r) if h >= 0 else (-1, r) for h, r in rows]

    def _head_caches(self, head_ids: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keys and values of every distinct head after the prefix, stacked as
        [heads + 1, kv_heads, longest head, dim]: row i is head i, zero past its length, and
        the last row is all zeros (rows without a head). Stacked, a batch gathers its rows'
        heads in one indexing per layer rather than one copy per row and layer."""
        if not head_ids:
            return []
        longest = max(map(len, head_ids))
        stacked: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(head_ids), self.batch_size):
            batch = head_ids[start : start + self.batch_size]
            ids, mask = right_pad(batch, self.pad_id)
            cache = copy.deepcopy(self._prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            positions = torch.arange(self._prefix_len, self._prefix_len + ids.shape[1], device=self.device)
            self.model.get_decoder()(input_ids=ids.to(self.device), past_key_values=cache, use_cache=True,
                             position_ids=positions.unsqueeze(0).expand(len(batch), -1))
            p, keep = self._prefix_len, mask.to(self.device)[:, None, :, None]
            if not stacked:
                stacked = [(layer.keys.new_zeros(len(head_ids) + 1, layer.keys.shape[1], longest, layer.keys.shape[3]),
                            layer.values.new_zeros(len(head_ids) + 1, layer.values.shape[1], longest,
                                                   layer.values.shape[3])) for layer in cache.layers]
            width = ids.shape[1]
            for (keys, values), layer in zip(stacked, cache.layers):
                keys[start : start + len(batch), :, :width] = layer.keys[:, :, p : p + width] * keep
                values[start : start + len(batch), :, :width] = layer.values[:, :, p : p + width] * keep
        return stacked

    def _score_batch(self, rows: list[tuple[int, list[int]]], head_ids, head_kv) -> Scores:
        """One forward pass over the rows' remaining tokens. The cache holds the
        prefix, then each row's head padded to the longest head in the batch;
        padding is masked out and positions continue from each row's real length."""
        n = len(rows)
        head_lens = [len(head_ids[h]) if h >= 0 else 0 for h, _ in rows]
        width = max(head_lens)
        ids, mask = right_pad([r for _, r in rows], self.pad_id)
        cache = copy.deepcopy(self._prefix_cache)
        cache.batch_repeat_interleave(n)
        if width:
            none = len(head_ids)  # the all-zero row of head_kv
            pick = torch.tensor([h if h >= 0 else none for h, _ in rows], device=self.device)
            for layer_idx, (keys, values) in enumerate(head_kv):
                cache.update(keys[pick, :, :width], values[pick, :, :width], layer_idx)
        head_mask = (torch.arange(width).unsqueeze(0) < torch.tensor(head_lens).unsqueeze(1)).long()
        full_mask = torch.cat([torch.ones(n, self._prefix_len, dtype=torch.long), head_mask, mask], 1)
        positions = (self._prefix_len + torch.tensor(head_lens).unsqueeze(1)) + torch.arange(ids.shape[1])
        inputs = dict(input_ids=ids.to(self.device), attention_mask=full_mask.to(self.device),
                      past_key_values=cache, position_ids=positions.to(self.device), use_cache=True)
        answer_at = (torch.arange(n, device=self.device), (mask.sum(1) - 1).to(self.device))
        if not self.fast_head:  # the model's own head, on every position (see head_matches_model)
            return scores_from_logits(self.model(**inputs).logits[answer_at], self.option_ids)
        hidden = self.model.get_decoder()(**inputs).last_hidden_state[answer_at]
        return _scores_from_option_logp(option_log_probs(self.model, hidden, self.option_ids))

    @torch.inference_mode()
    def score_naive(self, prefix: str, suffixes: list[Suffix | str]) -> Scores:
        """The unoptimised reference: every prompt tokenized whole, and logits at
        every position, as a plain transformers loop would do it."""
        parts = []
        for i in range(0, len(suffixes), self.batch_size):
            seqs = [self.encode_prefix(prefix + "".join((s,) if isinstance(s, str) else s))
                    for s in suffixes[i : i + self.batch_size]]
            ids, mask = right_pad(seqs, self.pad_id)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            last = mask.sum(1) - 1
            parts.append(scores_from_logits(logits[torch.arange(len(seqs)), last.to(self.device)], self.option_ids))
        return _concat(parts)
