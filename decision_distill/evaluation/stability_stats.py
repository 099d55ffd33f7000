"""The stability stage's statistics beyond the ICC table (decision_distill.evaluation.icc):
the explanations' similarity, the verbalized readout against the token readout, and the
numerics check of the scorer, with its tolerance per precision."""

from __future__ import annotations

import numpy as np

from ..core.errors import UserError
from ..lm.embeddings import embed
from .icc import summarize


def p_action(runs: dict[str, np.ndarray]) -> np.ndarray:
    """P(action) of every run, [states, runs]: the readings table icc.summarize reads."""
    return np.column_stack([probs[:, 0] for probs in runs.values()])


def explanation_cosine(explanations: list[list[str | None]]) -> float | None:
    per_state = [[e for e in row if e] for row in explanations]
    texts = [e for row in per_state for e in row]
    if not any(len(row) >= 2 for row in per_state):
        return None
    vectors, start, grouped = embed(texts), 0, []
    for row in per_state:
        grouped.append(vectors[start : start + len(row)])
        start += len(row)
    return mean_pairwise_cosine(grouped)


def mean_pairwise_cosine(embeddings: list[np.ndarray]) -> float | None:
    """Per state, the mean cosine similarity over pairs of its explanations' embeddings
    (rows, L2-normalised); averaged over states with at least two explanations."""
    means = []
    for vectors in embeddings:
        if len(vectors) < 2:
            continue
        sims = vectors @ vectors.T
        upper = np.triu_indices(len(vectors), k=1)
        means.append(sims[upper].mean())
    return float(np.mean(means)) if means else None


def readout_agreement(verbalized: np.ndarray, tokens: np.ndarray) -> dict:
    """Per-state mean of the verbalized readings against the token readout's P(action):
    Pearson r and mean difference (verbalized - tokens), over states with a parsed answer."""
    from scipy import stats

    means = np.array([np.nanmean(row) if (~np.isnan(row)).any() else np.nan for row in verbalized])
    usable = ~np.isnan(means)
    x, y = means[usable], np.asarray(tokens, dtype=float)[usable]
    r = None
    if usable.sum() >= 2 and np.std(x) > 0 and np.std(y) > 0:
        r = float(stats.pearsonr(x, y).statistic)
    return {"states": int(usable.sum()), "pearson": r,
            "mean_difference": float(np.mean(x - y)) if usable.any() else None}


# The scorer's runs are the same computation in another order: in float32 they differ by
# ~1e-6. More than this is a scorer that is not exact for the teacher, and fails the stage.
# In bfloat16 the KV-splice path, other batch shapes and the plain forward pass round
# differently: bench/dtype_fidelity.py measured max |dP| 0.031 between the scorer and the naive
# loop and 0.030 between batch sizes 32 and 7 (32 states of the packaged Gemma; float32:
# 3.5e-6 and 4.0e-6). The bound is twice that; a wrong splice or head moves P by tenths.
NUMERICS_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.06}


def numerics_tolerance(dtype: str) -> float:
    """The numerics check's bound for answers computed in `dtype` (float16 has not been
    measured and keeps float32's bound)."""
    return NUMERICS_TOLERANCE.get(dtype, NUMERICS_TOLERANCE["float32"])


def numerics_metrics(runs: dict[str, np.ndarray], dtype: str = "float32") -> dict:
    reference, *others = runs.values()
    diffs = np.abs(np.stack(others) - reference) if others else np.zeros((1, *reference.shape))
    tolerance = numerics_tolerance(dtype)
    metrics = summarize(p_action(runs), list(runs)) | {
        "reference": next(iter(runs)), "max_abs_diff": float(diffs.max()), "mean_abs_diff": float(diffs.mean()),
        "dtype": dtype, "tolerance": tolerance}
    if metrics["max_abs_diff"] > tolerance:
        worst = list(runs)[1 + int(diffs.reshape(len(others), -1).max(1).argmax())]
        raise UserError(f"stability numerics: the scorer's P(option) differs by up to {metrics['max_abs_diff']:.3g} "
                        f"(more than {tolerance:g} in {dtype}) between '{metrics['reference']}' and '{worst}', so "
                        "its answers depend on how they were computed; with teacher.dtype float16 use bfloat16 "
                        "or float32, otherwise report it as a scorer bug")
    return metrics
