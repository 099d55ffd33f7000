"""The Christmas market (Mesa): visitors whose situation changes over an evening, and a
decider (decision_distill.simulation.policy) that says how likely each is to buy an ice cream.

Each tick every present visitor decides once whether to buy an ice cream now, except those
who already bought under visitors.decide: until_bought (the file's setting and the default;
every_tick leaves nobody out): the model writes each visitor's state (traits for life,
contexts from the clock, the day's weather, the discount hour, what they last ate and whether
they stand next to the ice-cream stall), asks the decider for P(buy) for all of them in one
batched call, and samples the actions with the model's seeded RNG.

Visitor state lives in numpy arrays, one row per visitor, so a tick is vectorised instead
of stepping 10,000 agents one by one in Python (which alone would cost more than the MLP's
decisions): a deliberate speed choice, so no Mesa Agent or AgentSet is created. Mesa's own
parts are used as Mesa users expect: the model's seeded `rng`, `self.steps`, and a
DataCollector that records at step 0 (the opening, before anyone decided) and after every
tick, with the decision log as one of its tables.

A visitor's state at a tick is asked about only if the scenario can produce it
(Scenario.state_problem): the ice-cream scenario describes every moment by at least one
context, so a visitor with nothing going on (not hungry, not just eaten, not after work, no
weather, no discount, not at the ice-cream stall) does not decide that tick. The teacher was
never asked about such a moment and no student trained on one, and no context the scenario
defines is neutral enough to stand in for "nothing"; nothing prompts an ice cream then.

Without `numbers` in the file the states are discrete (christmas_market.yaml), so the same
states recur across visitors, ticks and replicates: a teacher answers each one once (answer
cache), and a lookup of its answers would serve the market. With `numbers`
(christmas_market_evening.yaml) the state also carries the scenario's number features, which
change as the evening runs (the temperature falls, minutes since a meal grow, the price drops
in the discount hour): the states then hardly repeat, and a decider must generalise.
"""

from __future__ import annotations

import mesa
import numpy as np
import pandas as pd

