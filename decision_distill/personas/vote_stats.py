"""Statistics of the votes stage: the baselines, each arm's metrics, and each arm against each
baseline, every interval from resampling whole questions (the members' votes on one question
are not independent, so the question is the unit).

Metrics of one predictor on known votes (1 = Aye):
  accuracy, balanced accuracy (mean recall of Aye and Nay; 0.5 for any constant vote), macro F1,
  AUROC (how well the predictor's score ranks Aye votes above Nay votes, threshold-free: a
  predictor that leans to Aye on every question can still rank well), and for probabilities
  Brier and log loss.
Every arm beside the baselines: the paired difference (arm - baseline) in accuracy and in
balanced accuracy, the same resampled questions for both; and a sign test over questions
against the headline baseline, the better of the two that use no other member's vote on the
question (FAIR). The other members' majority on the same question is a privileged reference:
an agent voting alone does not have those votes.

Point estimates come from scikit-learn. Inside the bootstrap the same metrics are computed for
every predictor at once by `batch_metrics` (numpy, scipy's ranks): scikit-learn's validation
costs milliseconds a call, and a report resamples 1000 times for some thirty predictors, per
person and pooled. tests/test_vote_stats.py holds the two to the same values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, rankdata
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from ..stats.bootstrap import bootstrap_interval

EPS = 1e-6  # log loss clips P(Aye) into [EPS, 1 - EPS]: one confident miss costs at most 13.8 nats
FAIR = ("overall_majority", "person_majority_loo")
PRIVILEGED = ("others_same_question",)
SCORE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
PROB_METRICS = ("brier", "log_loss")
DIFF_METRICS = ("accuracy", "balanced_accuracy")


@dataclass
class Predictor:
    """One arm (or a variant of it) over the rows of a table; NaN where it was not asked (a
    profile arm for a person without a profile)."""

    score: np.ndarray  # higher = more Aye: ranks the votes for AUROC
    hard: np.ndarray  # the predicted vote, 1 Aye / 0 Nay, by the variant's decision rule
    prob: np.ndarray | None = None  # P(Aye), where the score is a probability (Brier, log loss)

    def rows(self, index: np.ndarray) -> Predictor:
        return Predictor(self.score[index], self.hard[index], None if self.prob is None else self.prob[index])


# ---- baselines ---------------------------------------------------------------------------------------

def majority(votes: np.ndarray, tie: int) -> int:
    aye, nay = int(np.sum(votes == 1)), int(np.sum(votes == 0))
    return 1 if aye > nay else 0 if nay > aye else tie


def baselines(persona: np.ndarray, question: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Hard predictions for every row (truth -1: no recorded vote). Ties (and no other votes to
    count) fall back to the overall majority class, whose own tie is Aye."""
    known = truth >= 0
    overall = majority(truth[known], tie=1)
    n = len(truth)
    person_loo, others = np.full(n, overall), np.full(n, overall)
    for i in range(n):
        mine = known & (persona == persona[i]) & (question != question[i])
        person_loo[i] = majority(truth[mine], overall)
        same = known & (question == question[i]) & (persona != persona[i])
        others[i] = majority(truth[same], overall)
    return {"overall_majority": np.full(n, overall), "person_majority_loo": person_loo,
            "others_same_question": others}


# ---- metrics -----------------------------------------------------------------------------------------

def point_metrics(y: np.ndarray, pred: Predictor) -> dict[str, float | None]:
    """scikit-learn's metrics; AUROC None when only one class was voted."""
    with warnings.catch_warnings():
        # One class present (a person who voted Aye throughout): balanced accuracy is that
        # class's recall, which scikit-learn returns after warning that the other is missing.
        warnings.simplefilter("ignore", UserWarning)
        out = {"accuracy": float(np.mean(pred.hard == y)),
               "balanced_accuracy": float(balanced_accuracy_score(y, pred.hard)),
               "macro_f1": float(f1_score(y, pred.hard, labels=[0, 1], average="macro", zero_division=0)),
               "auroc": float(roc_auc_score(y, pred.score)) if len(np.unique(y)) == 2 else None}
    if pred.prob is not None:
        p = np.clip(pred.prob, EPS, 1 - EPS)
        out["brier"] = float(np.mean((pred.prob - y) ** 2))
        out["log_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return out


def batch_metrics(y: np.ndarray, hard: np.ndarray, score: np.ndarray, prob: np.ndarray) -> dict[str, np.ndarray]:
    """point_metrics for every column of `hard`, `score` [rows, predictors] and `prob` [rows, the
    predictors with probabilities] at once; AUROC NaN when only one class was voted."""
    aye = (y == 1)[:, None]
    n_aye, n_nay = int(aye.sum()), int(len(y) - aye.sum())
    right = hard == y[:, None]
    recalls = [(right & cls).sum(0) / n for cls, n in ((aye, n_aye), (~aye, n_nay)) if n]
    f1 = []
    for c, cls in ((1, aye), (0, ~aye)):
        tp, fp, fn = ((hard == c) & cls).sum(0), ((hard == c) & ~cls).sum(0), ((hard != c) & cls).sum(0)
        f1.append(np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(hard.shape[1]), where=2 * tp + fp + fn > 0))
    if n_aye and n_nay:  # Mann-Whitney: AUROC = (rank sum of the Aye votes - its minimum) / (n_aye n_nay)
        auroc = (rankdata(score, axis=0)[aye[:, 0]].sum(0) - n_aye * (n_aye + 1) / 2) / (n_aye * n_nay)
    else:
        auroc = np.full(score.shape[1], np.nan)
    p = np.clip(prob, EPS, 1 - EPS)
    yy = y[:, None]
    return {"accuracy": right.mean(0), "balanced_accuracy": np.mean(recalls, axis=0), "macro_f1": np.mean(f1, axis=0),
            "auroc": auroc, "brier": ((prob - yy) ** 2).mean(0),
            "log_loss": -(yy * np.log(p) + (1 - yy) * np.log(1 - p)).mean(0)}


