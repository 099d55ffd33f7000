"""Run a simulation's seeded replicates with one decider (mesa.batch_run) and return one row
per (replicate, tick)."""

from __future__ import annotations

import time

import mesa
import pandas as pd

from .config import DilemmaConfig, MarketConfig
from .dilemma import DilemmaModel
from .market import MarketModel

# The series each simulation's fidelity report is read from: (per-tick count, evening total).
SERIES = {"market": "sales", "dilemma": "cooperation"}


def model_class(config):
    return MarketModel if isinstance(config, MarketConfig) else DilemmaModel


def run_replicates(config: MarketConfig | DilemmaConfig, scenario, decider, population: int,
                   seeds: list[int], logs: list | None = None) -> tuple[pd.DataFrame, float]:
    """(rows: seed, tick and every DataCollector column; wall seconds). Same seed, same
    population, weather and draws: only the decider differs between deciders' runs.
    With `logs` (market only), each replicate appends (seed, its per-decision log) to it."""
    ticks = config.clock.ticks if isinstance(config, MarketConfig) else config.rounds
    extra = {"log_sink": [logs]} if logs is not None else {}
    start = time.perf_counter()
    # Objects go in one-element lists: batch_run sweeps over any iterable it is given.
    rows = mesa.batch_run(model_class(config), {"config": [config], "scenario": [scenario], "decider": [decider],
                                                "population": [population], "seed": list(seeds), **extra},
                          number_processes=1, iterations=1, data_collection_period=1, max_steps=ticks,
                          display_progress=False)
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(rows).drop(columns=["config", "scenario", "decider", "population", "RunId", "iteration", *extra])
    return frame.rename(columns={"Step": "tick"}).sort_values(["seed", "tick"]).reset_index(drop=True), seconds
