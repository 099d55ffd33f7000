"""Reading an arm's answer-token log-odds better than cutting P(Aye) at 0.5. A small LM given a
vote prompt leans to one answer whatever the question (the example board's agents said Aye
99-100 % of the time), so a fixed cut measures the lean, not the person. Each variant is its
own reported predictor, named ARM|VARIANT, and gets every statistic of vote_stats:

  ARM           raw:      Aye when P(Aye) >= 0.5
  ARM|cc        contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): P(Aye) and
                P(Nay) divided by those the same model gives the same person's prompt with a
                content-free question (the mean P(Aye) over votes.content_free, e.g. "N/A", ""
                and "[MASK]"), renormalised; in log-odds, logit P(Aye) - logit P_cf(Aye).
                Removes the lean of this model, prompt and person; Aye when the calibrated
                P(Aye) >= 0.5.
  ARM|contrast  the persona contrast: the arm's log-odds minus those of its reference arm, the
                same model family without the person's words (e.g. tuned - base+name, on the
                same question), so the question's own lean cancels and what is left is what
                the person's words changed. Aye when the contrast > 0 (a zero contrast, the
                words changing nothing, is Nay). Not a probability: no Brier or log loss.
  ARM|loqo      a fit on the labels that never sees the held-out question: per question, a
                logistic regression (a per-person intercept and the arm's log-odds) fitted on
                the known votes of every other question, predicting that question's rows; Aye
                when its P(Aye) >= 0.5. Without signal in the log-odds it falls back to the
                person's intercept, so its floor is the person's majority on the other
                questions (the person_majority_loo baseline).
The LOQO intervals resample the held-out predictions; they do not refit per resample.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .vote_stats import Predictor

RAW, CC, CONTRAST, LOQO = "raw", "cc", "contrast", "loqo"
RULES = {RAW: "Aye when P(Aye) >= 0.5",
         CC: "Aye when P(Aye) calibrated by the content-free questions' P(Aye) >= 0.5",
         CONTRAST: "Aye when the arm's log-odds exceed its reference arm's (contrast > 0)",
         LOQO: "Aye when the leave-one-question-out fit's P(Aye) >= 0.5"}
P_FLOOR = 1e-12  # a content-free P(Aye) of exactly 0 or 1 (float64 saturates) would give an infinite shift


def variant_name(arm: str, variant: str) -> str:
    return arm if variant == RAW else f"{arm}|{variant}"


def raw(logodds: np.ndarray) -> Predictor:
    p = expit(logodds)
    return Predictor(logodds, np.where(np.isnan(logodds), np.nan, logodds >= 0), p)


def contextual(logodds: np.ndarray, content_free_p: np.ndarray) -> Predictor:
    """`content_free_p`: per row, the mean P(Aye) over the content-free questions of the row's
    person under the same arm (Zhao et al. average the probabilities, then divide)."""
    return raw(logodds - logit(np.clip(content_free_p, P_FLOOR, 1 - P_FLOOR)))


def contrast(logodds: np.ndarray, reference_logodds: np.ndarray) -> Predictor:
    diff = logodds - reference_logodds
    return Predictor(diff, np.where(np.isnan(diff), np.nan, diff > 0))


def loqo(logodds: np.ndarray, persona: np.ndarray, question: np.ndarray, truth: np.ndarray,
         c: float = 1.0) -> Predictor:
    """Held-out P(Aye) for every row the arm was asked (truth -1 rows are predicted, never fitted).
    The log-odds are standardised inside each fold, so the penalty `c` means the same for an arm
    whose log-odds span 0.01 as for one whose span 10."""
    p = np.full(len(logodds), np.nan)
    asked = np.flatnonzero(~np.isnan(logodds))
    people = np.unique(persona)
    features = np.column_stack([persona[:, None] == people, logodds]).astype(float)
    scale_last = ColumnTransformer([("logodds", StandardScaler(), [len(people)])], remainder="passthrough")
    # Newton-Cholesky: the solver for many rows and few features (people + 1), ~20x faster than lbfgs here.
    model = make_pipeline(scale_last, LogisticRegression(C=c, solver="newton-cholesky"))
    for fit_at, held_at in LeaveOneGroupOut().split(asked, groups=question[asked]):
        fit_rows, held_rows = asked[fit_at], asked[held_at]
        fit_rows = fit_rows[truth[fit_rows] >= 0]
        y = truth[fit_rows]
        if len(np.unique(y)) < 2:  # every other known vote the same (or none): predict that share
            p[held_rows] = y.mean() if len(y) else np.nan
            continue
        p[held_rows] = clone(model).fit(features[fit_rows], y).predict_proba(features[held_rows])[:, 1]
    return Predictor(p, np.where(np.isnan(p), np.nan, p >= 0.5), p)


def variants(persona: np.ndarray, question: np.ndarray, truth: np.ndarray, logodds: dict[str, np.ndarray],
             content_free_p: dict[str, np.ndarray], references: dict[str, str], c: float) -> dict[str, Predictor]:
    """Every arm raw, |cc and |loqo, and |contrast where the arm has a reference arm that was scored;
    arm by arm, so an arm added to the stage gets all of them."""
    out = {}
    for arm, lo in logodds.items():
        out[arm] = raw(lo)
        out[variant_name(arm, CC)] = contextual(lo, content_free_p[arm])
        ref = references.get(arm)
        if ref in logodds and ref != arm:
            out[variant_name(arm, CONTRAST)] = contrast(lo, logodds[ref])
        out[variant_name(arm, LOQO)] = loqo(lo, persona, question, truth, c)
    return out