from ..data.scenario import Scenario
from .config import CONTEXT_BITS, MarketConfig


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
                 contexts: np.ndarray, numbers: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The scenario states behind persona and context codes (and the number features' values)."""
    return pd.DataFrame({"traits": [trait_sets[c] for c in traits], "contexts": [table[c] for c in contexts],
                         **(numbers or {})})


def on_scale(feature, values: np.ndarray) -> np.ndarray:
    """Values rounded to a scenario number feature's step and clipped to its range, as the
    scenario's own states are (rounding first: the step's grid starts at `low`)."""
    grid = feature.low + np.round((np.asarray(values, dtype=float) - feature.low) / feature.step) * feature.step
    return np.clip(np.round(grid, 10), feature.low, feature.high)


# One row per tick, each column holding that tick's decisions as an array: the model is
# vectorised, and one add_table_row per decision would cost more than the decisions themselves.
# since_arrival (ticks) and since_meal (hours) are the visitor's clocks at the decision: the
# contexts say whether they are hungry or after work now, these say for how much longer, and
# how long they may stay (FQE's state, simulation.fqe).
# A market with `numbers` adds one column per number feature (MarketModel.log_columns).
LOG_COLUMNS = ("tick", "row", "traits", "contexts", "p", "buy", "weather", "since_arrival", "since_meal")


class DecisionMemo:
    """One decider's P(buy) by (persona, context) code, kept across the ticks and replicates of
    one simulation (run.run_replicates makes one per decider). Every decider answers a state the
    same way each time it is asked (students in eval mode, the teacher and the tuned LM through
    the answer cache, the references by construction), and without `numbers` the market's states
    recur thousands of times: asking once per state spares a DataFrame, an encoding and a forward
    pass per tick, most of the stage's time. The decider's `fallbacks` still count decisions,
    not states. A context code means other contexts under other weather (context_table), so
    everything is kept per weather, the persona x context table of askable states included."""

    def __init__(self):
        self.askable: dict[str, np.ndarray] = {}  # weather -> [persona, context code] the scenario can produce it
        self._p: dict[str, np.ndarray] = {}       # weather -> [persona * codes + code] P(buy), NaN: not asked yet
        self._unseen: dict[str, np.ndarray] = {}  # the same -> the decider counted it a fallback

    def answer(self, decider, weather: str, frame_of, trait_codes: np.ndarray, context_codes: np.ndarray) -> np.ndarray:
        """P(buy) for each (persona, context code) pair on a day with `weather`, asking `decider`
        only about pairs not asked before, in one batch (`frame_of(trait codes, context codes)`:
        their states)."""
        contexts = self.askable[weather].shape[1]
        if weather not in self._p:
            self._p[weather] = np.full(self.askable[weather].size, np.nan)
            self._unseen[weather] = np.zeros(self.askable[weather].size, dtype=bool)
        p, unseen = self._p[weather], self._unseen[weather]
        keys = trait_codes * contexts + context_codes
        before = decider.fallbacks
        new = np.unique(keys[np.isnan(p[keys])])
        if len(new):
            p[new] = decider.prob(frame_of(new // contexts, new % contexts))
            counted = decider.fallbacks - before
            if counted == len(new):
                unseen[new] = True
            elif counted:  # some were fallbacks: ask which, one state at a time (rare: holdouts only)
                for key in new:
                    ahead = decider.fallbacks
                    decider.prob(frame_of(np.array([key // contexts]), np.array([key % contexts])))
                    unseen[key] = decider.fallbacks > ahead
        decider.fallbacks = before + int(unseen[keys].sum())
        return p[keys]


class MarketModel(mesa.Model):
    def __init__(self, config: MarketConfig, scenario: Scenario, decider, population: int = 500,
                 rng: int | None = None, log_decisions: bool = False, memo: DecisionMemo | None = None):
        super().__init__(rng=rng)
        self.config, self.decider, self.n, self.log_decisions = config, decider, population, log_decisions
        self.memo = memo or DecisionMemo()
        self.ticks = config.clock.ticks
        self.hours_per_tick = config.clock.tick_minutes / 60
        rng = self.rng
        self._draw_traits(scenario, rng)
        v = config.visitors
        self.worker = rng.random(population) < v.workers
        work_tick = min(max(int(np.ceil((v.workers_from - config.clock.open) / self.hours_per_tick)), 0),
                        self.ticks - 1)
        self.arrival = np.where(self.worker, rng.integers(work_tick, self.ticks, population),
                                rng.integers(0, max(self.ticks - v.stay_ticks[0], 1), population))
        self.leave = np.minimum(self.arrival + rng.integers(v.stay_ticks[0], v.stay_ticks[1] + 1, population),
                                self.ticks)
        self.last_meal = rng.uniform(*config.meals.lunch, population)
        self.bought = np.zeros(population, dtype=bool)
        self.trait_buys = np.zeros(len(self.trait_names))  # per trait: purchases, decisions so far
        self.trait_decisions = np.zeros(len(self.trait_names))
        names = list(config.weather)
        self.weather = str(rng.choice(names, p=np.asarray(list(config.weather.values())) / sum(config.weather.values())))
        self.stalls = [s.sells for s in config.stalls.values()]
        self.context_table = self._contexts_by_code(scenario)
        # askable[persona, context code]: the scenario can produce that state (see the module docstring);
        # numbers are always on the scenario's scale (on_scale), so any in-range value stands for them here
        numbers = {f.name: f.low for f in scenario.features if f.kind == "number"}
        if self.weather not in self.memo.askable:
            self.memo.askable[self.weather] = np.array([
                [scenario.state_problem({"traits": traits, "contexts": contexts, **numbers}) is None
                 for contexts in self.context_table] for traits in self.trait_sets])
        self.askable = self.memo.askable[self.weather]
        self._draw_numbers(scenario, rng)
        self.log_columns = (*LOG_COLUMNS, *self.number_features)
        self.sales = self.decisions = 0
        reporters = {"sales": "sales", "decisions": "decisions",
                     "present": lambda m: int(m._present().sum())}
        for j, trait in enumerate(self.trait_names):
            reporters[f"buy_rate[{trait}]"] = lambda m, j=j: m._buy_rate(j)
        self.datacollector = mesa.DataCollector(model_reporters=reporters, tables={"decisions": list(self.log_columns)})
        self.datacollector.collect(self)  # step 0: the opening, before anyone decided

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

    def _draw_numbers(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """The day's temperature at opening and price (drawn after everything else, so a market
        without numbers draws exactly what it always drew)."""
        numbers = self.config.numbers
        self.number_features = {f.name: f for f in scenario.features if f.name in numbers.names()}
        if numbers.temperature:
            self.temperature_at_open = float(rng.uniform(*numbers.temperature.at_open))
        if numbers.price:
            self.base_price = float(rng.uniform(*numbers.price.base))

    def _numbers(self, hour: float, since_meal: np.ndarray) -> dict[str, np.ndarray]:
        """Each number feature's value for the deciding visitors (their hours since a meal)."""
        numbers, n = self.config.numbers, len(since_meal)
        values = {}
        if numbers.temperature:
            values["temperature"] = np.full(n, self.temperature_at_open
                                            + numbers.temperature.per_hour * (hour - self.config.clock.open))
        if numbers.minutes_since_meal:
            values["minutes_since_meal"] = since_meal * 60
        if numbers.price:
            discount = self.config.discount[0] <= hour < self.config.discount[1]
            values["price"] = np.full(n, self.base_price * (numbers.price.discount if discount else 1.0))
        return {name: on_scale(self.number_features[name], v) for name, v in values.items()}

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
        # Mesa counts the step before calling it: step s (from 1) is clock tick t = s - 1
        t = self.steps - 1
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
        deciding = present & self.askable[self.trait_code, code]
        if self.config.visitors.decide == "until_bought":
            deciding &= ~self.bought
        rows = np.flatnonzero(deciding)
        numbers = self._numbers(hour, since[rows])
        p = self.decide(self.trait_code[rows], code[rows], numbers)
        buys = rng.random(len(rows)) < p
        self.last_meal[rows[buys]] = hour
        self.bought[rows[buys]] = True
        self.trait_decisions += self.has_trait[rows].sum(axis=0)
        self.trait_buys += self.has_trait[rows[buys]].sum(axis=0)
        self.sales, self.decisions = int(buys.sum()), len(rows)
        if self.log_decisions:
            self.datacollector.add_table_row("decisions", {
                "tick": np.full(len(rows), self.steps), "row": rows, "traits": self.trait_code[rows],
                "contexts": code[rows], "p": np.asarray(p, dtype=float), "buy": buys,
                "weather": np.full(len(rows), self.weather, dtype=object),
                "since_arrival": t - self.arrival[rows], "since_meal": since[rows], **numbers})
        self.datacollector.collect(self)
        if t + 1 >= self.ticks:
            self.running = False

    def decision_log(self) -> pd.DataFrame:
        """One row per decision (log_decisions=True): tick (Mesa's step, from 1), visitor row,
        persona and context codes, P(buy), whether they bought, the day's weather, ticks since
        the visitor arrived and hours since their last meal (before this decision's purchase),
        and each number feature's value in the state decided on."""
        table = self.datacollector.get_table_dataframe("decisions")
        if not len(table):
            return pd.DataFrame({c: [] for c in self.log_columns})
        return pd.DataFrame({c: np.concatenate(table[c].to_list()) for c in self.log_columns})

    def decide(self, trait_codes: np.ndarray, context_codes: np.ndarray,
               numbers: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """P(buy) for these visitors, one batched call to the decider."""
        if not len(trait_codes):
            return np.zeros(0)
        if numbers:  # the states hardly repeat: nothing to remember
            return self.decider.prob(states_frame(self.trait_sets, self.context_table, trait_codes, context_codes,
                                                  numbers))
        return self.memo.answer(self.decider, self.weather,
                                lambda t, c: states_frame(self.trait_sets, self.context_table, t, c),
                                trait_codes, context_codes)
