"""Fitted Q Evaluation (FQE) of each decider's policy in the market, from teacher-driven logs,
validated against the Monte Carlo return of running that decider in the market.

Reward: the vendor's revenue, `price` per purchase; a visitor's return is the sum of
gamma**k * reward over its decisions, k = ticks since its first decision. A policy's value is
the expected return per visitor.

FQE (Le, Voloshin & Yue 2019): from logged transitions (s, a, r, s') of the behaviour policy
(the teacher), iterate Q_{k+1}(s, a) = fit of r + gamma * sum_a' pi(a'|s') Q_k(s', a') on (s, a),
pi being the evaluated decider. The state s of a visitor at a tick is its persona, its context
bits and the tick (the clock drives hunger, the discount hour and "after_work"); the function
class is ridge regression on their one-hot encodings, one per action (scikit-learn). d3rlpy's
DiscreteFQE was not used: it evaluates a d3rlpy algorithm's greedy action, and our deciders
are stochastic policies from outside d3rlpy.

The estimate is the mean of per-replicate FQE estimates (each fit on one teacher-driven day),
the Monte Carlo value the mean of per-replicate returns of the decider's own runs; both with a
bootstrap interval over replicates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sklearn
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from .fidelity import replicate_interval


def fitted_q_evaluation(X: np.ndarray, actions: np.ndarray, rewards: np.ndarray, X_next: np.ndarray,
                        done: np.ndarray, pi_next: np.ndarray, X0: np.ndarray, pi0: np.ndarray, gamma: float,
                        iterations: int, alpha: float = 1e-3) -> float:
    """Mean over initial states X0 of sum_a pi0[a] Q(x0, a), Q fitted by FQE on the transitions."""
    n_actions = pi_next.shape[1]
    for a in range(n_actions):
        if not (actions == a).any():
            raise ValueError(f"no logged transition takes action {a}: FQE cannot evaluate it")
    models = [None] * n_actions
    taken = [actions == a for a in range(n_actions)]
    X_taken = [X[t] for t in taken]  # the same rows every iteration: only the targets change

    def q(x: np.ndarray) -> np.ndarray:
        if models[0] is None:
            return np.zeros((len(x), n_actions))
        return np.stack([m.predict(x) for m in models], axis=1)

    # The inputs are finite by construction (one-hot and 0/1 bits): skipping scikit-learn's
    # per-call finiteness checks halves the cost of these thousands of small fits.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for _ in range(iterations):
            target = rewards + gamma * (~done) * (pi_next * q(X_next)).sum(axis=1)
            models = [Ridge(alpha=alpha).fit(X_a, target[t]) for X_a, t in zip(X_taken, taken)]
        return float((pi0 * q(X0)).sum(axis=1).mean())


def market_features(log: pd.DataFrame, personas: int, ticks: int, context_bits: int) -> np.ndarray:
    """One-hot persona, context bits, one-hot tick, per decision row (the log's ticks are
    Mesa's steps, 1..ticks)."""
    persona = np.eye(personas)[log["traits"].to_numpy()]
    bits = (log["contexts"].to_numpy()[:, None] >> np.arange(context_bits)) & 1
    tick = np.eye(ticks)[log["tick"].to_numpy() - 1]
    return np.hstack([persona, bits, tick]).astype(float)


def transitions(log: pd.DataFrame) -> pd.DataFrame:
    """`log` sorted by visitor and tick, with the row index of each decision's next decision
    by the same visitor (-1: its last, a terminal transition) and whether it is its first."""
    log = log.sort_values(["row", "tick"]).reset_index(drop=True)
    same_next = log["row"].shift(-1).eq(log["row"]).to_numpy()
    nxt = np.where(same_next, np.arange(len(log)) + 1, -1)
    first = ~log["row"].duplicated().to_numpy()
    return log.assign(next=nxt, first=first)


def monte_carlo_return(log: pd.DataFrame, price: float, gamma: float) -> float:
    """Mean discounted revenue per visitor who decided at least once."""
    start = log.groupby("row")["tick"].transform("min")
    discounted = price * log["buy"].to_numpy() * gamma ** (log["tick"] - start).to_numpy()
    return float(pd.Series(discounted).groupby(log["row"].to_numpy()).sum().mean())


def fqe_one_day(log: pd.DataFrame, prob_of, personas: int, ticks: int, context_bits: int, price: float,
                gamma: float, iterations: int) -> float:
    """FQE estimate of the value of the policy `prob_of(log rows) -> P(buy)` (it reads the rows'
    traits, contexts and weather) from one teacher-driven day's log."""
    log = transitions(log)
    X = market_features(log, personas, ticks, context_bits)
    p = np.asarray(prob_of(log), dtype=float)
    pi = np.stack([1 - p, p], axis=1)  # action 1 = buy
    nxt = log["next"].to_numpy()
    done = nxt < 0
    safe = np.where(done, 0, nxt)
    first = log["first"].to_numpy()
    return fitted_q_evaluation(X, log["buy"].to_numpy().astype(int), price * log["buy"].to_numpy(), X[safe], done,
                               pi[safe], X[first], pi[first], gamma, iterations)


def fqe_report(teacher_logs: dict[int, pd.DataFrame], decider_logs: dict[str, dict[int, pd.DataFrame]],
               probs_of: dict, personas: int, ticks: int, context_bits: int, price: float, gamma: float,
               resamples: int, confidence: float, seed: int) -> dict:
    """Per decider: FQE estimate from the teacher's days, Monte Carlo value of its own days, both with
    intervals, and the absolute error; overall: Spearman rank agreement and mean absolute error."""
    seeds = sorted(teacher_logs)
    out = {}
    for name, prob_of in probs_of.items():
        est = np.array([fqe_one_day(teacher_logs[s], prob_of, personas, ticks, context_bits, price, gamma, ticks)
                        for s in seeds])
        mc = np.array([monte_carlo_return(decider_logs[name][s], price, gamma) for s in seeds])
        fqe, fqe_ci = replicate_interval(lambda i: est[i].mean(), len(seeds), resamples, confidence, seed)
        value, value_ci = replicate_interval(lambda i: mc[i].mean(), len(seeds), resamples, confidence, seed)
        out[name] = {"fqe": fqe, "fqe_ci": fqe_ci, "monte_carlo": value, "monte_carlo_ci": value_ci,
                     "abs_error": abs(fqe - value),
                     "fqe_inside_mc_ci": bool(value_ci and value_ci[0] <= fqe <= value_ci[1])}
    names = list(out)
    rho = spearmanr([out[n]["fqe"] for n in names], [out[n]["monte_carlo"] for n in names]).statistic \
        if len(names) > 2 else None
    return {"reward": f"{price} per purchase, discounted by {gamma} per tick since a visitor's first decision",
            "deciders": out, "rank_agreement_spearman": None if rho is None or np.isnan(rho) else float(rho),
            "mean_abs_error": float(np.mean([out[n]["abs_error"] for n in names])) if names else None}
