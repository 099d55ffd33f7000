"""Run a simulation's seeded replicates with one decider and return one row per (replicate, tick)."""

from __future__ import annotations

import time

import pandas as pd

from .config import DilemmaConfig, MarketConfig
from .dilemma import DilemmaModel
from .market import DecisionMemo, MarketModel

# The series each simulation's fidelity report is read from: (per-tick count, evening total).
SERIES = {"market": "sales", "dilemma": "cooperation"}


def model_class(config):
    return MarketModel if isinstance(config, MarketConfig) else DilemmaModel


def run_replicates(config: MarketConfig | DilemmaConfig, scenario, decider, population: int,
                   seeds: list[int], logs: list | None = None) -> tuple[pd.DataFrame, float]:
    """(rows: seed, tick and every DataCollector column; wall seconds). Same seed, same
    population, weather and draws: only the decider differs between deciders' runs.
    Tick 0 is the DataCollector's step-0 row (the opening: nobody has decided yet); tick k
    holds the k-th tick's (round's) counts. With `logs` (market only), each replicate appends
    (seed, its decision log, MarketModel.decision_log) to it.

    Each replicate is a model built with `rng=seed` and run to its end. mesa.batch_run is not
    used: it returns reporter rows only, so the decision log (a DataCollector table) would be
    lost with the model, and in mesa 3.3.1 it drops the last collection of a model that also
    collects at step 0 (mesa issue #2514). A sweep over seeds is all that is needed here."""
    cls = model_class(config)
    # The market asks its decider once per distinct state over all replicates (market.DecisionMemo).
    shared = {"memo": DecisionMemo()} if cls is MarketModel else {}
    frames = []
    start = time.perf_counter()
    for seed in seeds:
        model = cls(config, scenario, decider, population=population, rng=seed, log_decisions=logs is not None,
                    **shared)
        model.run_model()
        frame = model.datacollector.get_model_vars_dataframe()
        frames.append(frame.rename_axis("tick").reset_index().assign(seed=seed))
        if logs is not None:
            logs.append((seed, model.decision_log()))
    seconds = time.perf_counter() - start
    rows = pd.concat(frames, ignore_index=True)
    return rows[["seed", "tick", *(c for c in rows.columns if c not in ("seed", "tick"))]], seconds
