"""The teacher: load a causal LM and read its decisions.

Two readouts: `TokenScorer` reads P(option | prompt) from the answer tokens'
probabilities (fast, exact); `VerbalizedReader` asks for a JSON answer and
parses it strictly. See decision_distill.model_source for where weights come from.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .model_source import read_teacher_json, refuse_pickle_weights

# ---- loading --------------------------------------------------------------------

@dataclass
class LoadedTeacher:
    model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    device: torch.device


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("teacher.device: cuda requested but no CUDA device is available; use auto or cpu")
    return torch.device(device)


def load_teacher(model_dir: str | Path, dtype: str = "float32", device: str = "auto",
                 trust_remote_code: bool = False, quantize: str = "none") -> LoadedTeacher:
    """quantize: "4bit" loads the weights as bitsandbytes NF4 on CUDA (QLoRA's base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = read_teacher_json(model_dir)
    weights = (Path(model_dir) / info["path"]).resolve()
    refuse_pickle_weights(weights, f"{model_dir} (teacher.json path)")
    target = pick_device(device)
    quantized = {"quantization_config": _nf4_config(dtype), "device_map": {"": target}} if quantize == "4bit" else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            weights, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            use_safetensors=True, **quantized,
        )
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot load the model at {weights}: {str(err).splitlines()[0]}; "
                        "check the model key in params.yaml and rerun its download stage") from None
    if not quantized:  # a quantized model is placed by device_map and cannot be moved
        model.to(target)
    model.eval()
    return LoadedTeacher(model, tokenizer, info["fingerprint"], target)


