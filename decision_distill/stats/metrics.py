"""How faithful a student is to its teacher: metrics over two probability tables.

Every function takes the teacher's probabilities ``P`` and the student's
probabilities ``Q``, both arrays of shape ``[N, K]``: one row per state, one
column per answer option in the schema's order, each row summing to 1. ``K`` is
any number of options >= 2; the first option is "the action". Lower is better
for mse, mae, kl, ce, brier and ece; higher is better for pearson, spearman and
agreement. `jsd` compares two distributions (any leading axes), e.g. a cell's mean
decisions in the games report.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

PROBABILITY_FLOOR = 1e-12  # the student's probabilities are clipped here before any log


def _check(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P, Q = np.asarray(P, dtype=float), np.asarray(Q, dtype=float)
    if P.ndim != 2 or P.shape != Q.shape or P.shape[1] < 2:
        raise ValueError(f"need teacher and student arrays of equal shape [N, K>=2], got {P.shape} and {Q.shape}")
    return P, Q


def _free_columns(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first K-1 option columns, flattened: the last option is implied by the others
    (for K=2 these are just P(action) and Q(action))."""
    return P[:, :-1].ravel(), Q[:, :-1].ravel()


def mse_per_state(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Each state's mean over options of (P - Q)^2; `mse` is their mean."""
    P, Q = _check(P, Q)
    return np.mean((P - Q) ** 2, axis=1)


def mse(P: np.ndarray, Q: np.ndarray) -> float:
    """Mean squared error: mean over states and options of (P - Q)^2."""
    return float(mse_per_state(P, Q).mean())


def mae(P: np.ndarray, Q: np.ndarray) -> float:
    """Mean absolute error: mean over states and options of |P - Q|."""
    P, Q = _check(P, Q)
    return float(np.mean(np.abs(P - Q)))


def _correlation(test, P: np.ndarray, Q: np.ndarray) -> float | None:
    p, q = _free_columns(*_check(P, Q))
    if p.size < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        r = float(test(p, q).statistic)
    return None if math.isnan(r) else r


def pearson(P: np.ndarray, Q: np.ndarray) -> float | None:
    """Pearson correlation between teacher and student probabilities, over the first K-1
    option columns flattened (for K=2: P(action) against Q(action)). For K > 2 the
    flattened values mix options, so differences between the options' average levels
    count too: a student constant per option but not across options still correlates.

    None when it is undefined: when either side is constant (e.g. a student that always
    predicts the same distribution; scipy returns NaN there) or there are fewer than two values.
    """
    return _correlation(stats.pearsonr, P, Q)


def spearman(P: np.ndarray, Q: np.ndarray) -> float | None:
    """Spearman rank correlation over the same values as `pearson`: does the student rank
    states the way the teacher does? None when either side is constant."""
    return _correlation(stats.spearmanr, P, Q)


def kl(P: np.ndarray, Q: np.ndarray) -> float:
    """Mean over states of KL(teacher || student) = sum_k P_k log(P_k / Q_k), in nats.

    Q is clipped at 1e-12 so a confident wrong student costs a large finite amount;
    terms with P_k = 0 contribute 0.
    """
    return float(kl_per_state(P, Q).mean())


def kl_per_state(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Each state's KL(teacher || student) in nats, as `kl` defines it; `kl` is their mean."""
    P, Q = _check(P, Q)
    return special.rel_entr(P, np.clip(Q, PROBABILITY_FLOOR, None)).sum(axis=1)


def ce(P: np.ndarray, Q: np.ndarray) -> float:
    """Mean over states of the cross-entropy -sum_k P_k log Q_k, in nats: the student's
    log loss when the answers are drawn from the teacher. Equals kl plus the teacher's
    own entropy, so it cannot go below that entropy. Q is clipped at 1e-12."""
    P, Q = _check(P, Q)
    return float(-(P * np.log(np.clip(Q, PROBABILITY_FLOOR, None))).sum(axis=1).mean())


def brier(P: np.ndarray, Q: np.ndarray) -> float:
    """Expected Brier score of the student if each state's answer were drawn from the teacher.

    For K > 2: mean over states of sum_k P_k * sum_j (1[j = k] - Q_j)^2, in [0, 2].
    For K = 2: the usual positive-class form, mean over states of
    P_a (1 - Q_a)^2 + (1 - P_a) Q_a^2 with a = the action, in [0, 1] (half the K > 2 form).
    Either way it equals sklearn's brier_score_loss on the states expanded into K rows,
    one per option, weighted by the teacher's probability of that option.
    """
    P, Q = _check(P, Q)
    per_state = 1.0 - 2.0 * (P * Q).sum(axis=1) + (Q**2).sum(axis=1)
    scale = 0.5 if P.shape[1] == 2 else 1.0
    return float(scale * per_state.mean())


def calibration_curve(P: np.ndarray, Q: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability curve of the student against the teacher's soft labels.

    Takes every (state, option) pair over the first K-1 options, bins the student's
    probability into `bins` equal-width bins on [0, 1] (1.0 falls in the last bin), and
    returns, for each non-empty bin in increasing order: the mean student probability,
    the mean teacher probability of the same pairs, and the number of pairs.
    """
    p, q = _free_columns(*_check(P, Q))
    index = np.clip((q * bins).astype(int), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    filled = count > 0
    mean_student = np.bincount(index, weights=q, minlength=bins)[filled] / count[filled]
    mean_teacher = np.bincount(index, weights=p, minlength=bins)[filled] / count[filled]
    return mean_student, mean_teacher, count[filled]


def ece(P: np.ndarray, Q: np.ndarray, bins: int) -> float:
    """Soft expected calibration error with `bins` equal-width bins (see calibration_curve):
    sum over bins of (n_b / n) * |mean student probability - mean teacher probability|.

    0 when, within every bin, the student's probabilities average to the teacher's; it
    measures systematic over- or under-confidence, not per-state error (see mae).
    """
    mean_student, mean_teacher, count = calibration_curve(P, Q, bins)
    return float(np.sum(count / count.sum() * np.abs(mean_student - mean_teacher)))


def agreement(P: np.ndarray, Q: np.ndarray) -> float:
    """Share of states where the student's most likely option is the teacher's most likely
    option (ties go to the earlier option in the schema)."""
    P, Q = _check(P, Q)
    return float(np.mean(P.argmax(axis=1) == Q.argmax(axis=1)))


def all_metrics(P: np.ndarray, Q: np.ndarray, bins: int) -> dict[str, float | None]:
    """Every metric above, keyed mse, mae, pearson, spearman, kl, ce, brier, ece, agreement
    (in that order). pearson and spearman are None where undefined, so the dict is valid
    JSON without NaN."""
    return {
        "mse": mse(P, Q),
        "mae": mae(P, Q),
        "pearson": pearson(P, Q),
        "spearman": spearman(P, Q),
        "kl": kl(P, Q),
        "ce": ce(P, Q),
        "brier": brier(P, Q),
        "ece": ece(P, Q, bins),
        "agreement": agreement(P, Q),
    }


def gap_closed(P: np.ndarray, Q_base: np.ndarray, Q_tuned: np.ndarray, gap_min: float) -> dict:
    """How much of the base model's distance to the teacher fine-tuning removed (1 = all of it,
    0 = none, negative = it moved away).

    p_action: mean over states of (Q_tuned - Q_base) / (P - Q_base) on P(action), taken only
      over states where |P - Q_base| > gap_min, since a tiny denominator makes the ratio explode;
      None when no state qualifies (`states` says how many did).
    divergence: 1 - KL(P || Q_tuned) / KL(P || Q_base), with the mean KLs of `kl`; always
      defined except when the base model already matches the teacher (KL_base == 0: None).
    """
    P, Q_base = _check(P, Q_base)
    _, Q_tuned = _check(P, Q_tuned)
    gap = P[:, 0] - Q_base[:, 0]
    wide = np.abs(gap) > gap_min
    kl_base = kl(P, Q_base)
    return {
        "p_action": float(np.mean((Q_tuned[wide, 0] - Q_base[wide, 0]) / gap[wide])) if wide.any() else None,
        "states": int(wide.sum()),
        "gap_min": gap_min,
        "divergence": 1.0 - kl(P, Q_tuned) / kl_base if kl_base > 0 else None,
    }


def jsd(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits between the rows of P and Q (last axis: options), in
    [0, 1]: scipy.spatial.distance.jensenshannon(P, Q, base=2) squared (scipy returns the
    distance, the divergence's square root). Where rounding leaves scipy's sum of KL terms a
    hair below zero (nearly equal rows: 1 to 48 % of random rows that differ by up to 1e-9)
    its square root is NaN; the divergence there is 0. Rows with NaN stay NaN."""
    P, Q = np.asarray(P, float), np.asarray(Q, float)
    with np.errstate(invalid="ignore"):
        distance = jensenshannon(P, Q, base=2, axis=-1)
    defined = np.isfinite(P).all(axis=-1) & np.isfinite(Q).all(axis=-1) & (P.sum(axis=-1) > 0) & (Q.sum(axis=-1) > 0)
    return (np.where(np.isnan(distance) & defined, 0.0, distance) ** 2)[()]
