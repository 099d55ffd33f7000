"""States where a simulation goes: market days driven by the teacher, for generate to ask about
(generate.rollouts; the DAgger idea, its first round).

A student learns P(action | state) from the states generate asks about. Random states spread
over everything the scenario can describe; a simulation's visitors live in a corner of it (a
dozen personas, the contexts and numbers its clock produces), so most of a market's decisions
fall on states no random draw produced. Here the teacher itself drives market days on seeds
of their own (generate.rollouts.seed, far from simulate.seed's days, so the days the simulate
stage evaluates on stay unseen), and the distinct states its visitors decided on are drawn in
proportion to how often they were visited. The teacher answers each of them while driving
(through the answer cache), so the rollouts cost no call beyond the states they yield, and
generate then reads those answers back from the cache.

A first round only: rollouts driven by trained students (DAgger's later rounds, where a
student's own mistakes take the visitors elsewhere) would need students before generate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.scenario import Scenario, State, state_key
from ..data.states import states_from_frame
from .config import MarketConfig, rollout_config
from .market import context_table, persona_traits, states_frame
from .prompt_policy import TeacherPolicy
from .run import run_replicates


def visited_states(config: MarketConfig, scenario: Scenario, log) -> list[State]:
    """The scenario state of each decision in a market day's decision log."""
    numbers = {f.name: log[f.name].to_numpy() for f in scenario.features if f.kind == "number"}
    weather = log["weather"].iloc[0] if len(log) else "none"
    frame = states_frame(persona_traits(config, scenario), context_table(scenario, weather),
                         log["traits"].to_numpy(), log["contexts"].to_numpy(), numbers)
    return states_from_frame(frame, scenario)


def rollout_states(params, scenario: Scenario, teacher_dir: str | Path, cache, n: int,
                   exclude: set[str]) -> tuple[list[State], dict]:
    """Up to `n` distinct states from teacher-driven market days, none of whose keys is in
    `exclude` (the random states already drawn): days run one at a time until `n` such states
    were visited or rollouts.max_days ran out; then `n` of them are drawn without replacement
    in proportion to their visits (seeded), and kept in the order they were first visited.
    Returns (states, summary: days, decisions, distinct states, teacher calls)."""
    r = params.generate.rollouts
    config = rollout_config(r.simulation, scenario)
    teacher = TeacherPolicy(teacher_dir, scenario, params, cache, name="rollouts")
    visits: dict[str, list] = {}  # key -> [state, visits], in the order first visited
    days = decisions = 0
    while days < r.max_days and len(visits) < n:
        logs: list = []
        run_replicates(config, scenario, teacher, r.population, [r.seed + days], logs)
        days += 1
        for state in visited_states(config, scenario, logs[0][1]):
            decisions += 1
            key = state_key(state)
            if key not in exclude:
                visits.setdefault(key, [state, 0])[1] += 1
        print(f"rollouts: day {days} of at most {r.max_days}: {min(len(visits), n)} of {n} states found "
              f"({decisions} decisions)", flush=True)
    counts = np.array([v[1] for v in visits.values()], dtype=float)
    rng = np.random.default_rng([r.seed, n])
    picked = (np.sort(rng.choice(len(counts), size=min(n, len(counts)), replace=False, p=counts / counts.sum()))
              if len(counts) else np.zeros(0, dtype=int))
    states = [list(visits.values())[i][0] for i in picked]
    summary = {"simulation": config.name, "days": days, "decisions": decisions, "distinct_states": len(visits),
               "states": len(states), "teacher_calls": teacher.computed}
    return states, summary
