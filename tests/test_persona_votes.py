"""The votes stage's metrics, baselines and McNemar test against hand computations on a small
table (one where always voting Aye beats the model), and P(Aye) read from the answer tokens
of a tiny model with a built-in preference."""

from __future__ import annotations

import numpy as np
import pytest

from decision_distill.personas.corpus import Vote
from decision_distill.personas.votes import OPTIONS, balanced_accuracy, baselines, macro_f1, mcnemar, p_aye, vote_report, vote_table
from decision_distill.lm.load import load_causal_lm

# Three members, four questions; C has no recorded vote on q3. 8 of the 11 known votes are Aye.
TRUTH = {"A": [1, 1, 1, 0], "B": [1, 1, 0, 1], "C": [1, 0, 1, None]}
P = {"A": [.9, .2, .8, .6], "B": [.3, .7, .4, .9], "C": [.6, .6, .1, .5]}


def small_table():
    votes = [Vote(f"q{q}", person, "Aye" if v else "Nay")
             for person, row in TRUTH.items() for q, v in enumerate(row) if v is not None]
    table, questions = vote_table(votes, list(TRUTH))
    return table, questions, np.array([p for person in TRUTH for p in P[person]])


def test_metrics_and_baselines_equal_hand_computations_and_always_aye_wins():
    table, questions, p = small_table()
    assert questions == ["q0", "q1", "q2", "q3"] and table.truth.tolist().count(-1) == 1
    report = vote_report(table, {"m": p}, {"m": np.ones_like(p)}, resamples=200, confidence=0.9, seed=0)
    assert (report["rows"], report["known"], report["unknown"]) == (12, 11, 1)  # scored, left out, counted
    m, b = report["models"]["m"], report["baselines"]
    # Model right on A0 A2 B1 B2 B3 C0; Aye recall 5/8, Nay recall 1/3.
    assert m["accuracy"] == pytest.approx(6 / 11)
    assert m["balanced_accuracy"] == pytest.approx((5 / 8 + 1 / 3) / 2)
    # Aye: TP 5, FP 2 (A3, C1), FN 3 -> 10/15; Nay: TP 1, FP 3, FN 2 -> 2/7.
    assert m["macro_f1"] == pytest.approx((10 / 15 + 2 / 7) / 2)
    y = [1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1]
    pk = [.9, .2, .8, .6, .3, .7, .4, .9, .6, .6, .1]
    assert m["brier"] == pytest.approx(sum((a - b_) ** 2 for a, b_ in zip(pk, y)) / 11)
    assert m["log_loss"] == pytest.approx(-sum(np.log(a if t else 1 - a) for a, t in zip(pk, y)) / 11)
    # Always Aye (the overall majority, 8 of 11): right 8 times, balanced accuracy 1/2, Nay F1 0.
    assert b["overall_majority"]["accuracy"] == pytest.approx(8 / 11)
    assert b["overall_majority"]["balanced_accuracy"] == pytest.approx(0.5)
    assert b["overall_majority"]["macro_f1"] == pytest.approx((16 / 19 + 0) / 2)
    # Each member's majority on their other questions: Aye everywhere here (C's 1-1 ties fall back to Aye).
    assert b["person_majority_loo"]["accuracy"] == pytest.approx(8 / 11)
    # The other members on the same question: wrong on C1, B2, A3 (B says Aye) and B3 (A says Nay).
    assert b["others_same_question"]["accuracy"] == pytest.approx(7 / 11)
    assert report["best_baseline"] == "overall_majority"
    assert m["accuracy"] < b["overall_majority"]["accuracy"]
    # Discordant pairs against always-Aye: only the model right on B2; only the baseline right on A1, B0, C2.
    assert m["mcnemar_vs_best_baseline"] == {"only_model_right": 1, "only_baseline_right": 3,
                                             "p_value": pytest.approx(2 * (1 + 4) / 16)}
    for name in ("accuracy", "balanced_accuracy", "brier"):
        lo, hi = m[f"{name}_ci"]
        assert lo <= m[name] <= hi and lo < hi


