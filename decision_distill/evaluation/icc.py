"""How much a teacher's answers vary between runs: ICC and the other per-source statistics of
the stability stage.

A source of variation gives a table of readings `p[state, run]`: P(action) of one
state in one run, NaN where that run gave no parsed answer. Runs are the columns
(repeats, wordings, batch layouts). Definitions:

- mean_state_std: the standard deviation of a state's readings across runs
  (ddof=1, states with at least two readings), averaged over states;
- mard: mean absolute relative difference, |a - b| / mean(a, b) over every pair of
  runs on every state where both have a reading; pairs whose mean is 0 are skipped;
- icc2 / icc3: ICC(2,1) (two-way random effects, absolute agreement) and ICC(3,1)
  (two-way mixed, consistency) with 95 % confidence intervals, from pingouin,
  over the states every run answered. The states are the targets, the runs the raters.

A source whose every state has std 0 measured no variation: its ICCs are then
undefined (0/0) and reported as null with that note, never as a perfect 1.0.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings

import numpy as np
import pandas as pd

MEASURED, NONE_MEASURED, TOO_FEW = "measured", "none measured", "too few answers"


def state_stds(p: np.ndarray) -> np.ndarray:
    """Per state, the std of its readings across runs (ddof=1); NaN with fewer than two readings."""
    p = np.asarray(p, dtype=float)
    enough = (~np.isnan(p)).sum(axis=1) >= 2
    stds = np.full(len(p), np.nan)
    if enough.any():
        stds[enough] = np.nanstd(p[enough], axis=1, ddof=1)
        # Identical readings have std exactly 0 (the mean's rounding would leave ~1e-19).
        stds[enough & (np.nanmax(p, axis=1, initial=-np.inf) == np.nanmin(p, axis=1, initial=np.inf))] = 0.0
    return stds


def variation(p: np.ndarray) -> str:
    stds = state_stds(p)
    measurable = stds[~np.isnan(stds)]
    if len(measurable) < 2:
        return TOO_FEW
    return NONE_MEASURED if np.all(measurable == 0) else MEASURED


def mard(p: np.ndarray) -> float | None:
    """Mean absolute relative difference over pairs of runs (see the module docstring)."""
    p = np.asarray(p, dtype=float)
    diffs = []
    for a, b in itertools.combinations(range(p.shape[1]), 2):
        x, y = p[:, a], p[:, b]
        mean = (x + y) / 2
        usable = ~np.isnan(x) & ~np.isnan(y) & (mean != 0)
        diffs.append(np.abs(x - y)[usable] / mean[usable])
    values = np.concatenate(diffs) if diffs else np.array([])
    return float(values.mean()) if len(values) else None


@contextlib.contextmanager
def _full_precision_ci():
    """pingouin rounds its CI95 column to two decimals by default; keep every digit."""
    import pingouin

    saved = dict(pingouin.options)
    pingouin.options.pop("round.column.CI95", None)
    try:
        yield
    finally:
        pingouin.options.clear()
        pingouin.options.update(saved)


def icc(p: np.ndarray) -> dict[str, dict | None]:
    """ICC(2,1) and ICC(3,1) with 95 % CIs over the states that every run answered:
    {"icc2": {"value", "ci95"}, "icc3": {...}}; each None when fewer than two such states."""
    import pingouin

    p = np.asarray(p, dtype=float)
    complete = p[~np.isnan(p).any(axis=1)]
    if len(complete) < 2 or p.shape[1] < 2:
        return {"icc2": None, "icc3": None}
    states, runs = np.indices(complete.shape)
    long = pd.DataFrame({"state": states.ravel(), "run": runs.ravel(), "p": complete.ravel()})
    with _full_precision_ci(), warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # pingouin's own divide-by-zero and pandas deprecation notices
        table = pingouin.intraclass_corr(long, targets="state", raters="run", ratings="p").set_index("Type")

    def one(kind: str) -> dict | None:
        value, (low, high) = table.loc[kind, "ICC"], table.loc[kind, "CI95"]
        if not np.isfinite([value, low, high]).all():
            return None
        return {"value": float(value), "ci95": [float(low), float(high)]}

    return {"icc2": one("ICC(A,1)"), "icc3": one("ICC(C,1)")}


def summarize(p: np.ndarray, runs: list[str]) -> dict:
    """Every statistic of the module docstring for one source's readings [states, runs]."""
    p = np.asarray(p, dtype=float)
    stds = state_stds(p)
    found = variation(p)
    answered = ~np.isnan(p)
    summary = {
        "runs": list(runs),
        "states": int(p.shape[0]),
        "readings": int(answered.sum()),
        "missing_readings": int((~answered).sum()),
        "variation": found,
        "mean_state_std": None if np.isnan(stds).all() else float(np.nanmean(stds)),
        "max_state_std": None if np.isnan(stds).all() else float(np.nanmax(stds)),
        "mard": mard(p),
        "icc_states": int((answered.all(axis=1)).sum()),
    }
    if found == MEASURED:
        summary |= icc(p)
    else:
        summary |= {"icc2": None, "icc3": None,
                    "icc_note": f"variation {found}: the ICC is undefined, not a finding of perfect agreement"}
    return summary
