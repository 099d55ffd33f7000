"""Percentile bootstrap intervals, the way the package's reports compute them (except the
market's off-policy estimates: Student t intervals over days, simulation/fqe.py).

`bootstrap_interval(statistic, *samples, ...)` draws the resamples with scipy.stats.bootstrap
(method "percentile") and covers three designs:

  plain      one sample of n units (rows), resampled with replacement;
  paired     several samples aligned row by row, resampled with the same row indices
             (`paired=True`): a difference of two models on the same states, several
             models' perplexities on the same chunks;
  clustered  `groups` labels each row with its cluster (a question, a cell, a day): whole
             clusters are drawn with replacement and every row of a drawn cluster goes in,
             because rows of one cluster are not independent.

Several samples with `paired=False` are resampled independently of each other (a student's
states and the noise floor's states). `percentile_interval` is the last step on its own, for
a bootstrap distribution built from others (the games stage pools per-cell distributions into
a stratified one).

Resamples where the statistic is undefined (NaN: a spread ratio on a resample that repeats
one day) are left out of the percentiles; with fewer than two units (clusters), or no defined
resample, there is no interval (None). Statistics only; imports nothing from the package.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

Seed = int | Sequence[int] | np.random.Generator
Interval = tuple[float, float] | tuple[np.ndarray, np.ndarray]


def percentile_interval(distribution: np.ndarray, confidence: float) -> Interval | None:
    """The central `confidence` percentile interval of a bootstrap distribution (last axis:
    resamples; NaN resamples left out), as scipy's method="percentile" computes it (linear
    interpolation); None where some statistic has no defined resample."""
    _check_confidence(confidence)
    distribution = np.asarray(distribution, float)
    if not (~np.isnan(distribution)).any(axis=-1).all():
        return None
    alpha = (1 - confidence) / 2
    low, high = np.nanpercentile(distribution, [100 * alpha, 100 * (1 - alpha)], axis=-1)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def bootstrap_interval(statistic: Callable[..., float | np.ndarray], *samples: np.ndarray,
                       groups: np.ndarray | None = None, paired: bool | None = None, resamples: int = 1000,
                       confidence: float = 0.95, seed: Seed = 0, vectorized: bool = False,
                       distribution: bool = False):
    """Percentile bootstrap interval (low, high) of `statistic(*resampled samples)`.

    samples     arrays whose first axis is the units (rows); a resample of `s` is `s[idx]`.
                With several samples say `paired`: True resamples one index for all (their
                rows must align), False each sample on its own.
    groups      one label per row (one sample, or paired samples): resample the clusters.
    vectorized  the statistic also takes a leading batch axis, `s[idx]` with idx of shape
                (batch, n), and returns one value per resample: write it to reduce over the
                units axis counted from the end (axis=-1 for a 1-D sample, -2 for a table's
                rows). Clustered resamples are passed one at a time (their lengths differ).
    seed        int, ints, or a numpy Generator (which it then advances).

    A statistic may return several values (shape (k,), or (k, batch) vectorized); low and
    high are then arrays. Returns None with fewer than two units in some sample (two clusters)
    or no defined resample; with `distribution=True`, (interval, bootstrap distribution), the
    distribution of shape (resamples,) or (k, resamples), and (None, None) where there is no
    interval.
    """
    if not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a whole number of at least 1, got {resamples!r}")
    _check_confidence(confidence)
    if not samples:
        raise ValueError("bootstrap_interval needs at least one sample")
    samples = tuple(np.asarray(s) for s in samples)
    if len(samples) > 1 and paired is None:
        raise ValueError("several samples: say paired=True (aligned rows, one resample index) or paired=False")
    if groups is not None and paired is False:
        raise ValueError("groups label the rows of every sample: clustered samples must be paired")
    if (paired or groups is not None) and len({len(s) for s in samples}) > 1:
        raise ValueError(f"paired samples need the same number of rows, got {[len(s) for s in samples]}")
    none = (None, None) if distribution else None
    rng = np.random.default_rng(seed)

    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(samples[0]):
            raise ValueError(f"groups has {len(groups)} labels for {len(samples[0])} rows")
        rows_of = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        if len(rows_of) < 2:
            return none

        def on_clusters(drawn, axis=-1):  # scipy passes the drawn cluster numbers, one resample a call
            rows = np.concatenate([rows_of[c] for c in drawn])
            return statistic(*(s[rows] for s in samples))

        units, fn, scipy_paired, scipy_vectorized = (np.arange(len(rows_of)),), on_clusters, True, False
    else:
        if min(len(s) for s in samples) < 2:
            return none

        def on_rows(*idx, axis=-1):  # scipy resamples row numbers; the samples are indexed here
            return statistic(*(s[i] for s, i in zip(samples, idx)))

        units = tuple(np.arange(len(s)) for s in samples)
        fn, scipy_paired, scipy_vectorized = on_rows, bool(paired), vectorized

    with warnings.catch_warnings():
        # A constant distribution (a decider that matches the teacher on every day) is a valid
        # result; scipy warns about it even under the percentile method.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(units, fn, n_resamples=resamples, confidence_level=confidence,
                                 method="percentile", paired=scipy_paired, vectorized=scipy_vectorized, rng=rng)
    draws = np.asarray(result.bootstrap_distribution, float)
    interval = percentile_interval(draws, confidence)
    if distribution:
        return (interval, draws) if interval is not None else none
    return interval


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
