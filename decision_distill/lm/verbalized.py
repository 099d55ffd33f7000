"""The verbalized readout: the teacher writes a JSON answer, which is parsed strictly.

`VerbalizedReader` generates the answers (greedy at temperature 0, sampled above it);
`parse_verbalized` reads one, failing rather than guessing. Every prompt of a call shares
its prefix (the instructions and worked examples, most of its tokens), so the prefix's
key/value cache is computed once and each batch generates on top of a copy of it.

The decoding loop is written here rather than taken from transformers' `generate`, for
two costs that dominated a sampled answer on CPU: its sampler (see sample_tokens) and its
stop-string check, which re-reads the whole vocabulary on every call. The loop is the
same otherwise, and tests/test_verbalized.py holds it to `generate`'s next-token
distributions at every step.
"""

from __future__ import annotations

import copy
import inspect
import json
import numpy as np
import torch

from .scorer import CausalLM
from .scorer_checks import check_tokenization
from .tokens import Encodes, Suffix, encode_prefix, encode_suffixes

# Part of the answer-cache key of every verbalized answer (teacher.ask.answer_keys): bump it with
# any change to how answers are generated that can change their text, so answers generated
# the old way are never served. 2: the shared prompt prefix is computed once and reused.
GENERATION_VERSION = 2
SAMPLE_BLOCK = 512  # vocabulary entries per block of the two-stage sampler (sample_tokens)


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice: {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def parse_verbalized(text: str, key: str) -> dict:
    """Strictly read `{"<key>": p, "explanation": "..."}` from the first line of `text`.

    Anything else is a failure with the raw text kept, never a number: no
    regex salvage, no clipping of out-of-range values.
    """
    line = text.strip().split("\n", 1)[0].strip()
    failure = {"ok": False, "probability": None, "explanation": None, "raw": text}
    try:
        data = json.loads(line, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError:
        return {**failure, "error": "not valid JSON"}
    except ValueError as err:  # a key given twice: which value is the answer?
        return {**failure, "error": str(err)}
    if not isinstance(data, dict) or set(data) != {key, "explanation"}:
        return {**failure, "error": f"expected exactly the keys {key!r} and 'explanation'"}
    p, why = data[key], data["explanation"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not np.isfinite(p) or not 0 <= p <= 1:
        return {**failure, "error": f"{key!r} is not a probability in [0, 1]"}
    if not isinstance(why, str) or not why.strip():
        return {**failure, "error": "explanation is not a non-empty string"}
    return {"ok": True, "probability": float(p), "explanation": why.strip(), "raw": text, "error": None}


def sample_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of `logits` [rows, vocabulary]: the most likely at temperature 0, else a
    draw from softmax(logits / temperature) by inverting its CDF with one uniform per row, in two
    stages (which block of SAMPLE_BLOCK tokens, then which token in it), so that no pass over the
    vocabulary is more than one exp and one sum. (torch's multinomial, which transformers'
    generate samples with, draws an exponential per vocabulary entry: 0.2 s per step for Gemma's
    262k tokens and 32 rows on 2 CPU cores, most of a step.)"""
    if temperature == 0:
        return logits.argmax(-1)
    rows, size = logits.shape
    weights = torch.zeros(rows, -(-size // SAMPLE_BLOCK) * SAMPLE_BLOCK, device=logits.device)
    scaled = logits.to(torch.float32, copy=True).div_(temperature)
    torch.exp(scaled.sub_(scaled.max(-1, keepdim=True).values), out=weights[:, :size])
    blocks = weights.view(rows, -1, SAMPLE_BLOCK)
    block_cdf = blocks.sum(-1).double().cumsum(-1)
    u = torch.rand(rows, 1, generator=generator, device=logits.device, dtype=torch.float64) * block_cdf[:, -1:]
    # right=True: the first entry whose cumulative weight exceeds u, never a zero-weight one
    block = torch.searchsorted(block_cdf, u, right=True).clamp_(max=blocks.shape[1] - 1)
    below = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)), 0.0)
    inner_cdf = blocks[torch.arange(rows, device=logits.device), block.squeeze(1)].double().cumsum(-1)
    inner = torch.searchsorted(inner_cdf, u - below, right=True).clamp_(max=SAMPLE_BLOCK - 1)
    return (block * SAMPLE_BLOCK + inner).squeeze(1).clamp_(max=size - 1)


class VerbalizedReader(Encodes):
    """Generates the teacher's JSON answer to prefix + suffix, for each suffix.

    Each batch is laid out as [prefix][padding][suffix]: the prefix's cached keys and
    values serve every row, the padding (masked out, and skipped by the positions, which
    are counted from the attention mask) lines the suffixes up at the right, where
    generation continues. The token sequence a row attends to is the prompt's own (the
    pieces must tokenize as the whole prompt, checked as the token scorer checks it). A
    batch whose cache would outgrow the model's sliding attention window generates from
    whole prompts instead, left-padded, without the shared prefix (as does
    share_prefix=False, which bench/verbalized_speed.py compares).
    """

    def __init__(self, teacher: CausalLM, key: str, max_new_tokens: int, temperature: float,
                 batch_size: int = 8, share_prefix: bool = True):
        self.model, self.tokenizer, self.device = teacher.model, teacher.tokenizer, teacher.device
        self.key, self.max_new_tokens, self.temperature = key, max_new_tokens, temperature
        self.batch_size, self.share_prefix = batch_size, share_prefix
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._stops: torch.Tensor | None = None  # _stop_mask, built on first use
        # the LM head on the last position only, where the model supports it
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}

    @torch.inference_mode()
    def answer(self, prefix: str, suffixes: list[Suffix | str], seed: int = 0) -> list[dict]:
        """The parsed answer to each prompt; batch k (from 0) samples from a torch generator
        seeded with `seed + k * batch_size`."""
        suffixes = [(s,) if isinstance(s, str) else tuple(s) for s in suffixes]
        rows = self.encode_suffixes(suffixes)
        check_tokenization(self, prefix, suffixes, rows)
        prefix_ids = self.encode_prefix(prefix)
        prefix_cache = self.model.get_decoder()(
            input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True).past_key_values
        results = []
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i : i + self.batch_size]
            width = max(map(len, batch))
            shared = self.share_prefix and self.fits_window(len(prefix_ids) + width + self.max_new_tokens)
            ids, mask = self._layout(prefix_ids, batch, width, shared)
            cache = None
            if shared:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
            generator = torch.Generator(device=self.device).manual_seed(seed + i)
            new = self._generate(ids.to(self.device), mask.to(self.device), cache, generator)
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            results += [parse_verbalized(t, self.key) for t in texts]
        return results

    def _generate(self, ids: torch.Tensor, mask: torch.Tensor, cache, generator: torch.Generator) -> torch.Tensor:
        """New tokens [rows, steps] until each row has written a newline (or an end-of-sequence
        token) or max_new_tokens: the decoding loop of transformers' generate (positions counted
        from the attention mask, finished rows padded), with sample_tokens as the sampler."""
        n, done_len = len(ids), 0 if cache is None else cache.get_seq_length()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {"input_ids": ids[:, done_len:], "position_ids": positions[:, done_len:]}
        stop, finished, written = self._stop_mask(), torch.zeros(n, dtype=torch.bool, device=ids.device), []
        for _ in range(self.max_new_tokens):
            out = self.model(**inputs, attention_mask=mask, past_key_values=cache, use_cache=True, **self._keep)
            token = sample_tokens(out.logits[:, -1], self.temperature, generator)
            token = token.masked_fill(finished, self.pad_id)
            written.append(token)
            finished |= stop[token]
            if finished.all():
                break
            cache, mask = out.past_key_values, torch.cat([mask, mask.new_ones(n, 1)], 1)
            inputs = {"input_ids": token[:, None], "position_ids": mask.sum(1, keepdim=True) - 1}
        return torch.stack(written, 1)

    def _stop_mask(self) -> torch.Tensor:
        """[vocabulary] True for tokens that end an answer: any token whose text holds a newline
        (the answer is one line), and the model's end-of-sequence tokens."""
        if self._stops is None:
            size = self.model.get_output_embeddings().weight.shape[0]
            texts = self.tokenizer.batch_decode([[i] for i in range(min(size, len(self.tokenizer)))])
            stops = torch.zeros(size, dtype=torch.bool)
            stops[[i for i, text in enumerate(texts) if "\n" in text]] = True
            eos = self.model.generation_config.eos_token_id
            for token in [*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id]:
                if token is not None:
                    stops[token] = True
            self._stops = stops.to(self.device)
        return self._stops

    def _layout(self, prefix_ids: list[int], batch: list[list[int]], width: int, shared: bool):
        """[prefix][pad][suffix] rows (shared prefix) or [pad][prefix][suffix] rows, with their mask."""
        n, p = len(batch), len(prefix_ids)
        ids = torch.full((n, p + width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, p + width), dtype=torch.long)
        for row, suffix in enumerate(batch):
            start = p + width - len(suffix) if shared else width - len(suffix)
            seq = suffix if shared else prefix_ids + suffix
            ids[row, start : start + len(seq)], mask[row, start : start + len(seq)] = torch.tensor(seq), 1
            if shared:
                ids[row, :p], mask[row, :p] = torch.tensor(prefix_ids), 1
        return ids, mask

    def fits_window(self, length: int) -> bool:
        """Whether `length` cache positions stay inside the sliding attention window, if any
        (one position of margin, as models differ by one in where a window ends)."""
        window = getattr(self.model.config, "sliding_window", None)
        return window is None or length < window
