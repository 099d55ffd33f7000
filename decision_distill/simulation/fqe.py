"""Fitted Q Evaluation (FQE) of each decider's policy in the market, from teacher-driven logs.

Reward: the vendor's revenue, `price` per purchase; a visitor's return is the sum of
gamma**k * reward over its decisions, k = ticks since its first decision. A policy's value is
the expected return per visitor.

FQE (Le, Voloshin & Yue 2019): from logged transitions (s, a, r, s') of the behaviour policy
(the teacher), iterate Q_{k+1}(s, a) = fit of r + gamma**gap * sum_a' pi(a'|s') Q_k(s', a') on
(s, a), pi being the evaluated decider and gap the ticks to the visitor's next decision (a
visitor with no context at some tick skips it, and the Monte Carlo return discounts by ticks).

The state of a visitor at a decision is its persona, its context bits, the tick, the ticks
since it arrived and the ticks since its last meal (the decision log's since_arrival and
since_meal). The contexts say whether a visitor is hungry or after work now; the two clocks
say for how much longer, and how long it may still stay. Without them a first decision and a
mid-stay decision at the same tick look alike, though the first has the whole stay ahead:
pooled, every first decision was undervalued, and a policy's value is read at first decisions.

Function class: ridge regression, one per action, on the one-hot encodings of these and of
two interactions: persona x ticks since arrival (a persona's chances to buy add up over its
remaining stay, more the less likely it buys each tick) and hour of the day x hours since
arrival (how long a visitor can still decide is the lesser of its remaining stay and the time
to closing, which no sum of the two can express). Interactions of the persona with the hour
or with the contexts were tried on synthetic teachers and left out: away from the teacher's
policy they made linear FQE extrapolate, and diverge. A day's design is the same for every
evaluated policy and iteration (only the targets change), so its per-action ridge solution is
computed once per day: scikit-learn's Ridge refit every iteration cost ~100x as much. d3rlpy's
DiscreteFQE evaluates a d3rlpy algorithm's greedy action, and our deciders are stochastic
policies from outside d3rlpy.

fqe_report: for each decider and day, FQE, per-decision importance sampling and doubly robust
estimates (simulation.off_policy) from the teacher's log of that day, and the Monte Carlo
return of the decider's own run of that day (same seed: same visitors and weather). A bias is
estimate minus Monte Carlo, per day; it is reported with a t interval over days, paired by
day. The teacher's own run is the teacher's log: its FQE bias is FQE's error on that very data,
and its importance weights are all 1 (its PDIS is its Monte Carlo return).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.linalg import splu
from scipy.stats import spearmanr
from scipy.stats import t as t_dist

from .off_policy import importance_estimates

# What FQE reads from a decision log (MarketModel.decision_log)
LOG_FIELDS = ("tick", "row", "traits", "contexts", "p", "buy", "since_arrival", "since_meal")


class FittedQ:
    """FQE on transitions (x, a, r, discount, x'): discount is 0 for a terminal transition.

    `q(pi_next, iterations)` returns the weights W (features x actions) of Q(x, .) = x @ W for
    the policy whose action probabilities at each x' are pi_next."""

    def __init__(self, X: np.ndarray, actions: np.ndarray, rewards: np.ndarray, discount: np.ndarray,
                 X_next: np.ndarray, n_actions: int = 2, alpha: float = 1e-3):
        self.taken = [np.flatnonzero(actions == a) for a in range(n_actions)]
        for a, rows in enumerate(self.taken):
            if not len(rows):
                raise ValueError(f"actions: no logged transition takes action {a}; FQE cannot evaluate it")
        # Sparse throughout: the features are one-hot blocks (~10 non-zeros in a row of a few
        # hundred), and a dense LAPACK factorisation of this size took 30x as long as SuperLU's
        # on the shared 2-core machine (OpenBLAS threads contending with other work).
        X, self.X_next = sparse.csr_array(X), sparse.csr_array(X_next)
        ridge = alpha * sparse.eye(X.shape[1], format="csc")
        self.Xt = [X[r].T.tocsr() for r in self.taken]
        self.factors = [splu((Xt @ Xt.T).tocsc() + ridge) for Xt in self.Xt]
        self.rewards, self.discount = rewards, discount

    def q(self, pi_next: np.ndarray, iterations: int) -> np.ndarray:
        W = np.zeros((self.X_next.shape[1], len(self.taken)))
        for _ in range(iterations):
            target = self.rewards + self.discount * (pi_next * (self.X_next @ W)).sum(axis=1)
            W = np.stack([f.solve(Xt @ target[r]) for f, Xt, r in zip(self.factors, self.Xt, self.taken)], axis=1)
        return W


def check_log(log: pd.DataFrame, where: str) -> None:
    missing = [c for c in LOG_FIELDS if c not in log.columns]
    if missing:
        raise ValueError(f"{where}: the decision log has no '{missing[0]}' column (MarketModel.decision_log "
                         "writes it; rerun the simulation)")
    p = log["p"].to_numpy(float)
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"{where}: decision log column 'p' holds values outside [0, 1]")


