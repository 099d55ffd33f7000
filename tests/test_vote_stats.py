"""The votes stage's statistics (decision_distill/personas/vote_stats.py): the bootstrap's
vectorised metrics equal scikit-learn's, intervals resample whole questions and pair each arm
with its baseline, and the question-level sign test on a count worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from decision_distill.personas.vote_stats import Predictor, batch_metrics, point_metrics, scope_report, sign_test


def test_the_bootstraps_vectorised_metrics_equal_scikit_learns():
    """On random tables with tied scores, both classes or one: the numbers inside the bootstrap are
    the reported point estimates' numbers."""
    rng = np.random.default_rng(4)
    for trial in range(30):
        n = int(rng.integers(2, 40))
        y = np.ones(n, int) if trial % 10 == 0 else rng.integers(0, 2, n)
        score = rng.integers(0, 5, (n, 3)).astype(float)  # few values: many ties
        hard = (score >= 2).astype(int)
        prob = rng.uniform(0, 1, (n, 3))
        batch = batch_metrics(y, hard, score, prob)
        for k in range(3):
            point = point_metrics(y, Predictor(score[:, k], hard[:, k], prob[:, k]))
            for metric, value in point.items():
                if value is None:
                    assert np.isnan(batch[metric][k]), metric
                else:
                    assert batch[metric][k] == pytest.approx(value, abs=1e-12), (metric, trial)


def test_the_sign_test_counts_questions_not_votes():
    """Six questions of three votes, all Aye. On q0 the baseline misses two votes and the arm one;
    on q1..q5 the arm misses one and the baseline none. Row by row (McNemar) that is 2 votes only
    the arm got right against 6; by question, 1 question the arm won against 5."""
    q = np.repeat(np.arange(6), 3)
    y = np.ones(18, int)
    base = np.ones(18, int)
    base[[0, 1]] = 0
    arm = np.ones(18, int)
    arm[[2, 3, 6, 9, 12, 15]] = 0
    result = sign_test(y, q, arm, base)
    assert (result["questions_arm_better"], result["questions_baseline_better"], result["questions_tied"]) == (1, 5, 0)
    assert result["p_value"] == pytest.approx(2 * (1 + 6) / 64)  # 2 P(X <= 1), X ~ Binomial(6, 1/2)


def _one_aye_one_nay(questions: int):
    """Two members per question, one Aye and one Nay, in random order per question."""
    rng = np.random.default_rng(0)
    y = np.array([v for _ in range(questions) for v in rng.permutation([0, 1])])
    return y, np.repeat(np.arange(questions), 2)


def test_intervals_resample_whole_questions():
    """Every question holds one Aye and one Nay, so always-Aye is right on exactly half of any
    resample of whole questions: a zero-width interval at 0.5. Resampling votes one by one would
    give it a width of about +-0.14."""
    y, q = _one_aye_one_nay(25)
    aye = np.ones(len(y))
    report = scope_report(y, q, {"overall_majority": aye.astype(int)},
                          {"always": Predictor(aye, aye, np.full(len(y), 0.7))}, 300, 0.95, 0)
    arm = report["models"]["always"]
    assert arm["accuracy"] == 0.5 and arm["accuracy_ci"] == [0.5, 0.5]
    assert arm["brier"] == pytest.approx((0.3 ** 2 + 0.7 ** 2) / 2) and arm["brier_ci"] == pytest.approx([0.29, 0.29])
    assert arm["auroc"] == 0.5 and arm["auroc_ci"] == [0.5, 0.5]


def test_differences_from_a_baseline_are_paired_on_the_same_questions():
    """Question i (three members): the baseline gets b_i of its votes right (0, 1 or 2, at random) and
    the arm b_i + 1. Each one's accuracy varies with the questions drawn; their difference is +1/3 in
    every resample that draws the same questions for both."""
    rng = np.random.default_rng(1)
    n_q = 20
    q = np.repeat(np.arange(n_q), 3)
    y = rng.integers(0, 2, 3 * n_q)
    right_base = rng.integers(0, 3, n_q)
    member = np.tile(np.arange(3), n_q)
    base = np.where(member < right_base[q], y, 1 - y)
    arm = np.where(member < right_base[q] + 1, y, 1 - y)
    report = scope_report(y, q, {"overall_majority": base}, {"arm": Predictor(arm.astype(float), arm)}, 300, 0.95, 0)
    arm_block, base_block = report["models"]["arm"], report["baselines"]["overall_majority"]
    vs = arm_block["vs_baselines"]["overall_majority"]
    assert vs["accuracy_diff"] == pytest.approx(1 / 3) and vs["accuracy_diff_ci"] == pytest.approx([1 / 3, 1 / 3])
    assert arm_block["accuracy"] == pytest.approx(base_block["accuracy"] + 1 / 3)
    for block in (arm_block, base_block):
        lo, hi = block["accuracy_ci"]
        assert hi - lo > 0.1
    assert arm_block["headline"]["sign_test"]["questions_arm_better"] == n_q


def test_an_arm_asked_of_some_people_is_compared_on_their_rows_only():
    y = np.array([1, 0, 1, 0, 1, 0])
    q = np.array([0, 0, 1, 1, 2, 2])
    score = np.array([2.0, -1.0, np.nan, np.nan, 1.0, -3.0])  # not asked on q1
    hard = np.where(np.isnan(score), np.nan, score > 0)
    always = np.ones(6, int)
    report = scope_report(y, q, {"overall_majority": always}, {"part": Predictor(score, hard)}, 200, 0.95, 0)
    part = report["models"]["part"]
    assert part["rows"] == 4 and part["accuracy"] == 1.0 and part["auroc"] == 1.0
    assert part["vs_baselines"]["overall_majority"]["accuracy_diff"] == pytest.approx(1.0 - 0.5)
