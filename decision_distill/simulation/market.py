"""The Christmas market (Mesa): visitors whose situation changes over an evening, and a
decider (decision_distill.simulation.policy) that says how likely each is to buy an ice cream.

Each tick every present visitor decides once whether to buy an ice cream now: the model writes
each visitor's state (traits for life, contexts from the clock, the day's weather, the
discount hour, what they last ate and whether they stand next to the ice-cream stall),
asks the decider for P(buy) for all of them in one batched call, and samples the
actions with the model's seeded RNG. Visitor state lives in numpy arrays, one row per
visitor, so a tick is vectorised instead of stepping 10,000 agents one by one in Python
(which alone would cost more than the MLP's decisions); no Mesa agent is created.

States are discrete on purpose (no continuous feature), so the same states recur
across visitors, ticks and replicates and a teacher answers each one once (answer cache).
"""

from __future__ import annotations

import mesa
import numpy as np
import pandas as pd

from ..data.scenario import Scenario
from .config import MarketConfig

# Context bits of a visitor at a tick; their ids are the scenario's (ice_cream.yaml).
CONTEXT_BITS = ("hungry", "after_lunch", "after_work", "weather", "discount", "truck_nearby")


def context_table(scenario: Scenario, weather: str) -> list[list[str]]:
    """Context bitmask -> the context ids it stands for on a day with `weather`, in the scenario's order."""
    order = list(next(f for f in scenario.features if f.name == "contexts").texts)
    ids = [weather if b == "weather" else b for b in CONTEXT_BITS]
    table = []
    for code in range(2 ** len(CONTEXT_BITS)):
        present = {ids[i] for i in range(len(ids)) if code >> i & 1 and ids[i] != "none"}
        table.append(sorted(present, key=order.index))
    return table


def persona_traits(config: MarketConfig, scenario: Scenario) -> list[list[str]]:
    """Each persona's traits, in the scenario's order (as the dataset lists them)."""
    order = list(next(f for f in scenario.features if f.name == "traits").texts)
    return [sorted(set(p.traits), key=order.index) for p in config.visitors.personas]


def states_frame(trait_sets: list[list[str]], table: list[list[str]], traits: np.ndarray,
                 contexts: np.ndarray) -> pd.DataFrame:
    """The scenario states behind persona and context codes."""
    return pd.DataFrame({"traits": [trait_sets[c] for c in traits], "contexts": [table[c] for c in contexts]})


