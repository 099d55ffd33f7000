"""The perplexity matrix: every person's tuned model, and the base model, on every person's
held-out chunks, with bootstrap intervals over those chunks.

Per person it answers the two questions the research's heatmaps left open:
  did the adapter help?   own-text perplexity tuned / base, a paired interval (the same
                          resampled chunks for both); helped when the whole interval is below 1
  is the diagonal lowest? whether the person's own model has the lowest perplexity of all
                          persona models on their text, and the share of resamples where it does

Resumable: each chunk's NLL under each model goes to the answer cache as soon as it is
computed (keyed by the model's fingerprint, which for a merged model hashes its weights),
so a killed run's rerun loads and runs only the models with chunks still missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..lm.answer_cache import AnswerCache
from ..lm.load import load_causal_lm
from ..lm.source import read_model_json
from ..stats.bootstrap import bootstrap_interval
from .cache_keys import persona_key
from .chunks import Chunk, HELD_OUT
from .text import encode_chunk, sequence_nll

BASE = "base"


@torch.inference_mode()
def chunk_nll(model_dir: str | Path, chunks: list[Chunk], dtype: str, device: str,
              trust_remote_code: bool, cache: AnswerCache) -> np.ndarray:
    """[N, 2]: summed negative log-likelihood and predicted-token count of each chunk, through
    `cache`; the model is loaded only when some chunk is missing there."""
    fingerprint = read_model_json(model_dir)["fingerprint"]
    # chat_template=None: a chunk is scored as plain text, never a prompt, so no template applies.
    keys = [persona_key("persona-perplexity nll", fingerprint, dtype, device, c.text, chat_template=None,
                        tokens="BOS + text, all tokens") for c in chunks]
    known = cache.get_many(keys)
    model = None
    for c, key in zip(chunks, keys):
        if key in known:
            continue
        model = model or load_causal_lm(model_dir, dtype, device, trust_remote_code)
        nll, tokens = sequence_nll(model.model, encode_chunk(model.tokenizer, c.text), model.device)
        known[key] = {"nll": nll.item(), "tokens": tokens}
        cache.put_many({key: known[key]})
    return np.array([(known[k]["nll"], known[k]["tokens"]) for k in keys], dtype=np.float64)


def _ppl(table: np.ndarray) -> np.ndarray:
    """exp(total nll / total tokens) of a [..., chunks, 2] table of (nll, tokens) rows."""
    return np.exp(table[..., 0].sum(axis=-1) / table[..., 1].sum(axis=-1))


def matrix_report(nll: dict[str, np.ndarray], chunks: list[Chunk], personas: list[str], bootstrap: int,
                  confidence: float, seed: int) -> dict:
    """`nll`: model name (BASE or a persona) -> chunk_nll over `chunks` (the held-out chunks, in order).
    A text with fewer than two held-out chunks gets no intervals ([None, None])."""
    models, matrix, own = list(nll), {}, {}
    for p, text_of in enumerate(personas):
        rows = np.array([c.persona == text_of for c in chunks])
        tables = [v[rows] for v in nll.values()]
        mine = models.index(text_of) if text_of in nll else None

        def statistic(*resampled, mine=mine):
            """Every model's perplexity, then (own text) the own model's ratio to the base model."""
            ppl = np.stack([_ppl(t) for t in resampled])
            return ppl if mine is None else np.concatenate([ppl, ppl[[mine]] / ppl[[models.index(BASE)]]])

        # One resample of the chunks for every model at once: paired comparisons.
        ci, draws = bootstrap_interval(statistic, *tables, paired=True, resamples=bootstrap, confidence=confidence,
                                       seed=[seed, p], vectorized=True, distribution=True)
        low, high = ci if ci is not None else ([None] * (len(models) + 1),) * 2
        matrix[text_of] = {m: {"perplexity": float(_ppl(t)), "ci": _pair(low[k], high[k])}
                           for k, (m, t) in enumerate(zip(models, tables))}
        if mine is None:
            continue
        others = [k for k, m in enumerate(models) if m != BASE]
        point = {m: matrix[text_of][m]["perplexity"] for m in models if m != BASE}
        own[text_of] = {
            "held_out_chunks": int(rows.sum()),
            "base": matrix[text_of][BASE], "tuned": matrix[text_of][text_of],
            "ratio_tuned_to_base": float(point[text_of] / matrix[text_of][BASE]["perplexity"]),
            "ratio_ci": _pair(low[-1], high[-1]),
            "helped": bool(ci is not None and high[-1] < 1),
            "own_model_lowest": min(point, key=point.get) == text_of,
            "own_model_lowest_share": float(np.mean(np.argmin(draws[others], axis=0) == others.index(mine)))
            if draws is not None else None,
        }
    return {"models": models, "texts": personas, "confidence": confidence, "bootstrap": bootstrap,
            "matrix": matrix, "own_text": own,
            "diagonal_lowest": sum(o["own_model_lowest"] for o in own.values()),
            "helped": sum(o["helped"] for o in own.values()), "personas": len(own)}


def _pair(low, high) -> list[float | None]:
    return [None if low is None else float(low), None if high is None else float(high)]


def held_out(chunks: list[Chunk]) -> list[Chunk]:
    return [c for c in chunks if c.split == HELD_OUT]


def draw_heatmap(report: dict, out: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.atomic import atomic_path

    models, texts = report["models"], report["texts"]
    grid = np.array([[report["matrix"][t][m]["perplexity"] for t in texts] for m in models])
    fig, ax = plt.subplots(figsize=(1.4 * len(texts) + 2.5, 0.7 * len(models) + 1.8))
    image = ax.imshow(grid, cmap="viridis_r")
    ax.set_xticks(range(len(texts)), texts, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), models)
    ax.set_xlabel("held-out text of")
    ax.set_ylabel("model")
    for i, m in enumerate(models):
        for j, t in enumerate(texts):
            lo, hi = report["matrix"][t][m]["ci"]
            spread = f"[{lo:.1f}, {hi:.1f}]" if lo is not None else "no interval"
            ax.text(j, i, f"{grid[i, j]:.1f}\n{spread}", ha="center", va="center", fontsize=7,
                    color="white", fontweight="bold" if m == t else "normal")
    fig.colorbar(image, ax=ax, label="perplexity")
    ax.set_title(f"Perplexity on held-out chunks ({report['confidence']:.0%} bootstrap intervals)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