def transitions(log: pd.DataFrame) -> pd.DataFrame:
    """`log` sorted by visitor and tick, with each decision's next decision by the same visitor
    (`next`: its row index, -1 after the visitor's last: terminal), the ticks to it (`gap`),
    whether it is the visitor's first (`first`) and the ticks since its first (`since_first`)."""
    log = log.sort_values(["row", "tick"]).reset_index(drop=True)
    visitor, tick = log["row"].to_numpy(), log["tick"].to_numpy()
    same_next = np.append(visitor[1:] == visitor[:-1], False)
    nxt = np.where(same_next, np.arange(len(log)) + 1, -1)
    gap = np.where(same_next, np.append(tick[1:], 0) - tick, 0)
    first = ~log["row"].duplicated().to_numpy()
    since_first = tick - tick[np.maximum.accumulate(np.where(first, np.arange(len(log)), 0))]
    return log.assign(next=nxt, gap=gap, first=first, since_first=since_first)


def _one_hot(values: np.ndarray) -> np.ndarray:
    """Columns for the values present only: a day's Q is fitted and read on that day's rows."""
    codes, uniques = pd.factorize(values)
    return np.eye(len(uniques))[codes]


def market_features(log: pd.DataFrame, personas: int, context_bits: int, tick_hours: float) -> np.ndarray:
    """Per decision row: a constant, one-hot persona, the context bits, one-hot tick, ticks
    since arrival, ticks since the last meal, persona x ticks since arrival, and hour of the
    day x hours since arrival (combinations that occur on the day only)."""
    per_hour = max(int(round(1 / tick_hours)), 1)
    tick = log["tick"].to_numpy() - 1
    arrived = log["since_arrival"].to_numpy()
    persona = np.eye(personas)[log["traits"].to_numpy()]
    stayed = _one_hot(arrived)
    X = np.hstack([
        np.ones((len(log), 1)), persona, (log["contexts"].to_numpy()[:, None] >> np.arange(context_bits)) & 1,
        _one_hot(tick), stayed, _one_hot(np.floor(log["since_meal"].to_numpy() / tick_hours + 1e-9)),
        (persona[:, :, None] * stayed[:, None, :]).reshape(len(log), -1),
        _one_hot(tick // per_hour * (arrived.max() // per_hour + 1) + arrived // per_hour),
    ]).astype(float)
    return X[:, X.any(axis=0)]


def monte_carlo_return(log: pd.DataFrame, price: float, gamma: float) -> float:
    """Mean discounted revenue per visitor who decided at least once."""
    start = log.groupby("row")["tick"].transform("min")
    discounted = price * log["buy"].to_numpy() * gamma ** (log["tick"] - start).to_numpy()
    return float(pd.Series(discounted).groupby(log["row"].to_numpy()).sum().mean())


class MarketDay:
    """One teacher-driven day's log, ready to evaluate any policy on it: the transitions, their
    features and FittedQ's per-action solution are the same for every policy."""

    def __init__(self, log: pd.DataFrame, personas: int, context_bits: int, tick_hours: float, price: float,
                 gamma: float, where: str):
        check_log(log, where)
        self.log = log = transitions(log)
        self.X = market_features(log, personas, context_bits, tick_hours)
        self.actions = log["buy"].to_numpy().astype(int)  # action 1 = buy
        if self.actions.min() == self.actions.max():
            raise ValueError(f"{where}: decision log column 'buy' is {bool(self.actions[0])} in every row; FQE "
                             "needs both actions logged (more visitors or days)")
        self.rewards = price * self.actions
        nxt = log["next"].to_numpy()
        self.next = np.where(nxt < 0, 0, nxt)
        discount = np.where(nxt < 0, 0.0, gamma ** log["gap"].to_numpy())
        self.fitted = FittedQ(self.X, self.actions, self.rewards, discount, self.X[self.next])
        b = log["p"].to_numpy(float)
        self.b_taken = np.where(self.actions == 1, b, 1 - b)
        if not (self.b_taken > 0).all():
            raise ValueError(f"{where}: decision log column 'p' gives a logged action probability 0")
        self.first, self.gamma, self.where = log["first"].to_numpy(), gamma, where

    def estimates(self, prob_of, iterations: int) -> dict:
        """FQE, PDIS and DR values of the policy `prob_of(log rows) -> P(buy)` (it reads the rows'
        traits, contexts and weather)."""
        p = np.asarray(prob_of(self.log), dtype=float)
        if p.shape != (len(self.log),) or not ((p >= 0) & (p <= 1)).all():
            raise ValueError(f"{self.where}: prob_of must give one P(buy) in [0, 1] per decision row")
        pi = np.stack([1 - p, p], axis=1)
        Q = self.X @ self.fitted.q(pi[self.next], iterations)
        v = (pi * Q).sum(axis=1)
        rows = np.arange(len(p))
        return {"fqe": float(v[self.first].mean()),
                **importance_estimates(self.log["row"].to_numpy(), self.log["since_first"].to_numpy(),
                                       self.rewards, self.b_taken, pi[rows, self.actions], Q[rows, self.actions],
                                       v, self.gamma)}


def mean_interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """Student t interval of the mean of per-day values (None under 2 days): days are
    independent, and with 8-40 of them a percentile bootstrap's interval is too narrow."""
    n = len(values)
    if n < 2:
        return None
    mean, half = float(np.mean(values)), float(t_dist.ppf((1 + confidence) / 2, n - 1) * np.std(values, ddof=1)
                                               / np.sqrt(n))
    return [mean - half, mean + half]


def fqe_report(teacher_logs: dict[int, pd.DataFrame], decider_logs: dict[str, dict[int, pd.DataFrame]],
               probs_of: dict, personas: int, ticks: int, context_bits: int, tick_hours: float, price: float,
               gamma: float, confidence: float) -> dict:
    """Per decider: the FQE, PDIS and DR estimates of its value from each teacher-driven day, the
    Monte Carlo return of its own run of that day, and per estimate the bias (estimate - Monte
    Carlo), paired by day; overall: Spearman rank agreement of FQE and Monte Carlo, mean |FQE bias|."""
    seeds = sorted(teacher_logs)
    days = [MarketDay(teacher_logs[s], personas, context_bits, tick_hours, price, gamma, f"teacher day {s}")
            for s in seeds]
    most = price * (1 - gamma ** ticks) / (1 - gamma) if gamma < 1 else price * ticks  # a visitor's best return
    out = {}
    for name, prob_of in probs_of.items():
        missing = [s for s in seeds if s not in decider_logs.get(name, {})]
        if missing:
            raise ValueError(f"decider_logs: {name} has no log of day {missing[0]} (it must run the teacher's days)")
        est = pd.DataFrame([day.estimates(prob_of, ticks) for day in days])
        mc = np.array([monte_carlo_return(decider_logs[name][s], price, gamma) for s in seeds])
        block = {"monte_carlo": float(mc.mean()), "monte_carlo_ci": mean_interval(mc, confidence)}
        for key, label in (("fqe", "bias"), ("is", "is_bias"), ("dr", "dr_bias")):
            values = est[key].to_numpy()
            block |= {key: float(values.mean()), f"{key}_ci": mean_interval(values, confidence),
                      label: float((values - mc).mean()), f"{label}_ci": mean_interval(values - mc, confidence)}
        block["abs_error"] = abs(block["bias"])
        block["relative_bias"] = block["bias"] / block["monte_carlo"] if block["monte_carlo"] else None
        block["is_max_weight"] = float(est["max_weight"].max())
        block["fqe_days_out_of_range"] = int(((est["fqe"] < 0) | (est["fqe"] > most)).sum())
        out[name] = block
    names = list(out)
    rho = spearmanr([out[n]["fqe"] for n in names], [out[n]["monte_carlo"] for n in names]).statistic \
        if len(names) > 2 else None
    return {"reward": f"{price} per purchase, discounted by {gamma} per tick since a visitor's first decision",
            "deciders": out, "rank_agreement_spearman": None if rho is None or np.isnan(rho) else float(rho),
            "mean_abs_error": float(np.mean([out[n]["abs_error"] for n in names])) if names else None}
