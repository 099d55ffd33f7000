"""Off-policy evaluation in the market: FQE, per-decision importance sampling and doubly robust
estimates recover known values of state-dependent policies, and the report's biases are paired
by day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.data.scenario_file import load_scenario
from decision_distill.simulation.config import CONTEXT_BITS, load_simulation
from decision_distill.simulation.fqe import FittedQ, MarketDay, fqe_report, transitions
from decision_distill.simulation.market import context_table, persona_traits, states_frame
from decision_distill.simulation.off_policy import importance_estimates
from decision_distill.simulation.policy import Policy
from decision_distill.simulation.run import run_replicates
from tests.support.sim_students import synthetic_weights

PRICE, GAMMA, TICK_HOURS, WEATHER_BIT = 3.5, 0.8, 0.25, 8


def test_fqe_recovers_the_value_of_a_tiny_mdp():
    rng = np.random.default_rng(0)
    S, A, gamma = 3, 2, 0.9
    P = rng.dirichlet(np.ones(S), size=(S, A))  # P[s, a] -> next-state distribution
    stop = np.array([[0.1, 0.3], [0.2, 0.05], [0.4, 0.1]])  # episode ends after (s, a)
    R = rng.uniform(0, 1, size=(S, A))
    R[:, 1] += 0.5  # action 1 pays more: a policy favouring it is worth more
    exact, estimate = {}, {}
    n = 60_000
    s = rng.choice(S, size=n)  # logged by a uniform behaviour policy
    a = rng.integers(0, A, size=n)
    s2 = np.array([rng.choice(S, p=P[i, j]) for i, j in zip(s, a)])
    done = rng.random(n) < stop[s, a]
    start = np.array([0.5, 0.3, 0.2])
    eye = np.eye(S)
    fitted = FittedQ(eye[s], a, R[s, a], gamma * ~done, eye[s2], alpha=1e-6)
    for name, pi in {"favours_1": np.array([[0.2, 0.8], [0.1, 0.9], [0.3, 0.7]]),
                     "favours_0": np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])}.items():
        # exact: Q = R + gamma (1 - stop) P (pi Q), solved as a linear system over (s, a)
        M = np.zeros((S * A, S * A))
        for i in range(S):
            for j in range(A):
                M[i * A + j] = (gamma * (1 - stop[i, j]) * P[i, j][:, None] * pi).ravel()
        Q = np.linalg.solve(np.eye(S * A) - M, R.ravel()).reshape(S, A)
        exact[name] = float(start @ (pi * Q).sum(axis=1))
        estimate[name] = float(start @ (pi * fitted.q(pi[s2], 120)).sum(axis=1))
        assert estimate[name] == pytest.approx(exact[name], rel=0.02)
    assert exact["favours_1"] > 1.2 * exact["favours_0"]  # two clearly different values, both recovered


def _log(visitor, tick, arrival, persona, buy, p) -> pd.DataFrame:
    """A decision log as MarketModel.decision_log writes it: every visitor on a weather day (a
    context at every tick, so it decides at every tick it is present), lunch 2 h before opening."""
    return pd.DataFrame({"tick": tick, "row": visitor, "traits": persona, "contexts": WEATHER_BIT, "p": p,
                         "buy": np.asarray(buy, bool), "weather": "cold_winter_day",
                         "since_arrival": np.asarray(tick) - np.asarray(arrival),
                         "since_meal": 2.0 + TICK_HOURS * (np.asarray(tick) - 1)})


def test_the_state_tells_a_first_decision_from_a_mid_stay_one():
    # Every visitor stays 4 ticks and buys with P = 1/4 at each until it buys. Each arrival tick
    # has 256 visitors in exact proportions (64 buy at once, 48 at their 2nd decision, 36, 27, and
    # 81 never), so a tick holds first and later decisions whose values differ, and a correct fit
    # is exact: the on-policy value is known without sampling error.
    stay, rows, visitor = 4, [], 0
    for arrival in range(1, 21):
        for k, count in enumerate([64, 48, 36, 27, 81]):  # k: decisions before the purchase (4: none)
            for _ in range(count):
                rows += [(visitor, arrival + j, arrival, j == k) for j in range(min(k + 1, stay))]
                visitor += 1
    v, tick, arrival, buy = map(np.array, zip(*rows))
    log = _log(v, tick, arrival, 0, buy, 0.25)
    exact = PRICE * sum(GAMMA ** k * 0.75 ** k * 0.25 for k in range(stay))
    quarter = lambda rows: np.full(len(rows), 0.25)  # noqa: E731
    day = MarketDay(log, 1, len(CONTEXT_BITS), TICK_HOURS, PRICE, GAMMA, "synthetic")
    assert day.estimates(quarter, 32)["fqe"] == pytest.approx(exact, rel=1e-3)
    # the former state (persona, context bits, tick) pools a tick's first and later decisions
    t = transitions(log)
    old = np.hstack([np.ones((len(t), 1)), np.eye(32)[t["tick"] - 1]])
    nxt = t["next"].to_numpy()
    fitted = FittedQ(old, t["buy"].to_numpy().astype(int), PRICE * t["buy"].to_numpy(),
                     np.where(nxt < 0, 0, GAMMA ** t["gap"].to_numpy()), old[np.maximum(nxt, 0)])
    pi = np.tile([0.75, 0.25], (len(t), 1))
    pooled = (pi * (old @ fitted.q(pi, 32))).sum(axis=1)[t["first"].to_numpy()].mean()
    assert pooled < 0.95 * exact  # 5.7 % low


def _sampled_log(n: int, b, rng) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """n visitors of 2 personas, present for 5 ticks from a tick in 1..20, deciding by b(persona,
    tick) until they buy, at every tick but those divisible by 3 (no context then: a visitor's
    next decision may be 2 ticks on); (log, personas, arrivals)."""
    persona, arrival = rng.integers(0, 2, n), rng.integers(1, 21, n)
    bought, columns = np.zeros(n, bool), []
    for k in range(5):
        p = b(persona, arrival + k)
        deciding = ~bought & ((arrival + k) % 3 != 0)
        buy = deciding & (rng.random(n) < p)
        columns.append([x[deciding] for x in (np.arange(n), arrival + k, arrival, persona, buy, p)])
        bought |= buy
    return _log(*(np.concatenate(x) for x in zip(*columns))), persona, arrival


def _exact_value(pi, persona: np.ndarray, arrival: np.ndarray) -> float:
    """Mean over these visitors of sum over ticks of gamma^(ticks since their first decision) *
    P(first purchase at that tick) * price."""
    first = arrival + (arrival % 3 == 0)
    alive, value = np.ones(len(persona)), np.zeros(len(persona))
    for k in range(5):
        tick = arrival + k
        p = np.where(tick % 3 != 0, pi(persona, tick), 0.0)
        value += PRICE * GAMMA ** (tick - first) * alive * p
        alive *= 1 - p
    return float(value.mean())


def _behaviour(persona, tick):
    return np.where(persona == 0, 0.2, 0.5) + 0.01 * (tick - 10)


def _near(persona, tick):  # buys more later in the evening, persona 0 more and persona 1 less than b
    return np.where(persona == 0, 0.45 + 0.015 * (tick - 10), 0.15 + 0.01 * (tick - 10))


def _far(persona, tick):  # the personas' roles swapped: weights up to 60
    return np.where(persona == 0, 0.7 + 0.01 * (tick - 10), 0.08 + 0.005 * (tick - 10))


def _evaluate(target, seed: int = 3) -> tuple[dict, MarketDay, float, float]:
    """(estimates, the day, exact value of target, exact value of the behaviour) on 20,000 visitors."""
    log, persona, arrival = _sampled_log(20_000, _behaviour, np.random.default_rng(seed))
    day = MarketDay(log, 2, len(CONTEXT_BITS), TICK_HOURS, PRICE, GAMMA, "synthetic")
    got = day.estimates(lambda rows: target(rows["traits"].to_numpy(), rows["tick"].to_numpy()), 32)
    return got, day, _exact_value(target, persona, arrival), _exact_value(_behaviour, persona, arrival)


def test_fqe_recovers_a_state_dependent_policys_value_within_2_percent():
    got, _, exact, behaviour = _evaluate(_near)
    assert abs(behaviour - exact) > 0.06 * exact  # the log's own return is not the answer
    assert got["fqe"] == pytest.approx(exact, rel=0.02)  # on 8 samples of this log: -0.5 % .. -0.7 %


def test_importance_sampling_and_doubly_robust_are_unbiased_far_from_the_behaviour():
    got, day, exact, behaviour = _evaluate(_far)
    assert abs(behaviour - exact) > 0.08 * exact and got["max_weight"] > 20
    # on 8 samples of this log: PDIS within 3.2 % of the exact value, DR (FQE's Q) within 0.2 %
    assert got["is"] == pytest.approx(exact, rel=0.04)
    assert got["dr"] == pytest.approx(exact, rel=0.01)
    # DR is unbiased whatever Q it is given, here one far off: Q(s, buy) = 0, Q(s, no) = price
    # (on 8 samples within 3.2 %)
    t = day.log
    a, b = t["buy"].to_numpy().astype(int), t["p"].to_numpy()
    p_pi = _far(t["traits"].to_numpy(), t["tick"].to_numpy())
    dr = importance_estimates(t["row"].to_numpy(), t["since_first"].to_numpy(), PRICE * a,
                              np.where(a == 1, b, 1 - b), np.where(a == 1, p_pi, 1 - p_pi),
                              np.where(a == 1, 0.0, PRICE), (1 - p_pi) * PRICE, GAMMA)
    assert dr["dr"] == pytest.approx(exact, rel=0.04)


class Logistic(Policy):
    """P(buy) = sigmoid(shift + sum of per-value weights): a known, state-dependent decider."""

    def __init__(self, scenario, seed: int, shift: float):
        self.weight, self.shift = synthetic_weights(scenario, seed), shift
        self.schema, self.name = scenario.schema(), f"w{seed}"

    def probs(self, states):
        f = self.frame(states)
        logit = self.shift + np.array([sum(self.weight[("traits", v)] for v in t) + sum(
            self.weight[("contexts", v)] for v in c) for t, c in zip(f.traits, f.contexts)])
        p = 1 / (1 + np.exp(-logit))
        return np.stack([p, 1 - p], axis=1)


def test_market_report_finds_no_on_policy_bias_and_values_another_decider_within_2_percent():
    config = load_simulation("simulations/christmas_market.yaml")
    scenario = load_scenario("scenarios/ice_cream.yaml")
    deciders = {"teacher": Logistic(scenario, 0, -1.5), "other": Logistic(scenario, 1, -1.5)}
    seeds, logs = list(range(24)), {}
    for name, decider in deciders.items():
        days = []
        run_replicates(config, scenario, decider, 400, seeds, logs=days)
        logs[name] = dict(days)
    trait_sets = persona_traits(config, scenario)

    def prob_of(decider):
        def on_rows(rows):
            out = np.empty(len(rows))
            for weather, idx in rows.groupby("weather").indices.items():
                out[idx] = decider.prob(states_frame(trait_sets, context_table(scenario, weather),
                                                     rows["traits"].to_numpy()[idx], rows["contexts"].to_numpy()[idx]))
            return out
        return on_rows

    report = fqe_report(logs["teacher"], logs, {n: prob_of(d) for n, d in deciders.items()},
                        len(config.visitors.personas), config.clock.ticks, len(CONTEXT_BITS), TICK_HOURS,
                        config.price, config.gamma, 0.95)
    teacher, other = report["deciders"]["teacher"], report["deciders"]["other"]
    assert abs(teacher["relative_bias"]) <= 0.01
    assert teacher["bias_ci"][0] <= 0 <= teacher["bias_ci"][1]
    # the teacher's days are worth ~25 % more than the other decider's: its logs alone would mislead
    assert teacher["monte_carlo"] > 1.15 * other["monte_carlo"]
    assert abs(other["relative_bias"]) <= 0.02
    for key in ("is_bias", "dr_bias"):  # unbiased, noisier: their paired intervals hold 0
        assert other[f"{key}_ci"][0] <= 0 <= other[f"{key}_ci"][1]
    # paired by day: the bias interval is narrower than the FQE and Monte Carlo intervals it compares
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(teacher["bias_ci"]) < 0.5 * width(teacher["monte_carlo_ci"])


def test_a_log_without_the_visitors_clocks_is_a_one_line_error():
    log = _log([0, 0], [1, 2], [1, 1], 0, [False, True], 0.5).drop(columns="since_meal")
    with pytest.raises(ValueError, match="since_meal") as error:
        fqe_report({0: log}, {"teacher": {0: log}}, {"teacher": lambda rows: np.full(len(rows), 0.5)},
                   1, 32, len(CONTEXT_BITS), TICK_HOURS, PRICE, GAMMA, 0.95)
    assert "\n" not in str(error.value)
