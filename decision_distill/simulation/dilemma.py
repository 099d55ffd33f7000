"""An iterated social dilemma (Mesa) on the games scenario: the same simulation layer as the
market on another scenario, to show nothing in it is specific to ice cream.

Players are paired for the whole run (population // 2 pairs); like the market's visitors they
are rows of numpy arrays (player 2k and 2k+1 are partners), not Mesa agents: vectorised rounds,
as in the market. Each round every player decides whether to cooperate, all in one batched
call to the decider; `history` is what the partner did the round before (first_game in round
one). The DataCollector records at step 0 (before the first round: rates undefined, NaN) and
after every round the cooperation rate and the share of pairs cooperating mutually; with
log_decisions its "decisions" table holds each round's decisions (one row per round, arrays).
"""

from __future__ import annotations

import mesa
import numpy as np
import pandas as pd

from ..data.scenario import Scenario
from .config import DilemmaConfig

HISTORY = ("first_game", "they_cooperated", "they_defected")


class DilemmaModel(mesa.Model):
    def __init__(self, config: DilemmaConfig, scenario: Scenario, decider, population: int = 500,
                 rng: int | None = None, log_decisions: bool = False):
        super().__init__(rng=rng)
        self.config, self.scenario, self.decider = config, scenario, decider
        self.n = population - population % 2
        self.ticks = config.rounds
        pairs = self.n // 2
        rng = self.rng
        # both players of a pair share its framing and relation; row 2k and 2k+1 are partners
        context = rng.choice(list(config.contexts), size=pairs, p=_probabilities(config.contexts))
        partner = rng.choice(list(config.partners), size=pairs, p=_probabilities(config.partners))
        self.context, self.partner = np.repeat(context, 2), np.repeat(partner, 2)
        self.partner_row = np.arange(self.n) ^ 1
        self.last = np.full(self.n, -1)  # -1 before any round, else 1 cooperated / 0 defected
        self.cooperation = self.mutual = float("nan")  # no round played yet
        self.decisions = 0
        self.log_decisions = log_decisions
        self.datacollector = mesa.DataCollector(
            model_reporters={"cooperation": "cooperation", "mutual": "mutual", "decisions": "decisions"},
            tables={"decisions": ["tick", "row", "history", "p", "cooperate"]})
        self.datacollector.collect(self)  # step 0: before the first round

    def step(self) -> None:
        t = self.steps - 1
        seen = self.last[self.partner_row]
        history = np.array(HISTORY, dtype=object)[np.where(seen < 0, 0, np.where(seen == 1, 1, 2))]
        base = self.scenario.with_lookups({"game": self.config.game, "stakes": self.config.stakes,
                                           "context": "no_context", "history": "first_game",
                                           "partner": "stranger"})
        frame = pd.DataFrame({**{k: [v] * self.n for k, v in base.items()},
                              "context": self.context, "history": history, "partner": self.partner})
        p = self.decider.prob(frame)
        cooperate = self.rng.random(self.n) < p
        self.last = cooperate.astype(int)
        self.cooperation = float(cooperate.mean())
        self.mutual = float((cooperate & cooperate[self.partner_row]).mean())
        self.decisions = self.n
        if self.log_decisions:
            self.datacollector.add_table_row("decisions", {
                "tick": np.full(self.n, self.steps), "row": np.arange(self.n), "history": history, "p": p,
                "cooperate": cooperate})
        self.datacollector.collect(self)
        if t + 1 >= self.ticks:
            self.running = False

    def decision_log(self) -> pd.DataFrame:
        """One row per decision (log_decisions=True): round (Mesa's step, from 1), player row,
        history, P(cooperate), whether they cooperated."""
        table = self.datacollector.get_table_dataframe("decisions")
        return pd.DataFrame({c: np.concatenate(table[c].to_list()) if len(table) else [] for c in table.columns})


def _probabilities(weights: dict[str, float]) -> np.ndarray:
    w = np.asarray(list(weights.values()), dtype=float)
    return w / w.sum()
