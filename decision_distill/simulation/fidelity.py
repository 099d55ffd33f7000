"""Population-level fidelity: does a simulation driven by a decider behave like the same
simulation driven by the teacher?

Every decider runs the same seeded replicates (days) as the teacher (same visitors, weather
and RNG seed; only the decisions differ). A student trained with several seeds runs the days
once per seed, so each number below is first computed per (training seed, day) and then
averaged, with a t interval over seeds x days (stats.crossed: both a retrained student and
another day are what a rerun changes). Per decider against the teacher run:

  total_diff        (decider's total - teacher's total) of the simulation's series (market:
                    sales per evening; dilemma: cooperation rate summed over rounds)
  total             the decider's own total
  wasserstein       Wasserstein distance between the day's per-tick values
  jsd               Jensen-Shannon divergence (base 2) between the day's profiles over ticks
                    (the series' share at each tick): when in the evening (which round) it happens
  groups            per trait group (market): the day's buy rate per decision, teacher and
                    decider, and their difference
  spread_ratio      std over days of the primary student's totals / the teacher's: 1 means
                    the same day-to-day spread (a decider can match the mean and miss this);
                    a percentile bootstrap over days, whose resamples repeat days
  seeds             per training seed, its mean total_diff over days: the spread retraining adds

The point estimate is the mean over seeds x days and the t interval is centred on it, so no
reported estimate lies outside its own interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from ..stats.bootstrap import bootstrap_interval
from ..stats.crossed import crossed_t_interval
from ..stats.metrics import jsd


def _matrix(rows: pd.DataFrame, column: str) -> np.ndarray:
    """[replicates, ticks] of one column, ticks 1.. only: tick 0 is the DataCollector's step-0
    row (before anyone decided), the same in every run, so it would only dilute the distances."""
    rows = rows[rows["tick"] > 0]
    return rows.pivot(index="seed", columns="tick", values=column).sort_index().to_numpy(float)


def replicate_interval(statistic, replicates: int, resamples: int, confidence: float, seed: int):
    """(value on all replicates, [low, high]) of statistic(replicate indices), a percentile
    bootstrap over replicates; no interval with fewer than 2 replicates. Resamples where the
    statistic is undefined (NaN) are left out of the percentiles."""
    idx = np.arange(replicates)
    ci = bootstrap_interval(statistic, idx, resamples=resamples, confidence=confidence, seed=seed)
    return float(statistic(idx)), (list(ci) if ci is not None else None)


def seeds_by_days(values: np.ndarray, confidence: float) -> tuple[float, list[float] | None]:
    """Mean of a [seeds, days] table and its crossed t interval."""
    mean, interval, _ = crossed_t_interval(np.atleast_2d(values), confidence)
    return mean, interval


def _profile(m: np.ndarray) -> np.ndarray:
    """Per row (day): the series' share at each tick (uniform on a day without any)."""
    total = m.sum(axis=-1, keepdims=True)
    return np.where(total > 0, m / np.where(total > 0, total, 1), 1 / m.shape[-1])


def _std_ratio(D: np.ndarray, T: np.ndarray) -> float:
    """std of the decider's daily totals / the teacher's; NaN where a resample has no teacher spread."""
    t = T.sum(axis=1).std(ddof=1) if len(T) > 1 else 0.0
    return float(D.sum(axis=1).std(ddof=1) / t) if t > 0 else float("nan")


def _last_tick(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["tick"] == rows["tick"].max()].sort_values("seed")


def compare(teacher: pd.DataFrame, decider: pd.DataFrame | list[pd.DataFrame], series: str, resamples: int,
            confidence: float, seed: int) -> dict:
    """The fidelity block of one decider; `decider` is its run, or one run per training seed
    (the primary first), each over the teacher's days."""
    runs = decider if isinstance(decider, list) else [decider]
    T = _matrix(teacher, series)
    Ds = np.stack([_matrix(rows, series) for rows in runs])  # [seeds, days, ticks]
    ci = lambda values: seeds_by_days(values, confidence)  # noqa: E731
    diffs = Ds.sum(axis=2) - T.sum(axis=1)[None, :]
    diff, diff_ci = ci(diffs)
    total, total_ci = ci(Ds.sum(axis=2))
    w, w_ci = ci(np.array([[wasserstein_distance(d, t) for d, t in zip(D, T)] for D in Ds]))
    j, j_ci = ci(np.array([[jsd(p, q) for p, q in zip(_profile(D), _profile(T))] for D in Ds]))
    t_std, d_std = (M.sum(axis=1).std(ddof=1) if len(T) > 1 else 0.0 for M in (T, Ds[0]))
    ratio, ratio_ci = (replicate_interval(lambda i: _std_ratio(Ds[0][i], T[i]), len(T), resamples, confidence, seed)
                       if t_std > 0 else (None, None))
    block = {
        "total": total, "total_ci": total_ci, "total_teacher": float(T.sum(axis=1).mean()),
        "total_diff": diff, "total_diff_ci": diff_ci,
        "total_std": float(d_std), "total_std_teacher": float(t_std),
        "spread_ratio": ratio, "spread_ratio_ci": ratio_ci,
        "wasserstein": w, "wasserstein_ci": w_ci, "jsd": j, "jsd_ci": j_ci,
    }
    if len(runs) > 1:
        per_seed = diffs.mean(axis=1)
        block["seeds"] = {"count": len(runs), "total_diff": per_seed.tolist(),
                          "total_diff_sd": float(per_seed.std(ddof=1))}
    groups = [c for c in teacher.columns if c.startswith("buy_rate[")]
    if groups:
        block["groups"] = {}
        last_t, last_ds = _last_tick(teacher), [_last_tick(rows) for rows in runs]
        for g in groups:
            t = last_t[g].to_numpy(float)
            d = np.stack([rows[g].to_numpy(float) for rows in last_ds])  # [seeds, days]
            both = ~np.isnan(d).any(axis=0) & ~np.isnan(t)  # days where the group decided in every run
            value, interval = ci((d - t)[:, both]) if both.any() else (float("nan"), None)
            block["groups"][g[len("buy_rate["):-1]] = {"buy_rate": float(np.nanmean(d)),
                                                       "buy_rate_teacher": float(np.nanmean(t)),
                                                       "diff": value, "diff_ci": interval}
    return block


def teacher_summary(teacher: pd.DataFrame, series: str, confidence: float) -> dict:
    """The teacher run's own total with a t interval over days."""
    totals = _matrix(teacher, series).sum(axis=1)
    total, total_ci = seeds_by_days(totals[None, :], confidence)
    return {"total": total, "total_ci": total_ci, "total_std": float(totals.std(ddof=1)) if len(totals) > 1 else 0.0}
