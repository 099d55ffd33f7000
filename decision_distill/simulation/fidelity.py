"""Population-level fidelity: does a simulation driven by a decider behave like the same
simulation driven by the teacher?

Every decider runs the same seeded replicates as the teacher (same visitors, weather and
RNG seed; only the decisions differ). Per decider against the teacher run:

  total_diff        mean over replicates of (decider's total - teacher's total) of the
                    simulation's series (market: sales per evening; dilemma: cooperation
                    rate summed over rounds), with a bootstrap interval over replicates
  spread_ratio      std over replicates of the decider's totals / the teacher's: 1 means the
                    same day-to-day spread; a decider can match the mean and miss this
                    (interval: resamples where the teacher's totals have no spread are dropped)
  wasserstein       Wasserstein distance between the per-tick values pooled over replicates
  jsd               Jensen-Shannon divergence (base 2) between the profiles over ticks (the
                    series' share at each tick): when in the evening (which round) it happens
  groups            per trait group (market): the buy rate per decision, teacher and decider,
                    and their difference with an interval

Intervals resample replicates (paired: a resample takes the same replicates from both runs)
by stats.bootstrap (scipy.stats.bootstrap, percentile method).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from ..stats.bootstrap import bootstrap_interval
from ..stats.metrics import jsd


def _matrix(rows: pd.DataFrame, column: str) -> np.ndarray:
    """[replicates, ticks] of one column, ticks 1.. only: tick 0 is the DataCollector's step-0
    row (before anyone decided), the same in every run, so it would only dilute the distances."""
    rows = rows[rows["tick"] > 0]
    return rows.pivot(index="seed", columns="tick", values=column).sort_index().to_numpy(float)


def replicate_interval(statistic, replicates: int, resamples: int, confidence: float, seed: int):
    """(value on all replicates, [low, high]) of statistic(replicate indices); no interval with
    fewer than 2 replicates. Resamples where the statistic is undefined (NaN: a spread ratio on
    a resample that repeats one day) are left out of the percentiles."""
    idx = np.arange(replicates)
    ci = bootstrap_interval(statistic, idx, resamples=resamples, confidence=confidence, seed=seed)
    return float(statistic(idx)), (list(ci) if ci is not None else None)


def _profile(m: np.ndarray) -> np.ndarray:
    total = m.sum(axis=0)
    return total / total.sum() if total.sum() > 0 else np.full(len(total), 1 / len(total))


def _std_ratio(D: np.ndarray, T: np.ndarray) -> float:
    """std of the decider's daily totals / the teacher's; NaN where a resample has no teacher spread."""
    t = T.sum(axis=1).std(ddof=1) if len(T) > 1 else 0.0
    return float(D.sum(axis=1).std(ddof=1) / t) if t > 0 else float("nan")


def compare(teacher: pd.DataFrame, decider: pd.DataFrame, series: str, resamples: int, confidence: float,
            seed: int) -> dict:
    T, D = _matrix(teacher, series), _matrix(decider, series)
    r = len(T)
    ci = lambda f: replicate_interval(f, r, resamples, confidence, seed)  # noqa: E731
    diff, diff_ci = ci(lambda i: (D[i].sum(axis=1) - T[i].sum(axis=1)).mean())
    w, w_ci = ci(lambda i: wasserstein_distance(D[i].ravel(), T[i].ravel()))
    j, j_ci = ci(lambda i: jsd(_profile(D[i]), _profile(T[i])))
    total, total_ci = ci(lambda i: D[i].sum(axis=1).mean())
    t_std, d_std = (M.sum(axis=1).std(ddof=1) if r > 1 else 0.0 for M in (T, D))
    ratio, ratio_ci = (ci(lambda i: _std_ratio(D[i], T[i])) if t_std > 0 else (None, None))
    block = {
        "total": total, "total_ci": total_ci, "total_teacher": float(T.sum(axis=1).mean()),
        "total_diff": diff, "total_diff_ci": diff_ci,
        "total_std": float(d_std), "total_std_teacher": float(t_std),
        "spread_ratio": ratio, "spread_ratio_ci": ratio_ci,
        "wasserstein": w, "wasserstein_ci": w_ci, "jsd": j, "jsd_ci": j_ci,
    }
    groups = [c for c in teacher.columns if c.startswith("buy_rate[")]
    if groups:
        block["groups"] = {}
        last_t = teacher[teacher["tick"] == teacher["tick"].max()].sort_values("seed")
        last_d = decider[decider["tick"] == decider["tick"].max()].sort_values("seed")
        for g in groups:
            t, d = last_t[g].to_numpy(float), last_d[g].to_numpy(float)
            value, interval = ci(lambda i: np.nanmean(d[i] - t[i]))
            block["groups"][g[len("buy_rate["):-1]] = {"buy_rate": float(np.nanmean(d)),
                                                       "buy_rate_teacher": float(np.nanmean(t)),
                                                       "diff": value, "diff_ci": interval}
    return block


def teacher_summary(teacher: pd.DataFrame, series: str, resamples: int, confidence: float, seed: int) -> dict:
    """The teacher run's own total with an interval over replicates."""
    T = _matrix(teacher, series)
    total, total_ci = replicate_interval(lambda i: T[i].sum(axis=1).mean(), len(T), resamples, confidence, seed)
    return {"total": total, "total_ci": total_ci,
            "total_std": float(T.sum(axis=1).std(ddof=1)) if len(T) > 1 else 0.0}