def _nf4_config(dtype: str):
    """4-bit NF4 weights with compute in `dtype`; bitsandbytes is optional (CUDA only)."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("slm.quantize: 4bit needs the bitsandbytes package (`pip install bitsandbytes`, "
                        "CUDA only); install it or set slm.quantize: none") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=getattr(torch, dtype), bnb_4bit_use_double_quant=True)


# ---- scoring: P(option | prompt) from the answer tokens ------------------------------

# Part of every answer-cache key: bump it with any change to how answers are read
# (tokenization, sharing, readout, generation) that can move their numbers.
SCORER_VERSION = 1

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


def _scores_from_logits(last_logits: torch.Tensor, option_ids: list[int]) -> Scores:
    return _scores_from_option_logp(torch.log_softmax(last_logits.float(), dim=-1)[:, option_ids])


def option_log_probs(model, hidden: torch.Tensor, option_ids: list[int]) -> torch.Tensor:
    """log P(option token | prompt) over the full vocabulary, [B, K], from the hidden
    states at the answer position ([B, hidden]). The one readout shared by the scorer
    and by LoRA training, so it stays differentiable (no inference_mode here)."""
    return torch.log_softmax(_final_logits(model, hidden).float(), dim=-1)[:, option_ids]


def _scores_from_option_logp(option_logp: torch.Tensor) -> Scores:
    logp = option_logp.double()  # [B, K]
    mass = logp.exp().sum(-1)
    probs = torch.softmax(logp, dim=-1)
    logodds = logp[:, 0] - torch.logsumexp(logp[:, 1:], dim=-1)
    return Scores(probs.cpu().numpy().astype(np.float64), mass.cpu().numpy().astype(np.float64),
                  logodds.cpu().numpy().astype(np.float64))


def _concat(parts: list[Scores]) -> Scores:
    return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("probs", "option_mass", "logodds")))


def _final_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on selected hidden states only: the 262k-entry vocabulary
    projection is the costliest layer, so it runs on one position per prompt."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


Suffix = tuple[str, ...]  # a state's prompt after the shared prefix, in segments (see Scenario.describe_parts)

# Below this many states per distinct head, a head's own forward pass costs more than sharing it saves.
MIN_STATES_PER_HEAD = 4


class TokenScorer:
    """Reads P(option | prefix + suffix) from the answer tokens' probabilities.

    Work that states share is done once: the prefix (intro and worked examples)
    is run through the model once, and a suffix's first segment (its "head",
    e.g. everything before the last feature's value) once per distinct head;
    their key/value caches are reused for every state. Each batch then costs
    only its own remaining tokens, and the vocabulary projection runs on the
    last real token only. Batches are right-padded, so under causal attention
    no real token ever attends to padding.

    A suffix is a tuple of text segments, tokenized one by one and concatenated:
    the token sequence is the same whichever way the work is shared.
    """

    def __init__(self, teacher: LoadedTeacher, option_texts: list[str], batch_size: int = 16):
        self.model, self.tokenizer, self.device = teacher.model, teacher.tokenizer, teacher.device
        self.option_ids = option_token_ids(self.tokenizer, option_texts)
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._prefix: str | None = None
        self._prefix_cache = None
        self._prefix_len = 0

    def encode_prefix(self, prefix: str) -> list[int]:
        # A chat template writes the BOS token itself; otherwise the tokenizer adds it.
        return self.tokenizer(prefix, add_special_tokens=not _has_bos(self.tokenizer, prefix)).input_ids

    def encode_suffix(self, suffix: Suffix | str) -> list[int]:
        segments = (suffix,) if isinstance(suffix, str) else suffix
        return [t for seg in segments if seg for t in self.tokenizer(seg, add_special_tokens=False).input_ids]

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
        self._ensure_prefix(prefix)
        suffixes = [(s,) if isinstance(s, str) else s for s in suffixes]
        heads = sorted({s[0] for s in suffixes if len(s) > 1})
        if len(suffixes) < MIN_STATES_PER_HEAD * max(len(heads), 1) or not self._fits_window(suffixes):
            heads = []  # too little sharing: one flat pass, the segments tokenized as always
        head_index = {h: i for i, h in enumerate(heads)}
        head_ids = [self.encode_suffix(h) for h in heads]
        head_kv = self._head_caches(head_ids)
        rows = [(head_index[s[0]], self.encode_suffix(s[1:])) if s[0] in head_index and len(s) > 1
                else (-1, self.encode_suffix(s)) for s in suffixes]
        # Batch rows of similar length together: padding is wasted compute.
        order = np.argsort([len(head_ids[h]) + len(r) if h >= 0 else len(r) for h, r in rows], kind="stable")
        parts = []
        for i in range(0, len(rows), self.batch_size):
            parts.append(self._score_batch([rows[j] for j in order[i : i + self.batch_size]], head_ids, head_kv))
            if on_batch:
                on_batch(len(parts[-1].probs))
        merged = _concat(parts)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return Scores(merged.probs[inverse], merged.option_mass[inverse], merged.logodds[inverse])

    def _fits_window(self, suffixes: list[Suffix]) -> bool:
        """Shared heads are spliced into the cache by position; beyond a sliding
        window the cache drops old entries, so long prompts take the flat path."""
        window = getattr(self.model.config, "sliding_window", None)
        longest = max(len(self.encode_suffix(s)) for s in suffixes)
        return window is None or self._prefix_len + longest + 8 < window

    def _head_caches(self, head_ids: list[list[int]]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per distinct head, its keys and values in every layer ([1, heads, len, dim]),
        computed in right-padded batches on top of the prefix cache."""
        per_head = []
        for start in range(0, len(head_ids), self.batch_size):
            batch = head_ids[start : start + self.batch_size]
            ids, _ = _right_pad(batch, self.pad_id)
            cache = copy.deepcopy(self._prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            positions = torch.arange(self._prefix_len, self._prefix_len + ids.shape[1], device=self.device)
            self.model.get_decoder()(input_ids=ids.to(self.device), past_key_values=cache, use_cache=True,
                             position_ids=positions.unsqueeze(0).expand(len(batch), -1))
            p = self._prefix_len
            per_head += [[(layer.keys[b : b + 1, :, p : p + len(h)], layer.values[b : b + 1, :, p : p + len(h)])
                          for layer in cache.layers] for b, h in enumerate(batch)]
        return per_head

    def _score_batch(self, rows: list[tuple[int, list[int]]], head_ids, head_kv) -> Scores:
        """One forward pass over the rows' remaining tokens. The cache holds the
        prefix, then each row's head padded to the longest head in the batch;
        padding is masked out and positions continue from each row's real length."""
        n = len(rows)
        head_lens = [len(head_ids[h]) if h >= 0 else 0 for h, _ in rows]
        width = max(head_lens)
        ids, mask = _right_pad([r for _, r in rows], self.pad_id)
        cache = copy.deepcopy(self._prefix_cache)
        cache.batch_repeat_interleave(n)
        if width:
            for layer_idx, layer in enumerate(cache.layers):
                keys = layer.keys.new_zeros(n, layer.keys.shape[1], width, layer.keys.shape[3])
                values = torch.zeros_like(keys)
                for row, (h, _) in enumerate(rows):
                    if h >= 0:
                        k, v = head_kv[h][layer_idx]
                        keys[row, :, : k.shape[2]], values[row, :, : v.shape[2]] = k[0], v[0]
                cache.update(keys, values, layer_idx)
        head_mask = (torch.arange(width).unsqueeze(0) < torch.tensor(head_lens).unsqueeze(1)).long()
        full_mask = torch.cat([torch.ones(n, self._prefix_len, dtype=torch.long), head_mask, mask], 1)
        positions = (self._prefix_len + torch.tensor(head_lens).unsqueeze(1)) + torch.arange(ids.shape[1])
        out = self.model.get_decoder()(
            input_ids=ids.to(self.device), attention_mask=full_mask.to(self.device), past_key_values=cache,
            position_ids=positions.to(self.device), use_cache=True,
        )
        last = (mask.sum(1) - 1).to(self.device)
        hidden = out.last_hidden_state[torch.arange(n, device=self.device), last]
        return _scores_from_option_logp(option_log_probs(self.model, hidden, self.option_ids))

    @torch.inference_mode()
    def score_naive(self, prefix: str, suffixes: list[Suffix | str]) -> Scores:
        """The unoptimised reference: the full prompt for every state and logits at
        every position, as a plain transformers loop would do it."""
        parts = []
        for i in range(0, len(suffixes), self.batch_size):
            seqs = [self.encode_prefix(prefix) + self.encode_suffix(s) for s in suffixes[i : i + self.batch_size]]
            ids, mask = _right_pad(seqs, self.pad_id)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            last = mask.sum(1) - 1
            parts.append(_scores_from_logits(logits[torch.arange(len(seqs)), last.to(self.device)], self.option_ids))
        return _concat(parts)


# ---- verbalized readout: ask for JSON, parse strictly --------------------------------

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


class VerbalizedReader:
    """Generates the teacher's JSON answer for each prompt (greedy at temperature 0)."""

    def __init__(self, teacher: LoadedTeacher, key: str, max_new_tokens: int, temperature: float,
                 batch_size: int = 8):
        self.model, self.tokenizer, self.device = teacher.model, teacher.tokenizer, teacher.device
        self.key, self.max_new_tokens, self.temperature = key, max_new_tokens, temperature
        self.batch_size = batch_size

    @torch.inference_mode()
    def answer(self, prompts: list[str], seed: int = 0) -> list[dict]:
        self.tokenizer.padding_side = "left"
        results = []
        for i in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(prompts[i : i + self.batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=not _has_bos(self.tokenizer, prompts[i]))
            torch.manual_seed(seed + i)
            sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0} \
                if self.temperature > 0 else {"do_sample": False, "top_k": None, "top_p": None}
            out = self.model.generate(
                **batch.to(self.device), max_new_tokens=self.max_new_tokens,
                stop_strings=["\n"], tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id, **sampling,
            )
            new = out[:, batch["input_ids"].shape[1]:]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            results += [parse_verbalized(t, self.key) for t in texts]
        return results


def _has_bos(tokenizer, text: str) -> bool:
    return bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