class MarketModel(mesa.Model):
    def __init__(self, config: MarketConfig, scenario: Scenario, decider, population: int = 500,
                 seed: int | None = None, log_decisions: bool = False, log_sink: list | None = None):
        super().__init__(seed=seed)
        self.config, self.decider, self.n = config, decider, population
        self.seed_value, self.log_sink = seed, log_sink  # log_sink: gets (seed, decision log) at the end
        self.ticks = config.clock.ticks
        self.hours_per_tick = config.clock.tick_minutes / 60
        rng = self.rng
        self._draw_traits(scenario, rng)
        v = config.visitors
        self.worker = rng.random(population) < v.workers
        work_tick = min(max(int(np.ceil((17.0 - config.clock.open) / self.hours_per_tick)), 0), self.ticks - 1)
        self.arrival = np.where(self.worker, rng.integers(work_tick, self.ticks, population),
                                rng.integers(0, max(self.ticks - v.stay_ticks[0], 1), population))
        self.leave = np.minimum(self.arrival + rng.integers(v.stay_ticks[0], v.stay_ticks[1] + 1, population),
                                self.ticks)
        self.last_meal = rng.uniform(*config.meals.lunch, population)
        self.trait_buys = np.zeros(len(self.trait_names))  # per trait: purchases, decisions so far
        self.trait_decisions = np.zeros(len(self.trait_names))
        names = list(config.weather)
        self.weather = str(rng.choice(names, p=np.asarray(list(config.weather.values())) / sum(config.weather.values())))
        self.stalls = [s.sells for s in config.stalls.values()]
        self.context_table = self._contexts_by_code(scenario)
        self.sales = self.decisions = 0
        # (tick, row, traits code, context code, p, buy) per decision, for FQE and the tests
        self.log = [] if log_decisions or log_sink is not None else None
        reporters = {"sales": "sales", "decisions": "decisions",
                     "present": lambda m: int(m._present().sum())}
        for j, trait in enumerate(self.trait_names):
            reporters[f"buy_rate[{trait}]"] = lambda m, j=j: m._buy_rate(j)
        self.datacollector = mesa.DataCollector(model_reporters=reporters)

    # ---- population -----------------------------------------------------------
    def _draw_traits(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Each visitor is one persona (visitors.personas), drawn by share."""
        personas = self.config.visitors.personas
        order = list(next(f for f in scenario.features if f.name == "traits").texts)
        self.trait_names = [t for t in order if any(t in p.traits for p in personas)]
        shares = np.array([p.share for p in personas])
        self.trait_code = rng.choice(len(personas), size=self.n, p=shares / shares.sum())
        self.trait_sets = persona_traits(self.config, scenario)
        held = np.array([[t in p.traits for t in self.trait_names] for p in personas])
        self.has_trait = held[self.trait_code]

    def _contexts_by_code(self, scenario: Scenario) -> list[list[str]]:
        return context_table(scenario, self.weather)

    # ---- a tick ---------------------------------------------------------------
    def _present(self) -> np.ndarray:
        t = self.steps - 1
        return (self.arrival <= t) & (t < self.leave)

    def _buy_rate(self, j: int) -> float:
        """Purchases per decision so far among visitors holding trait j (NaN before any)."""
        d = self.trait_decisions[j]
        return float(self.trait_buys[j] / d) if d else float("nan")

    def step(self) -> None:
        t = self.steps - 1  # Mesa counts the step before calling it
        hour = self.config.clock.open + t * self.hours_per_tick
        rng, meals = self.rng, self.config.meals
        present = self._present()
        stall = rng.integers(0, len(self.stalls), self.n)
        since = hour - self.last_meal
        hungry = since >= meals.hungry_after_hours
        eats = present & hungry & (np.asarray(self.stalls)[stall] == "food") & (rng.random(self.n) < meals.eat_probability)
        self.last_meal[eats] = hour
        since = hour - self.last_meal
        bits = np.stack([
            since >= meals.hungry_after_hours,
            since < meals.after_lunch_hours,
            self.worker & ((t - self.arrival) * self.hours_per_tick < self.config.visitors.after_work_hours),
            np.full(self.n, self.weather != "none"),
            np.full(self.n, self.config.discount[0] <= hour < self.config.discount[1]),
            np.asarray(self.stalls)[stall] == "ice_cream",
        ], axis=1)
        code = bits.astype(np.int64) @ (1 << np.arange(len(CONTEXT_BITS)))
        rows = np.flatnonzero(present)
        p = self.decide(self.trait_code[rows], code[rows])
        buys = rng.random(len(rows)) < p
        self.last_meal[rows[buys]] = hour
        self.trait_decisions += self.has_trait[rows].sum(axis=0)
        self.trait_buys += self.has_trait[rows[buys]].sum(axis=0)
        self.sales, self.decisions = int(buys.sum()), len(rows)
        if self.log is not None:
            self.log.append(pd.DataFrame({"tick": t, "row": rows, "traits": self.trait_code[rows],
                                          "contexts": code[rows], "p": p, "buy": buys, "weather": self.weather}))
        self.datacollector.collect(self)
        if t + 1 >= self.ticks:
            self.running = False
            if self.log_sink is not None:
                self.log_sink.append((self.seed_value, pd.concat(self.log, ignore_index=True)))

    def decide(self, trait_codes: np.ndarray, context_codes: np.ndarray) -> np.ndarray:
        """P(buy) for these visitors, one batched call to the decider."""
        if not len(trait_codes):
            return np.zeros(0)
        return self.decider.prob(states_frame(self.trait_sets, self.context_table, trait_codes, context_codes))