def sign_test(y: np.ndarray, question: np.ndarray, hard_a: np.ndarray, hard_b: np.ndarray) -> dict:
    """Per question, the share of its votes a gets right minus the share b does; the exact
    two-sided binomial test on the questions where they differ. The question is the unit: a
    row-level test (McNemar) would count one question's correlated votes as independent."""
    _, qi = np.unique(question, return_inverse=True)
    # Counts of +1 / -1 per question: exactly zero where a and b are right equally often.
    diff = np.bincount(qi, (hard_a == y).astype(float) - (hard_b == y))
    better, worse = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    p = binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    return {"questions_arm_better": better, "questions_baseline_better": worse,
            "questions_tied": int(len(diff) - better - worse), "p_value": float(p)}


# ---- one scope (pooled, or one person) ----------------------------------------------------------------

def _compare(y, q, base: dict[str, Predictor], arms: dict[str, Predictor], kw) -> dict[str, dict]:
    """Every predictor's metrics and every arm's differences from every baseline, with intervals
    from one clustered resampling of the questions shared by all of them."""
    everyone = {**base, **arms}
    points = {name: point_metrics(y, pred) for name, pred in everyone.items()}
    with_prob = [name for name, pred in everyone.items() if pred.prob is not None]
    # One entry per reported number: (predictor, metric) or (arm, metric, baseline) for a difference.
    keys = [(name, m) for m in SCORE_METRICS for name in everyone]
    keys += [(name, m) for m in PROB_METRICS for name in with_prob]
    keys += [(a, m, b) for m in DIFF_METRICS for a in arms for b in base]
    point = np.array([points[k[0]][k[1]] if len(k) == 2 else points[k[0]][k[1]] - points[k[2]][k[1]] for k in keys],
                     dtype=float)  # None (AUROC of one class) becomes NaN
    defined = ~np.isnan(point)  # e.g. AUROC where one class only: no value, so no interval either
    nb = len(base)

    def statistic(y_, hard, score, prob):
        m = batch_metrics(y_, hard, score, prob)
        diffs = [(m[d][nb:, None] - m[d][None, :nb]).ravel() for d in DIFF_METRICS]
        return np.concatenate([m[s] for s in SCORE_METRICS] + [m[s] for s in PROB_METRICS] + diffs)[defined]

    def stack(attr, names):
        return np.column_stack([getattr(everyone[n], attr) for n in names]) if names else np.zeros((len(y), 0))

    samples = (y, stack("hard", everyone), stack("score", everyone), stack("prob", with_prob))
    ci = bootstrap_interval(statistic, *samples, groups=q, paired=True, **kw)
    low, high = (ci if ci is not None else ([None] * int(defined.sum()),) * 2)
    bounds, j = {}, 0
    for k, ok in zip(keys, defined):
        bounds[k] = [float(low[j]), float(high[j])] if ok and low[j] is not None else [None, None]
        j += int(ok)
    out = {}
    for name in everyone:
        block = out[name] = {}
        for m, estimate in points[name].items():
            block[m], block[f"{m}_ci"] = estimate, bounds[(name, m)]
        block["predicted_aye_share"] = float(np.mean(everyone[name].hard))
    for a in arms:
        out[a]["vs_baselines"] = {b: {**{f"{m}_diff": points[a][m] - points[b][m] for m in DIFF_METRICS},
                                      **{f"{m}_diff_ci": bounds[(a, m, b)] for m in DIFF_METRICS},
                                      "privileged": b in PRIVILEGED} for b in base}
    return out


def scope_report(y: np.ndarray, q: np.ndarray, base: dict[str, np.ndarray], arms: dict[str, Predictor],
                 resamples: int, confidence: float, seed: int) -> dict:
    """Baselines and arms on one scope's known votes `y` (questions `q`). An arm is scored on the
    rows where it was asked; against the baselines on those same rows."""
    kw = dict(resamples=resamples, confidence=confidence, seed=seed)
    base_pred = {b: Predictor(v.astype(float), v) for b, v in base.items()}
    blocks = _compare(y, q, base_pred, {}, kw)
    out = {"baselines": {b: {**blocks[b], "privileged": b in PRIVILEGED} for b in base}}
    fair = [b for b in FAIR if b in base]
    best = max(fair, key=lambda b: (blocks[b]["accuracy"], blocks[b]["balanced_accuracy"]))
    out["headline_baseline"] = best
    out["models"] = {}
    # Arms asked on the same rows share one resampling (all arms but a profile arm missing people).
    by_rows: dict[bytes, list[str]] = {}
    for name, pred in arms.items():
        asked = ~np.isnan(pred.score)
        if asked.any():
            by_rows.setdefault(asked.tobytes(), []).append(name)
    for names in by_rows.values():
        rows = np.flatnonzero(~np.isnan(arms[names[0]].score))
        blocks = _compare(y[rows], q[rows], {b: p.rows(rows) for b, p in base_pred.items()},
                          {n: arms[n].rows(rows) for n in names}, kw)
        for n in names:
            block = {"rows": int(len(rows)), **blocks[n]}
            vs = block["vs_baselines"][best]
            block["headline"] = {"baseline": best, **{k: v for k, v in vs.items() if k != "privileged"},
                                 "sign_test": sign_test(y[rows], q[rows], arms[n].hard[rows], base[best][rows])}
            out["models"][n] = block
    out["models"] = {n: out["models"][n] for n in arms if n in out["models"]}  # the arms' order
    return out
