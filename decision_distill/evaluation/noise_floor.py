"""The teacher's noise floor state by state, and students' distance to it with an interval.

The stability stage measures the floor on the first stability.states states of the test
split, the states the students are scored on: KL(canonical ‖ other wording) and MSE per
state and other wording run (`per_state_floor`, written to data/noise_floor.parquet).
A state's floor is the mean over those runs; the floor is the mean over states, the same
number as metrics/stability.json's noise_floor (states and runs are a full grid).

The evaluate stage divides each student's mean kl and mse by it (`<m>_vs_noise_floor`) and
gives the ratio a percentile bootstrap interval (`ratio_interval`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import UserError
from ..data.scenario import Scenario, State
from ..data.split import usable_rows
from ..data.states import states_from_frame
from ..stats.bootstrap import bootstrap_interval
from ..stats.metrics import kl, kl_per_state, mse, mse_per_state

FLOOR_METRICS = {"kl": kl_per_state, "mse": mse_per_state}


def floor_states(test_split: str | Path | pd.DataFrame, scenario: Scenario, n: int) -> tuple[list[State], list[int]]:
    """The first `n` states of the test split (by state_id, readable teacher answers only)
    and their state ids: the states the students are scored on."""
    frame = test_split if isinstance(test_split, pd.DataFrame) else None
    if frame is None:
        if not Path(test_split).exists():
            raise UserError(f"{test_split}: not found; run the split stage first")
        frame = pd.read_parquet(test_split)
    frame = usable_rows(frame).sort_values("state_id", kind="stable").head(n)
    if len(frame) < 2:
        raise UserError(f"the test split has {len(frame)} state(s) with a readable teacher answer; the noise floor "
                        "needs 2 or more: generate more states or raise split.test")
    return states_from_frame(frame, scenario), frame["state_id"].astype(int).tolist()


def floor_summary(reference: np.ndarray, others: dict[str, np.ndarray]) -> dict:
    """The teacher against itself: KL(reference ‖ other) and MSE between the canonical
    run's distribution and each other run's, [states, options] each, averaged over states
    (as metrics.kl and metrics.mse do for students) and then over the other runs.
    kl_min/kl_max and mse_min/mse_max give the range over runs (the band in the plots)."""
    per_run = {name: {"kl": kl(reference, q), "mse": mse(reference, q)} for name, q in others.items()}
    kls = [r["kl"] for r in per_run.values()]
    mses = [r["mse"] for r in per_run.values()]
    return {
        "kl": float(np.mean(kls)), "mse": float(np.mean(mses)),
        "kl_min": float(min(kls)), "kl_max": float(max(kls)),
        "mse_min": float(min(mses)), "mse_max": float(max(mses)),
        "per_run": per_run,
    }


def per_state_floor(reference: np.ndarray, others: dict[str, np.ndarray], state_ids) -> pd.DataFrame:
    """One row per (other run, state): state_id, run, kl, mse of the canonical answers
    `reference` [states, options] against that run's."""
    parts = [pd.DataFrame({"state_id": np.asarray(state_ids), "run": name,
                           **{m: f(reference, probs) for m, f in FLOOR_METRICS.items()}})
             for name, probs in others.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["state_id", "run", *FLOOR_METRICS])


def floor_by_state(per_run: pd.DataFrame) -> pd.DataFrame:
    """Each state's floor (kl, mse): the mean over the other wording runs, indexed by state_id."""
    return per_run.groupby("state_id")[list(FLOOR_METRICS)].mean()


def floor_intervals(per_run: pd.DataFrame, seed: int, resamples: int = 1000) -> dict:
    """95 % percentile bootstrap intervals of the floor's kl and mse (`kl_ci95`, `mse_ci95`),
    resampling its states: each state's floor is the mean over the wording runs, so the
    runs, which share the states, stay together. None with fewer than two states."""
    by_state = floor_by_state(per_run)
    out = {}
    for m in FLOOR_METRICS:
        ci = bootstrap_interval(lambda v: v.mean(axis=-1), by_state[m].to_numpy(float), resamples=resamples,
                                confidence=0.95, seed=[seed, len(out)], vectorized=True)
        out[f"{m}_ci95"] = list(ci) if ci is not None else None
    return out


def ratio_interval(student: np.ndarray, floor: np.ndarray, resamples: int, confidence: float,
                   seed: int | list[int]) -> list[float] | None:
    """Percentile bootstrap interval of mean(student) / mean(floor), per-state values each.

    The two samples are resampled independently, each with replacement within itself:
    the student's states of the split being scored, and the floor's states. Not paired,
    because the floor's states are only the first stability.states test states and a
    holdout split may share none of them. For the test split this ignores any correlation
    between a state's student error and its wording sensitivity; a positive one (states the
    teacher is unsure of are hard for both) makes this interval wider than a paired one,
    i.e. conservative. None with fewer than two values on either side or a zero floor.
    """
    student, floor = np.asarray(student, float), np.asarray(floor, float)
    if len(student) < 2 or len(floor) < 2 or not floor.mean() > 0:
        return None
    ci = bootstrap_interval(lambda s, f: s.mean(axis=-1) / f.mean(axis=-1), student, floor, paired=False,
                            resamples=resamples, confidence=confidence, seed=seed, vectorized=True)
    return list(ci) if ci is not None else None
