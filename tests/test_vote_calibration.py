"""Reading an arm's log-odds three more ways (decision_distill/personas/calibration.py), on
synthetic tables with a known lean: contextual calibration removes each person's constant lean,
the persona contrast cancels each question's lean, and the leave-one-question-out fit never sees
the held-out question's votes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from decision_distill.personas.calibration import contextual, contrast, loqo, raw, variants
from decision_distill.personas.vote_stats import baselines


def _grid(people: int, questions: int):
    return np.repeat(np.arange(people), questions), np.tile(np.arange(questions), people)


def test_contextual_calibration_is_zhaos_division_by_the_content_free_probabilities():
    # P(Aye) 0.9 after a content-free P(Aye) of 0.75: (0.9 / 0.75) / (0.9 / 0.75 + 0.1 / 0.25) = 0.75;
    # 0.6 after 0.8: (0.6 / 0.8) / (0.6 / 0.8 + 0.4 / 0.2) = 3 / 11, an Aye turned Nay.
    out = contextual(np.log(np.array([0.9 / 0.1, 0.6 / 0.4])), np.array([0.75, 0.8]))
    assert out.prob == pytest.approx([1.2 / 1.6, 3 / 11])
    assert out.hard.tolist() == [1, 0]


def test_contextual_calibration_removes_each_persons_constant_lean():
    """Every row's log-odds = the person's lean (1.5 to 6 towards Aye, whatever the question) + a
    content signal whose sign is the vote. The model's reading of the content-free questions is the
    lean alone, up to noise. Raw, nearly everything is Aye; calibrated, the signal decides."""
    rng = np.random.default_rng(0)
    persona, question = _grid(4, 40)
    lean = np.array([1.5, 3.0, 4.5, 6.0])[persona]
    signal = rng.normal(0, 1, len(persona))
    truth = (signal > 0).astype(int)
    content_free = np.array([np.mean(1 / (1 + np.exp(-(m + rng.normal(0, 0.1, 3))))) for m in lean])
    logodds = lean + signal
    before = balanced_accuracy_score(truth, raw(logodds).hard)
    after = balanced_accuracy_score(truth, contextual(logodds, content_free).hard)
    assert before < 0.65 and after > 0.9
    # The lean is each person's own: one correction for everyone (the mean content-free P) is no fix.
    pooled = balanced_accuracy_score(truth, contextual(logodds, np.full(len(lean), content_free.mean())).hard)
    assert pooled < 0.8


def test_the_persona_contrast_cancels_each_questions_lean():
    """Each question leans strongly one way for the model with or without the person's words (sd 3 in
    log-odds); the person's words add +-1 by their vote. Raw, the question's lean decides most votes;
    the contrast with the reference arm (same model, no words) leaves only the person's part."""
    rng = np.random.default_rng(1)
    persona, question = _grid(5, 30)
    truth = rng.integers(0, 2, len(persona))
    lean = rng.normal(0, 3, 30)[question]
    reference = lean + rng.normal(0, 0.05, len(persona))
    arm = lean + np.where(truth == 1, 1.0, -1.0)
    assert balanced_accuracy_score(truth, raw(arm).hard) < 0.75
    assert balanced_accuracy_score(truth, contrast(arm, reference).hard) == 1.0
    # Through variants(): only an arm with a scored reference gets a contrast; every arm the rest.
    content_free = {"tuned": np.full(len(arm), 0.5), "base+name": np.full(len(arm), 0.5)}
    names = variants(persona, question, truth, {"tuned": arm, "base+name": reference}, content_free,
                     {"tuned": "base+name", "base+profile": "base+name"}, 1.0)
    assert set(names) == {"tuned", "tuned|cc", "tuned|contrast", "tuned|loqo", "base+name", "base+name|cc",
                          "base+name|loqo"}
    assert names["tuned|contrast"].prob is None  # a difference of log-odds, no probability


def test_loqo_never_sees_the_held_out_questions_votes():
    rng = np.random.default_rng(2)
    persona, question = _grid(4, 20)
    truth = rng.integers(0, 2, len(persona))
    logodds = 2.0 + (2 * truth - 1) * 0.8 + rng.normal(0, 1, len(persona))
    first = loqo(logodds, persona, question, truth).prob
    flipped = truth.copy()
    flipped[question == 0] ^= 1  # every vote on question 0 reversed
    second = loqo(logodds, persona, question, flipped).prob
    np.testing.assert_array_equal(second[question == 0], first[question == 0])  # its own votes never used
    assert not np.allclose(second[question != 0], first[question != 0])  # but they train every other fold


def test_loqo_on_a_person_split_half_and_half_gets_every_held_out_vote_wrong():
    """No signal in the log-odds and 15 Aye, 15 Nay: without the held-out vote the rest lean the other
    way, so every prediction is wrong. A fit that saw the held-out vote would be at 50/50 every time
    (and call it Aye): half right. Accuracy 0 is the mark of a fit that never saw it."""
    question = np.arange(30)
    persona = np.zeros(30, int)
    truth = np.array([1, 0] * 15)
    pred = loqo(np.zeros(30), persona, question, truth)
    assert np.all(pred.hard != truth)


def test_loqos_floor_is_the_persons_majority_on_the_other_questions():
    """Log-odds without signal: the fit is each person's intercept, i.e. their majority elsewhere."""
    persona, question = _grid(2, 30)
    rng = np.random.default_rng(3)
    truth = np.concatenate([rng.permutation([1] * 24 + [0] * 6), rng.permutation([1] * 6 + [0] * 24)])
    pred = loqo(np.full(60, 1.7), persona, question, truth)
    np.testing.assert_array_equal(pred.hard, baselines(persona, question, truth)["person_majority_loo"])


def test_loqo_learns_a_signal_under_a_lean_and_predicts_unrecorded_votes():
    rng = np.random.default_rng(4)
    persona, question = _grid(3, 30)
    truth = rng.integers(0, 2, len(persona))
    logodds = np.array([3.0, 5.0, 7.0])[persona] + 1.5 * (2 * truth - 1) + rng.normal(0, 0.5, len(persona))
    truth_with_gaps = truth.copy()
    truth_with_gaps[:5] = -1  # no recorded vote: predicted, never fitted
    pred = loqo(logodds, persona, question, truth_with_gaps)
    assert balanced_accuracy_score(truth, raw(logodds).hard) == 0.5
    assert balanced_accuracy_score(truth[5:], pred.hard[5:]) > 0.9
    assert not np.isnan(pred.prob[:5]).any()
