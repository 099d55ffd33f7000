"""The votes stage: its metrics, baselines and question-level comparisons against hand computations
on a small table (one where always voting Aye beats the model), P(Aye) read from the answer
tokens of a tiny model with a built-in preference, every answer (content-free questions too)
through the answer cache, and a corpus without profiles reported under name-only labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.special import logit

from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import load_causal_lm
from decision_distill.personas.calibration import raw
from decision_distill.personas.corpus import Vote
from decision_distill.personas.vote_stats import baselines, batch_metrics, point_metrics, Predictor
from decision_distill.personas.votes import OPTIONS, p_aye, scope, score_all, vote_suffix, vote_table

REPO = Path(__file__).resolve().parents[1]

# Three members, four questions; C has no recorded vote on q3. 8 of the 11 known votes are Aye.
TRUTH = {"A": [1, 1, 1, 0], "B": [1, 1, 0, 1], "C": [1, 0, 1, None]}
P = {"A": [.9, .2, .8, .6], "B": [.3, .7, .4, .9], "C": [.6, .6, .1, .5]}


def small_table():
    votes = [Vote(f"q{q}", person, "Aye" if v else "Nay")
             for person, row in TRUTH.items() for q, v in enumerate(row) if v is not None]
    table, questions = vote_table(votes, list(TRUTH))
    return table, questions, np.array([p for person in TRUTH for p in P[person]])


def test_metrics_baselines_and_comparisons_equal_hand_computations_and_always_aye_wins():
    table, questions, p = small_table()
    assert questions == ["q0", "q1", "q2", "q3"] and table.truth.tolist().count(-1) == 1
    report = scope(table, {"m": raw(logit(p))}, {"m": np.ones_like(p)}, np.arange(12), resamples=200,
                   confidence=0.9, seed=0)
    assert (report["rows"], report["known"], report["unknown"]) == (12, 11, 1)  # scored, left out, counted
    m, b = report["models"]["m"], report["baselines"]
    # Model right on A0 A2 B1 B2 B3 C0 (C3's P = 0.5 is Aye); Aye recall 5/8, Nay recall 1/3.
    assert m["accuracy"] == pytest.approx(6 / 11)
    assert m["balanced_accuracy"] == pytest.approx((5 / 8 + 1 / 3) / 2)
    # Aye: TP 5, FP 2 (A3, C1), FN 3 -> 10/15; Nay: TP 1, FP 3, FN 2 -> 2/7.
    assert m["macro_f1"] == pytest.approx((10 / 15 + 2 / 7) / 2)
    # AUROC: of the 8 x 3 (Aye, Nay) pairs the Aye vote has the higher P in 13, ties in 2 (0.6 vs 0.6):
    # Aye .9 .8 .7 .9 beat all three Nay (.6 .4 .6), Aye .6 beats .4 and ties both .6, .3 .2 .1 beat none.
    assert m["auroc"] == pytest.approx((4 * 3 + 1 + 2 * 0.5) / 24)
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
    assert b["others_same_question"]["privileged"] and not b["overall_majority"]["privileged"]
    # The headline: the better fair baseline (a tie at 8/11 and 0.5; the first listed), never the privileged one.
    assert report["headline_baseline"] == "overall_majority"
    head = m["headline"]
    assert head["accuracy_diff"] == pytest.approx(6 / 11 - 8 / 11)
    assert head["balanced_accuracy_diff"] == pytest.approx((5 / 8 + 1 / 3) / 2 - 0.5)
    assert m["vs_baselines"]["others_same_question"]["accuracy_diff"] == pytest.approx(6 / 11 - 7 / 11)
    # Per question, votes right (model - always Aye): q0 2-3, q1 1-2, q2 2-2, q3 1-1: two questions
    # for the baseline, none for the model; two-sided binomial p = 2 * (1/2)^2.
    assert head["sign_test"] == {"questions_arm_better": 0, "questions_baseline_better": 2, "questions_tied": 2,
                                 "p_value": pytest.approx(0.5)}
    for name in ("accuracy", "balanced_accuracy", "auroc", "brier"):
        lo, hi = m[f"{name}_ci"]
        assert lo <= m[name] <= hi and lo < hi
    lo, hi = head["accuracy_diff_ci"]
    assert lo <= head["accuracy_diff"] <= hi


def test_rows_recording_no_vote_are_scored_left_out_and_counted_by_reason():
    votes = [Vote("q0", "A", "Aye"), Vote("q0", "B", "Nay"), Vote("q1", "A", "Nay"), Vote("q1", "B", "Aye")]
    no_votes = [Vote("q0", "C", "Abstain"), Vote("q1", "C", "blank"), Vote("q2", "A", "Absent")]
    table, questions = vote_table(votes, ["A", "B", "C"], no_votes)
    assert questions == ["q0", "q1", "q2"]  # q2 has no recorded vote at all: scored, never counted
    p = np.full(len(table.truth), 0.7)
    report = scope(table, {"m": raw(logit(p))}, {"m": np.ones_like(p)}, np.arange(len(p)), resamples=100,
                   confidence=0.9, seed=0)
    assert (report["rows"], report["known"], report["unknown"]) == (9, 4, 5)
    assert report["unknown_by_reason"] == {"abstain": 1, "absent": 1, "blank": 1, "no_row": 2}  # B and C on q2
    assert report["models"]["m"]["accuracy"] == pytest.approx(0.5)  # Aye on all four known votes, two right
    only_c = scope(table, {"m": raw(logit(p))}, {"m": np.ones_like(p)}, np.flatnonzero(table.persona == "C"),
                   resamples=100, confidence=0.9, seed=0)
    assert only_c["known"] == 0 and only_c["unknown_by_reason"] == {"abstain": 1, "absent": 0, "blank": 1, "no_row": 1}


def test_baselines_row_by_row():
    table, _, _ = small_table()
    base = baselines(table.persona, table.question, table.truth)
    assert base["others_same_question"].tolist() == [1, 1, 1, 1,  1, 1, 1, 0,  1, 1, 1, 1]
    assert base["person_majority_loo"].tolist() == [1] * 12


def test_balanced_accuracy_f1_and_auroc_on_a_single_class():
    y, pred = np.array([1, 1, 1]), np.array([1, 0, 1])
    point = point_metrics(y, Predictor(pred.astype(float), pred))
    assert point["balanced_accuracy"] == pytest.approx(2 / 3)  # only Aye present: its recall
    assert point["macro_f1"] == pytest.approx((2 * 2 / (4 + 0 + 1) + 0) / 2)
    assert point["auroc"] is None  # no Nay vote to rank below an Aye
    batch = batch_metrics(y, pred[:, None], pred[:, None].astype(float), np.zeros((3, 0)))
    assert batch["balanced_accuracy"][0] == pytest.approx(2 / 3) and np.isnan(batch["auroc"][0])


@pytest.fixture(scope="module")
def aye_model(tmp_path_factory, always_prefer, build_tiny_persona_model):
    from decision_distill.lm.source import download
    from decision_distill.personas.votes import PREFIX

    root = tmp_path_factory.mktemp("votes_models")
    texts = [PREFIX] * 20 + ["Vote: Aye Nay"] * 50
    weights = build_tiny_persona_model(root / "weights", texts, vocab=300)
    out = {"dirs": {}}
    for name, token in (("aye", OPTIONS[0]), ("nay", OPTIONS[1])):
        download(str(always_prefer(weights, root / f"{name}_w", token)), "main", root / name)
        out[name], out["dirs"][name] = load_causal_lm(root / name, device="cpu"), root / name
    return out


def test_p_aye_follows_the_models_token_preference(aye_model):
    questions = ["Should the board cut the permit fee?", "Should the board rebuild the gym?"]
    p, mass = p_aye(aye_model["aye"], "Ada_Stone", "a shop owner", questions)
    assert np.all(p > 0.5) and np.all((mass > 0) & (mass <= 1))
    p, _ = p_aye(aye_model["nay"], "Ada_Stone", None, questions)
    assert np.all(p < 0.5)


def test_every_answer_and_content_free_reading_goes_through_the_cache(aye_model, tmp_path):
    """Content-free P(Aye) equals the model's reading of the person's prompt with that question; a
    rerun reads everything from the cache; a profile arm is not asked of a person without a profile."""
    table, questions, _ = small_table()
    profiles = {"A": "a shop owner", "B": "a retired engineer"}  # C has none
    models = {"aye+profile": lambda p: (aye_model["aye"], True), "nay+name": lambda p: (aye_model["nay"], False)}
    content_free = ["N/A", "", "[MASK]"]
    cache = AnswerCache(tmp_path / "answers.sqlite")
    first = score_all(table, questions, profiles, models, 4, cache, content_free)
    # aye+profile: A and B, 4 questions + 3 content-free each; nay+name: all three people.
    assert len(cache) == 2 * 7 + 3 * 7
    c_rows = table.persona == "C"
    assert np.isnan(first.logodds["aye+profile"][c_rows]).all()
    assert "C" not in first.content_free_by_person["aye+profile"]
    assert not np.isnan(first.logodds["aye+profile"][~c_rows]).any()
    direct, _ = p_aye(aye_model["nay"], "B", None, content_free)
    assert first.content_free_by_person["nay+name"]["B"] == pytest.approx(direct.tolist(), rel=1e-5)
    assert first.content_free["nay+name"][table.persona == "B"] == pytest.approx(direct.mean(), rel=1e-5)
    direct, _ = p_aye(aye_model["aye"], "A", "a shop owner", questions)
    assert 1 / (1 + np.exp(-first.logodds["aye+profile"][table.persona == "A"])) == pytest.approx(direct, rel=1e-5)

    class Refuses:  # the model's fingerprint, dtype and device (the cache key), but nothing to run
        def __init__(self, model):
            self.fingerprint, self.dtype, self.device = model.fingerprint, model.dtype, model.device

    refusing = {"aye+profile": lambda p: (Refuses(aye_model["aye"]), True),
                "nay+name": lambda p: (Refuses(aye_model["nay"]), False)}
    again = score_all(table, questions, profiles, refusing, 4, cache, content_free)
    assert len(cache) == 35
    for arm in models:
        np.testing.assert_array_equal(again.logodds[arm], first.logodds[arm])


def test_a_corpus_without_profiles_reports_name_only_arms(tmp_path, aye_model, monkeypatch, call_stage):
    corpus = tmp_path / "board"
    corpus.mkdir()
    people = ["Margaret_Okafor", "Walter_Henning"]
    for name in people:
        shutil.copy(REPO / "examples/board" / f"{name}.txt", corpus / f"{name}.txt")
    rows = [line for line in (REPO / "examples/board/votes.csv").read_text().splitlines()[1:]
            if line.rsplit(",", 2)[1] in people][:12]
    (corpus / "votes.csv").write_text("question,persona,vote\n" + "\n".join(rows) + "\n")
    assert not (corpus / "profiles.yaml").exists()
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"] = {"path": str(corpus), "personas": people}
    params["votes"]["bootstrap"] = 100
    params["votes"]["retrieval"].update(k=2, max_tokens=128)  # the retrieval arms' passages within the tiny context
    (tmp_path / "personas.yaml").write_text(yaml.safe_dump(params))
    root = yaml.safe_load((REPO / "params.yaml").read_text())
    root["generate"]["cache"] = str(tmp_path / "answers.sqlite")
    for section in ("slm", "teacher"):
        root[section].update(device="cpu", dtype="float32")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(root))
    for name in people:  # every arm is the Aye-preferring tiny model: this test is about the labels
        shutil.copytree(aye_model["dirs"]["aye"], tmp_path / "models" / name / "merged")
    monkeypatch.chdir(tmp_path)
    stage = ("stages/persona_votes.py", "--params", "personas.yaml", "--slm-params", "params.yaml",
             "--teacher", str(aye_model["dirs"]["aye"]), "--base", str(aye_model["dirs"]["aye"]),
             "--models", "models", "--votes", "votes.json", "--metrics", "metrics.json", "--plot", "votes.png")
    out = call_stage(*stage)
    assert out.code == 0, out.stderr
    report = json.loads(Path("metrics.json").read_text())
    arms = {name.split("|")[0] for name in report["pooled"]["models"]}
    assert arms == {"teacher+name", "base+name", "tuned", "base+retrieval", "tuned+retrieval"}
    assert "tuned|contrast" in report["pooled"]["models"]
    assert report["references"] == {"tuned": "base+name", "base+retrieval": "base+name", "tuned+retrieval": "base+name"}
    assert report["profile_question_overlap"]["flagged"] == []
    written = json.loads(Path("votes.json").read_text())
    assert len(written) == 12 and not any("profile" in key for row in written for key in row)
    assert all(row["recorded"] == row["vote"] in ("Aye", "Nay") for row in written)
    assert Path("votes.png").read_bytes()[:4] == b"\x89PNG"
    # Each chat setting reaches its arms: this tokenizer has no template, which stops the stage there.
    for key, section in (("agents.chat_template", params), ("teacher.chat_template", root)):
        section[key.split(".")[0]]["chat_template"] = True
        (tmp_path / "personas.yaml").write_text(yaml.safe_dump(params))
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(root))
        failed = call_stage(*stage)
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert failed.code == 2 and errors == [f"error: {key}: this tokenizer has no chat template; set it to false"]
