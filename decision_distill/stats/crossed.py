"""A t interval for the mean of a table whose rows and columns are both random draws.

A simulation's fidelity numbers vary with two things a rerun changes: the student's training
seed (rows) and the simulated day (columns, shared by every seed: day d is the same seeded
market for each). Under the crossed random-effects model

    y[s, d] = mu + a[s] + b[d] + e[s, d]

the grand mean's variance is var(a)/S + var(b)/D + var(e)/(S*D). Its unbiased estimate from
the two-way ANOVA mean squares is (MS_seed + MS_day - MS_residual) / (S*D); each variance
component is floored at zero, so the estimate never falls below the residual's share. The
degrees of freedom come from Satterthwaite's approximation. With one seed this is the
ordinary one-sample t interval over days; with one day, over seeds.

The point estimate is the grand mean and the interval is symmetric around it, so unlike a
percentile bootstrap of a few values it never excludes its own estimate. statsmodels'
mixed models fit these components by (RE)ML iteratively and report no interval for the
grand mean of a crossed design; the closed form here is the textbook balanced-design one.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def crossed_t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, list[float] | None, float]:
    """(grand mean, [low, high], degrees of freedom) of `values` [seeds, days]; no interval
    (None) when there is a single value or the table has no variation to estimate."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    y = np.asarray(values, dtype=float)
    if y.ndim != 2 or y.size == 0 or not np.isfinite(y).all():
        raise ValueError(f"crossed_t_interval needs a finite [seeds, days] table, got shape {y.shape}")
    s, d = y.shape
    mean = float(y.mean())
    if y.size < 2:
        return mean, None, 0.0
    if s == 1 or d == 1:
        flat = y.ravel()
        terms = [(flat.var(ddof=1) / flat.size, flat.size - 1)]
    else:
        rows, cols = y.mean(axis=1), y.mean(axis=0)
        ms_seed = d * ((rows - mean) ** 2).sum() / (s - 1)
        ms_day = s * ((cols - mean) ** 2).sum() / (d - 1)
        resid = y - rows[:, None] - cols[None, :] + mean
        ms_res = (resid ** 2).sum() / ((s - 1) * (d - 1))
        # var(mean) * S*D = max(MS_seed - MS_res, 0) + max(MS_day - MS_res, 0) + MS_res: a linear
        # combination of mean squares, whose degrees of freedom Satterthwaite's formula gives
        seed_on, day_on = ms_seed > ms_res, ms_day > ms_res
        terms = [(seed_on * ms_seed / (s * d), s - 1), (day_on * ms_day / (s * d), d - 1),
                 ((1 - seed_on - day_on) * ms_res / (s * d), (s - 1) * (d - 1))]
    variance = sum(v for v, _ in terms)
    if variance <= 0:
        return mean, None, 0.0
    df = variance ** 2 / sum(v ** 2 / k for v, k in terms if v != 0)
    half = stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(variance)
    return mean, [mean - half, mean + half], float(df)