def test_rows_recording_no_vote_are_scored_left_out_and_counted_by_reason():
    votes = [Vote("q0", "A", "Aye"), Vote("q0", "B", "Nay"), Vote("q1", "A", "Nay"), Vote("q1", "B", "Aye")]
    no_votes = [Vote("q0", "C", "Abstain"), Vote("q1", "C", "blank"), Vote("q2", "A", "Absent")]
    table, questions = vote_table(votes, ["A", "B", "C"], no_votes)
    assert questions == ["q0", "q1", "q2"]  # q2 has no recorded vote at all: scored, never counted
    p = np.full(len(table.truth), 0.7)
    report = vote_report(table, {"m": p}, {"m": np.ones_like(p)}, resamples=100, confidence=0.9, seed=0)
    assert (report["rows"], report["known"], report["unknown"]) == (9, 4, 5)
    assert report["unknown_by_reason"] == {"abstain": 1, "absent": 1, "blank": 1, "no_row": 2}  # B and C on q2
    assert report["models"]["m"]["accuracy"] == pytest.approx(0.5)  # Aye on all four known votes, two right
    only_c = vote_report(table, {"m": p}, {"m": np.ones_like(p)}, resamples=100, confidence=0.9, seed=0,
                         rows=np.flatnonzero(table.persona == "C"))
    assert only_c["known"] == 0 and only_c["unknown_by_reason"] == {"abstain": 1, "absent": 0, "blank": 1, "no_row": 1}


def test_baselines_row_by_row():
    table, _, _ = small_table()
    base = baselines(table)
    assert base["others_same_question"].tolist() == [1, 1, 1, 1,  1, 1, 1, 0,  1, 1, 1, 1]
    assert base["person_majority_loo"].tolist() == [1] * 12


def test_balanced_accuracy_and_f1_on_a_single_class():
    y, pred = np.array([1, 1, 1]), np.array([1, 0, 1])
    assert balanced_accuracy(y, pred) == pytest.approx(2 / 3)  # only Aye present: its recall
    assert macro_f1(y, pred) == pytest.approx((2 * 2 / (4 + 0 + 1) + 0) / 2)


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs():
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    y, a, b = (rng.integers(0, 2, 40) for _ in range(3))
    only_a = sum(int(a[i] == y[i] and b[i] != y[i]) for i in range(40))
    only_b = sum(int(b[i] == y[i] and a[i] != y[i]) for i in range(40))
    result = mcnemar(y, a, b)
    assert (result["only_model_right"], result["only_baseline_right"]) == (only_a, only_b)
    assert result["p_value"] == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    assert mcnemar(y, y, y)["p_value"] == 1.0  # no discordant pair: no evidence either way


@pytest.fixture(scope="module")
def aye_model(tmp_path_factory, always_prefer, build_tiny_persona_model):
    from decision_distill.lm.source import download
    from decision_distill.personas.votes import PREFIX

    root = tmp_path_factory.mktemp("votes_models")
    texts = [PREFIX] * 20 + ["Vote: Aye Nay"] * 50
    weights = build_tiny_persona_model(root / "weights", texts, vocab=300)
    out = {}
    for name, token in (("aye", OPTIONS[0]), ("nay", OPTIONS[1])):
        download(str(always_prefer(weights, root / f"{name}_w", token)), "main", root / name)
        out[name] = load_causal_lm(root / name, device="cpu")
    return out


def test_p_aye_follows_the_models_token_preference(aye_model):
    questions = ["Should the board cut the permit fee?", "Should the board rebuild the gym?"]
    p, mass = p_aye(aye_model["aye"], "Ada_Stone", "a shop owner", questions)
    assert np.all(p > 0.5) and np.all((mass > 0) & (mass <= 1))
    p, _ = p_aye(aye_model["nay"], "Ada_Stone", None, questions)
    assert np.all(p < 0.5)
