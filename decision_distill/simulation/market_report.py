"""The market's own reports, read from its decision logs: FQE of every decider, the gap
diagnostics, and the prefetch that lets the teacher answer the market's states in full batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import CONTEXT_BITS, MarketConfig
from .fqe import fqe_report
from .gap import gap_report
from .market import context_table, persona_traits, states_frame
from .policy import ConstantPolicy
from .run import run_replicates


PREFETCH_RATES = (0.0, 0.1, 0.3, 0.6)  # P(buy) of the constant deciders whose days list the states to prefetch


def prefetch_states(config: MarketConfig, scenario, policies: list, population: int, seeds: list[int]) -> int:
    """Ask `policies` (the teacher, the tuned small LM: answers through prompts) every distinct
    state of the market's days in one batched call each, before their own days run.

    Visitors decide once per tick, so inside a day a prompt policy meets a handful of new
    states per tick and answers them in batches far below its batch size (a third of the
    throughput on 2 cores, and a second or more of overhead per call for the small LM). Which
    states occur depends mostly on what no decider changes (personas, clock, weather, meals);
    who is still deciding depends on the decisions, so constant deciders from never to often
    buying (PREFETCH_RATES) find nearly all of them; a state they miss is asked when its day
    meets it. The answers are the same as asked one tick at a time: every answer goes
    through the answer cache by state. Returns the number of distinct states prefetched."""
    logs: list = []
    for rate in PREFETCH_RATES:
        run_replicates(config, scenario, ConstantPolicy(rate, scenario.schema(), "prefetch"), population, seeds, logs)
    log = pd.concat([day for _, day in logs], ignore_index=True)
    distinct = log.drop_duplicates(["traits", "contexts", "weather", *number_features(scenario)]).reset_index(drop=True)
    trait_sets = persona_traits(config, scenario)
    for policy in policies:  # one batched call per weather, the rows' states as prob_on_log builds them
        prob_on_log(policy, scenario, trait_sets)(distinct)
    return len(distinct)


def generated_states(decisions: Path) -> pd.DataFrame | None:
    """The generate stage's states with a readable teacher answer (what students learn from), for
    gap's state_shift; None where there is no such table."""
    from ..data.split import usable_rows

    return usable_rows(pd.read_parquet(decisions)) if Path(decisions).exists() else None


def number_features(scenario) -> list[str]:
    """The scenario's number features: a market on it logs each as a column (its `numbers`)."""
    return [f.name for f in scenario.features if f.kind == "number"]


def prob_on_log(decider, scenario, trait_sets: list[list[str]]):
    """`decider` as a function of decision-log rows (their traits, contexts and weather codes,
    and number features) -> P(buy) per row, one batched call per weather."""
    numbers = number_features(scenario)

    def on_rows(rows):
        out = np.empty(len(rows))
        for weather, idx in rows.groupby("weather").indices.items():
            # each distinct state once: a day's log repeats its states many times over
            codes = np.stack([rows[c].to_numpy(dtype=float)[idx] for c in ("traits", "contexts", *numbers)], axis=1)
            distinct, inverse = np.unique(codes, axis=0, return_inverse=True)
            frame = states_frame(trait_sets, context_table(scenario, weather), distinct[:, 0].astype(int),
                                 distinct[:, 1].astype(int), {n: distinct[:, 2 + i] for i, n in enumerate(numbers)})
            out[idx] = decider.prob(frame)[inverse.ravel()]
        return out
    return on_rows


def market_gap(config, scenario, deciders: dict, logs: dict, blocks: dict, generated) -> dict:
    """gap.gap_report for every decider, on the teacher-driven days' logs (the teacher's P(buy) is
    in them: no teacher call), against each decider's total_diff in `blocks`."""
    trait_sets = persona_traits(config, scenario)
    fallbacks = {name: d.fallbacks for name, d in deciders.items()}
    try:
        return gap_report(dict(logs["teacher"]), {n: prob_on_log(d, scenario, trait_sets) for n, d in deciders.items()},
                          {n: blocks[n].get("total_diff") for n in deciders}, generated, scenario, trait_sets)
    finally:  # the gap's queries are not simulation decisions
        for name, decider in deciders.items():
            decider.fallbacks = fallbacks[name]


def market_fqe(config, scenario, deciders: dict, logs: dict, sim) -> dict:
    """fqe.fqe_report for every decider (the teacher's own, on-policy, as a check), from the
    teacher-driven days' logs (their P(buy) column is the behaviour policy), against each
    decider's own days."""
    trait_sets = persona_traits(config, scenario)
    by_seed = {name: dict(days) for name, days in logs.items()}
    fallbacks = {name: d.fallbacks for name, d in deciders.items()}
    report = fqe_report(by_seed["teacher"], by_seed, {n: prob_on_log(d, scenario, trait_sets) for n, d in deciders.items()},
                        len(config.visitors.personas), config.clock.ticks, len(CONTEXT_BITS),
                        config.clock.tick_minutes / 60, config.price, config.gamma, sim.confidence)
    for name, decider in deciders.items():  # FQE's own queries are not simulation decisions
        decider.fallbacks = fallbacks[name]
    return report


