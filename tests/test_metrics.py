"""Each metric against scipy / sklearn, on two- and three-option policies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import entropy, pearsonr, spearmanr
from sklearn.metrics import brier_score_loss, log_loss, mean_absolute_error, mean_squared_error

from decision_distill.stats import metrics


@pytest.fixture(params=[2, 3], ids=["K2", "K3"])
def policies(request):
    """Teacher and a noisy student over K options for 300 states."""
    rng = np.random.default_rng(request.param)
    P = rng.dirichlet(np.ones(request.param), size=300)
    Q = 0.7 * P + 0.3 * rng.dirichlet(np.ones(request.param), size=300)
    return P, Q


def expanded(P, Q):
    """One row per (state, option), weighted by the teacher's probability of that option."""
    n, k = P.shape
    return np.tile(np.arange(k), n), np.repeat(Q, k, axis=0), P.ravel()


def test_mse_and_mae_match_sklearn(policies):
    P, Q = policies
    assert metrics.mse(P, Q) == pytest.approx(mean_squared_error(P, Q))
    assert metrics.mae(P, Q) == pytest.approx(mean_absolute_error(P, Q))


def test_correlations_use_the_first_k_minus_1_options(policies):
    P, Q = policies
    p, q = P[:, :-1].ravel(), Q[:, :-1].ravel()
    assert metrics.pearson(P, Q) == pytest.approx(pearsonr(p, q).statistic)
    assert metrics.spearman(P, Q) == pytest.approx(spearmanr(p, q).statistic)


def test_kl_matches_scipy_entropy(policies):
    P, Q = policies
    assert metrics.kl(P, Q) == pytest.approx(np.mean([entropy(p, q) for p, q in zip(P, Q)]))


def test_ce_matches_weighted_log_loss(policies):
    P, Q = policies
    labels, probs, weights = expanded(P, Q)
    expected = log_loss(labels, probs, sample_weight=weights, labels=range(P.shape[1]))
    assert metrics.ce(P, Q) == pytest.approx(expected)
    assert metrics.ce(P, Q) == pytest.approx(metrics.kl(P, Q) + np.mean(entropy(P, axis=1)))


def test_brier_matches_weighted_brier_score_loss(policies):
    P, Q = policies
    labels, probs, weights = expanded(P, Q)
    if P.shape[1] == 2:  # positive-class form: the action is the positive outcome
        expected = brier_score_loss(labels == 0, probs[:, 0], sample_weight=weights)
    else:
        expected = brier_score_loss(labels, probs, sample_weight=weights, labels=range(P.shape[1]))
    assert metrics.brier(P, Q) == pytest.approx(expected)


def test_perfect_student(policies):
    P, _ = policies
    scores = metrics.all_metrics(P, P.copy(), bins=10)
    assert scores["mse"] == scores["mae"] == scores["kl"] == pytest.approx(0.0)
    assert scores["ece"] == pytest.approx(0.0)
    assert scores["pearson"] == pytest.approx(1.0)
    assert scores["agreement"] == 1.0


def test_kl_clips_a_zero_student_probability():
    P = np.array([[0.5, 0.5]])
    Q = np.array([[1.0, 0.0]])
    assert metrics.kl(P, Q) == pytest.approx(0.5 * np.log(0.5 / 1.0) + 0.5 * np.log(0.5 / 1e-12))


def test_ece_by_hand():
    # bins of width 0.5: {0.2, 0.4} -> student 0.3 vs teacher 0.1; {0.8} -> 0.8 vs 0.5
    Q = np.array([[0.2, 0.8], [0.4, 0.6], [0.8, 0.2]])
    P = np.array([[0.1, 0.9], [0.1, 0.9], [0.5, 0.5]])
    mean_student, mean_teacher, count = metrics.calibration_curve(P, Q, bins=2)
    np.testing.assert_allclose(mean_student, [0.3, 0.8])
    np.testing.assert_allclose(mean_teacher, [0.1, 0.5])
    np.testing.assert_array_equal(count, [2, 1])
    assert metrics.ece(P, Q, bins=2) == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.3)


def test_ece_is_zero_when_each_bin_is_calibrated_on_average():
    Q = np.array([[0.25, 0.75], [0.25, 0.75], [0.75, 0.25], [0.75, 0.25]])
    P = np.array([[0.1, 0.9], [0.4, 0.6], [0.6, 0.4], [0.9, 0.1]])
    assert metrics.ece(P, Q, bins=2) == pytest.approx(0.0)
    assert metrics.mae(P, Q) > 0


def test_ece_puts_probability_one_in_the_last_bin():
    P = Q = np.array([[1.0, 0.0], [0.0, 1.0]])
    _, _, count = metrics.calibration_curve(P, Q, bins=4)
    np.testing.assert_array_equal(count, [1, 1])
    assert metrics.ece(P, Q, bins=4) == 0.0


def test_three_option_calibration_and_agreement():
    P = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    Q = np.array([[0.5, 0.4, 0.1], [0.4, 0.2, 0.4], [0.2, 0.5, 0.3]])
    _, _, count = metrics.calibration_curve(P, Q, bins=10)
    assert count.sum() == 6  # first two options of three states
    assert metrics.agreement(P, Q) == pytest.approx(2 / 3)  # state 2: teacher option 3, student option 1


@pytest.mark.parametrize("constant", [[0.3, 0.7], [1 / 3, 1 / 3, 1 / 3]], ids=["K2", "K3-uniform"])
def test_constant_student_has_no_correlation_and_valid_json(constant):
    P = np.random.default_rng(0).dirichlet(np.ones(len(constant)), size=20)
    Q = np.tile(constant, (20, 1))
    scores = metrics.all_metrics(P, Q, bins=10)
    assert scores["pearson"] is None and scores["spearman"] is None
    assert list(scores) == ["mse", "mae", "pearson", "spearman", "kl", "ce", "brier", "ece", "agreement"]
    json.dumps(scores, allow_nan=False)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        metrics.mse(np.full((3, 2), 0.5), np.full((3, 3), 1 / 3))
