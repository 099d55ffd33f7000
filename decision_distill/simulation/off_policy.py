"""Per-decision importance sampling (PDIS) and doubly robust (DR) estimates of a policy's value
from another policy's logs, one trajectory per market visitor (its decisions, in tick order).

    w_j  = prod_{i <= j} pi(a_i | s_i) / b(a_i | s_i)     along the visitor's decisions, w_{-1} = 1
    PDIS = mean over visitors of  sum_j gamma**k_j * w_j * r_j                  (Precup et al. 2000)
    DR   = mean over visitors of  sum_j gamma**k_j * (w_j * (r_j - Q(s_j, a_j)) + w_{j-1} * V(s_j))
           V(s) = sum_a pi(a | s) Q(s, a)                  (Jiang & Li 2016; Thomas & Brunskill 2016)

b is the behaviour (logging) policy, pi the evaluated one, k_j the ticks since the visitor's
first decision. Both are unbiased wherever b(a | s) > 0 for every action pi may take: the
teacher's P(buy) comes from a softmax and is never exactly 0 or 1. DR is unbiased for any Q
(given the history, w_j * Q(s_j, a_j) has mean w_{j-1} * V(s_j)) and has lower variance the
closer Q is to the truth. Here Q is FQE's, fitted on the same day's log, which breaks that
independence a little: far from the teacher DR then leans toward FQE. Cross-fitting (Q for
half the visitors fitted on the other half) was tried on synthetic teachers and dropped: the
half-day fits extrapolated so badly that DR's intervals grew ~10x.

Written here rather than taken from a library: obp 0.5.7 (Open Bandit Pipeline) installs only
on Python < 3.11 (this project runs 3.11) and its estimators are for contextual bandits, one
decision per round, not trajectories. SCOPE-RL 0.2.1 has discrete PerDecisionImportanceSampling
and DoublyRobust, but they take trajectories of one fixed length discounted per step, while a
visitor makes 1 to 16 decisions discounted per tick (a visitor without a context at some tick
skips it): each visitor would have to be padded to the evening's ticks with no-op steps, ~10x
the rows; and importing scope_rl.ope brings in d3rlpy, gym, gymnasium and hydra-core (its
requirements) for these few lines of array arithmetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def per_decision_weights(visitor: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w_j, w_{j-1}) per row; rows grouped by visitor, in decision order within a visitor."""
    w = pd.Series(ratio).groupby(visitor, sort=False).cumprod().to_numpy()
    first = np.append(True, visitor[1:] != visitor[:-1])
    previous = np.where(first, 1.0, np.roll(w, 1))
    return w, previous


def importance_estimates(visitor: np.ndarray, since_first: np.ndarray, rewards: np.ndarray,
                         b_taken: np.ndarray, pi_taken: np.ndarray, q_taken: np.ndarray, v: np.ndarray,
                         gamma: float) -> dict:
    """PDIS and DR values (per visitor) and the largest weight w_j, from one log's rows grouped
    by visitor: b_taken and pi_taken are the behaviour's and the evaluated policy's probability
    of the logged action, q_taken = Q(s_j, a_j), v = V(s_j)."""
    if not (b_taken > 0).all():
        raise ValueError("p: a logged action has behaviour probability 0; the log does not come from b")
    w, w_prev = per_decision_weights(visitor, pi_taken / b_taken)
    discount = gamma ** since_first
    visitors = np.append(True, visitor[1:] != visitor[:-1]).sum()
    return {"is": float((discount * w * rewards).sum() / visitors),
            "dr": float((discount * (w * (rewards - q_taken) + w_prev * v)).sum() / visitors),
            "max_weight": float(w.max())}
