"""Fitted Q Evaluation: recovers a known value, and agrees with Monte Carlo in the market."""

from __future__ import annotations

import numpy as np
import pytest

from decision_distill.data.scenario_file import load_scenario
from decision_distill.simulation.config import load_simulation
from decision_distill.simulation.fqe import fitted_q_evaluation, fqe_one_day, monte_carlo_return
from decision_distill.simulation.market import CONTEXT_BITS
from decision_distill.simulation.policy import ConstantPolicy
from decision_distill.simulation.run import run_replicates


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
    s0 = rng.choice(S, size=5000, p=start)
    eye = np.eye(S)
    for name, pi in {"favours_1": np.array([[0.2, 0.8], [0.1, 0.9], [0.3, 0.7]]),
                     "favours_0": np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])}.items():
        # exact: Q = R + gamma (1 - stop) P (pi Q), solved as a linear system over (s, a)
        M = np.zeros((S * A, S * A))
        for i in range(S):
            for j in range(A):
                M[i * A + j] = (gamma * (1 - stop[i, j]) * P[i, j][:, None] * pi).ravel()
        Q = np.linalg.solve(np.eye(S * A) - M, R.ravel()).reshape(S, A)
        exact[name] = float(start @ (pi * Q).sum(axis=1))
        estimate[name] = fitted_q_evaluation(eye[s], a, R[s, a], eye[s2], done, pi[s2], eye[s0], pi[s0],
                                             gamma, 120, alpha=1e-6)
        assert estimate[name] == pytest.approx(exact[name], rel=0.03)
    assert exact["favours_1"] > 1.2 * exact["favours_0"]  # two clearly different values, both recovered


def test_fqe_of_another_policy_in_the_market_matches_its_monte_carlo_return():
    config = load_simulation("simulations/christmas_market.yaml")
    scenario = load_scenario("scenarios/ice_cream.yaml")
    behaviour, target = ConstantPolicy(0.4, scenario.schema()), 0.15
    logs, target_logs = [], []
    run_replicates(config, scenario, behaviour, 600, [0, 1], logs=logs)
    run_replicates(config, scenario, ConstantPolicy(target, scenario.schema()), 600, [0, 1], logs=target_logs)
    gamma, ticks = 0.9, config.clock.ticks
    personas = len(config.visitors.personas)
    estimates = [fqe_one_day(log, lambda rows: np.full(len(rows), target), personas, ticks, len(CONTEXT_BITS),
                             config.price, gamma, ticks) for _, log in logs]
    mc = np.mean([monte_carlo_return(log, config.price, gamma) for _, log in target_logs])
    behaviour_mc = np.mean([monte_carlo_return(log, config.price, gamma) for _, log in logs])
    assert np.mean(estimates) == pytest.approx(mc, rel=0.1)
    assert abs(behaviour_mc - mc) > 0.3 * mc  # the logs alone would have given a very different value
