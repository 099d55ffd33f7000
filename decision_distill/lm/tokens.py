"""A prompt as the token readouts see it: a shared prefix and, per state, a suffix in
segments, each segment tokenized on its own and the tokens concatenated (see
decision_distill.lm.scorer.TokenScorer), and padded batches of token rows.
"""

from __future__ import annotations

import torch


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one right-padded [rows, longest] id tensor and its attention mask."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded id tensor and its mask: generation continues every row
    from the last column, where each row's own text ends."""
    ids, mask = right_pad([s[::-1] for s in seqs], pad_id)
    return ids.flip(1), mask.flip(1)


Suffix = tuple[str, ...]  # a state's prompt after the shared prefix, in segments (see Scenario.describe_parts)


def encode_prefix(tokenizer, prefix: str) -> list[int]:
    """A prompt's shared prefix as tokens. A chat template writes the BOS token itself;
    otherwise the tokenizer adds it."""
    return tokenizer(prefix, add_special_tokens=not has_bos(tokenizer, prefix)).input_ids


def encode_suffix(tokenizer, suffix: Suffix | str) -> list[int]:
    """A suffix's segments tokenized one by one and concatenated (see TokenScorer)."""
    segments = (suffix,) if isinstance(suffix, str) else suffix
    return [t for seg in segments if seg for t in tokenizer(seg, add_special_tokens=False).input_ids]


def encode_segments(tokenizer, texts) -> dict[str, list[int]]:
    """Each distinct non-empty text tokenized once (no special tokens), all in one batched
    call: a fast tokenizer's batch encoding is each text's own encoding, and one call
    instead of one per state is what keeps the host from bounding a GPU's throughput."""
    distinct = list(dict.fromkeys(t for t in texts if t))
    return dict(zip(distinct, tokenizer(distinct, add_special_tokens=False).input_ids if distinct else []))


def join_segments(table: dict[str, list[int]], segments: Suffix) -> list[int]:
    """A suffix's tokens from encode_segments' table: its segments' tokens, concatenated."""
    return [t for seg in segments if seg for t in table[seg]]


def encode_suffixes(tokenizer, suffixes: list[Suffix | str]) -> list[list[int]]:
    """encode_suffix of every suffix, with each distinct segment tokenized once."""
    suffixes = [(s,) if isinstance(s, str) else s for s in suffixes]
    table = encode_segments(tokenizer, (seg for s in suffixes for seg in s))
    return [join_segments(table, s) for s in suffixes]


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """encode_prefix of every whole prompt, in one batched call per BOS convention."""
    out: list[list[int] | None] = [None] * len(prompts)
    for special in (True, False):
        rows = [i for i, text in enumerate(prompts) if has_bos(tokenizer, text) != special]
        if rows:
            for i, ids in zip(rows, tokenizer([prompts[i] for i in rows], add_special_tokens=special).input_ids):
                out[i] = ids
    return out


def has_bos(tokenizer, text: str) -> bool:
    return bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)


class Encodes:
    """The encoders above bound to `self.tokenizer`: what a reader of a model (TokenScorer,
    VerbalizedReader) offers its callers, so they tokenize exactly as it does."""
    tokenizer: object

    def encode_prefix(self, prefix: str) -> list[int]:
        return encode_prefix(self.tokenizer, prefix)

    def encode_suffix(self, suffix: Suffix | str) -> list[int]:
        return encode_suffix(self.tokenizer, suffix)

    def encode_suffixes(self, suffixes: list[Suffix | str]) -> list[list[int]]:
        return encode_suffixes(self.tokenizer, suffixes)

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts)

