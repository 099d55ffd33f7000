"""The judge reads ratings and pairwise verdicts from token probabilities: the expected score
equals a hand computation from an independent forward pass, a judge whose rating tokens get
almost no probability is reported non-compliant (no number), and a judge that always picks
the first-shown answer turns every comparison into a tie with a flip rate of 1 and an
order-averaged preference of exactly 0.5; intervals over questions resample whole chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decision_distill.lm.source import download
from decision_distill.personas.judge import (PAIR_OPTIONS, PAIR_PREFIX, RATINGS, RUBRICS, pairwise, pairwise_outcome,
                                             rating_suffix, ratings, summarise)
from decision_distill.personas.respond import BASE_PROFILE, TUNED
from decision_distill.lm.load import load_causal_lm

ITEMS = [{"id": f"Ada_Stone/0/{i}/belief", "persona": "Ada_Stone", "profile": "a shop owner who wants lower fees",
          "chunk": f"Ada_Stone/0/{i}",
          "chunk_text": "Fees keep small shops from opening on Main Street.", "question": question,
          "answers": {TUNED: tuned, BASE_PROFILE: base}}
         for i, (question, tuned, base) in enumerate([
             ("What do you think of the permit fee?", "Cut it; it keeps shops closed.", "Fees fund the city."),
             ("Should the gym be rebuilt?", "Only if shops do not pay for it.", "Yes, students need it."),
             ("What about parking downtown?", "More spaces bring more customers.", "Parking is fine.")])]


GROUPS = np.array([it["chunk"] for it in ITEMS])


@pytest.fixture(scope="module")
def judges(tmp_path_factory, always_prefer, build_tiny_persona_model):
    root = tmp_path_factory.mktemp("judge_models")
    texts = [*RUBRICS.values(), PAIR_PREFIX] * 10 + ["Score: 1 2 3 4 5", "Answer: A B"] * 50 \
        + [f"{it['question']} {a}" for it in ITEMS for a in it["answers"].values()] * 5
    weights = build_tiny_persona_model(root / "weights", texts, vocab=400)
    out = {}
    for name, source in (("random", weights), ("first", always_prefer(weights, root / "first_w", PAIR_OPTIONS[0]))):
        download(str(source), "main", root / name)
        out[name] = load_causal_lm(root / name, device="cpu")
    return out


def test_the_expected_score_is_the_rating_tokens_expectation(judges):
    judge = judges["random"]
    models = [TUNED, BASE_PROFILE]
    rated = ratings(judge, ITEMS, models, "levels", min_mass=1e-9)
    tok = judge.tokenizer
    digits = [tok(r, add_special_tokens=False).input_ids[0] for r in RATINGS]
    for i, item in enumerate(ITEMS):
        for j, m in enumerate(models):
            head, tail = rating_suffix(item, item["answers"][m])
            ids = tok(RUBRICS["levels"]).input_ids + tok(head, add_special_tokens=False).input_ids \
                + tok(tail, add_special_tokens=False).input_ids
            with torch.no_grad():
                full = torch.softmax(judge.model(torch.tensor([ids])).logits[0, -1].double(), 0)
            p = full[digits] / full[digits].sum()
            assert rated["expected"][i, j] == pytest.approx(sum((k + 1) * p[k].item() for k in range(5)), abs=1e-4)
            assert rated["argmax"][i, j] == int(p.argmax()) + 1
            assert rated["mass"][i, j] == pytest.approx(full[digits].sum().item(), rel=1e-3)


def test_a_judge_that_ignores_the_rating_tokens_is_non_compliant_not_a_number(judges):
    models = [TUNED, BASE_PROFILE]
    # Random weights over a 400-token vocabulary: the five digits get about 5/400 of the mass.
    rated = {r: ratings(judges["random"], ITEMS, models, r, min_mass=0.5) for r in RUBRICS}
    assert np.isnan(rated["levels"]["expected"]).all() and (rated["levels"]["mass"] < 0.5).all()
    report = summarise(rated, {}, models, 200, 0.9, 0, np.arange(len(ITEMS)), GROUPS, True)
    for m in models:
        assert report["ratings"][m]["non_compliant"] == len(ITEMS)
        assert report["ratings"][m]["expected_score"] == {"mean": None, "ci": [None, None], "n": 0}


def test_a_judge_that_always_picks_the_first_answer_gives_only_ties(judges):
    pairs = pairwise(judges["first"], ITEMS, BASE_PROFILE, min_mass=1e-9)
    assert (pairs["p_tuned_first"] > 0.5).all() and (pairs["p_tuned_second"] < 0.5).all()
    assert (pairs["outcome"] == 0).all() and pairs["flipped"].all()
    report = summarise({r: {k: np.full((3, 1), 3.0) for k in ("expected", "argmax", "mass")} for r in RUBRICS},
                       {BASE_PROFILE: pairs}, [TUNED], 200, 0.9, 0, np.arange(len(ITEMS)), GROUPS, True)
    verdict = report["pairwise"][f"{TUNED} vs {BASE_PROFILE}"]
    # The primary number averages the two orders: a pure position bias is exactly no preference.
    assert verdict["p_tuned_preferred"]["mean"] == 0.5 and verdict["p_tuned_preferred"]["ci"] == [0.5, 0.5]
    diagnostics = verdict["diagnostics"]
    assert (diagnostics["win"]["mean"], diagnostics["tie"]["mean"], diagnostics["loss"]["mean"]) == (0.0, 1.0, 0.0)
    assert diagnostics["position_flip_rate"]["mean"] == 1.0


def test_only_a_verdict_both_orders_agree_on_counts():
    first, second = np.array([0.8, 0.2, 0.8, 0.3]), np.array([0.7, 0.4, 0.3, 0.9])
    assert pairwise_outcome(first, second).tolist() == [1, -1, 0, 0]


def test_questions_from_one_chunk_are_resampled_together():
    # Two chunks: one with nine questions all preferring the tuned answer, one with a single question
    # preferring the baseline. Over questions 0.9 of them favour tuned; over chunks only one of two does,
    # so a resample of two chunks is the bad chunk alone a quarter of the time.
    p = np.array([0.9] * 9 + [0.1])
    pairs = {BASE_PROFILE: {"p_tuned_first": p, "p_tuned_second": p, "compliant": np.ones(10, bool),
                            "outcome": pairwise_outcome(p, p), "flipped": np.zeros(10, bool)}}
    groups = np.array(["a"] * 9 + ["b"])
    report = summarise({r: {k: np.full((10, 1), 3.0) for k in ("expected", "argmax", "mass")} for r in RUBRICS},
                       pairs, [TUNED], 1000, 0.95, 0, np.arange(10), groups, True)
    preferred = report["pairwise"][f"{TUNED} vs {BASE_PROFILE}"]["p_tuned_preferred"]
    assert preferred["mean"] == pytest.approx(0.82) and preferred["ci"][0] == pytest.approx(0.1)
