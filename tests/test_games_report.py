"""The games stage's per-cell report: JSD against scipy and its bootstrap interval against a hand-written one,
fallback flags, the guarded gap-closed share, and the eleven-option zero-shot readout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from decision_distill.data.scenario_file import load_scenario
from decision_distill.evaluation.games import (Bootstrap, cell_values, compare_split, interval, unseen_in_training,
                                               zero_shot_rows)
from decision_distill.stats.metrics import jsd

GAMES = "scenarios/games.yaml"


def test_jsd_equals_scipys_squared_jensen_shannon_distance_in_bits():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(11), size=20)
    Q = rng.dirichlet(np.ones(11), size=20)
    P[0, :5] = 0  # zeros on one side only
    P[0] /= P[0].sum()
    expected = [jensenshannon(p, q, base=2) ** 2 for p, q in zip(P, Q)]
    assert jsd(P, Q) == pytest.approx(expected, abs=1e-12)
    assert jsd(P[3], P[3]) == pytest.approx(0.0, abs=1e-15)
    assert jsd(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)  # disjoint: the maximum


def test_jsd_of_nearly_equal_rows_is_zero_where_scipys_distance_is_nan():
    """Rows 1e-9 apart: rounding takes scipy's sum of KL terms a hair below zero and its square
    root to NaN on many of them; the divergence there is 0 (and an undefined row stays NaN)."""
    rng = np.random.default_rng(4)
    P = rng.dirichlet(np.ones(3), size=2000)
    Q = np.clip(P + rng.uniform(-1e-9, 1e-9, P.shape), 0, None)
    Q /= Q.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        assert np.isnan(jensenshannon(P, Q, base=2, axis=-1)).any()
    assert not np.isnan(jsd(P, Q)).any() and jsd(P, Q).max() < 1e-12
    assert np.isnan(jsd(np.array([np.nan, 1.0]), np.array([0.5, 0.5])))


def test_cell_jsd_interval_matches_a_hand_written_percentile_bootstrap():
    """The cell JSD interval against one computed by hand: draw n state indices with
    replacement (the same seeded draws), recompute the cell means and scipy's Jensen-Shannon
    distance squared for each, and take the 5th and 95th percentiles of those values."""
    rng = np.random.default_rng(2)
    T = rng.dirichlet([4, 2], size=9)
    Q = rng.dirichlet([2, 4], size=9)
    boot = Bootstrap(resamples=500, confidence=0.9, seed=7)
    ours, distribution = interval(lambda idx: jsd(T[idx].mean(axis=-2), Q[idx].mean(axis=-2)), 9, boot, (3, 1))

    draws = np.random.default_rng([7, 3, 1]).integers(0, 9, size=(500, 9))  # one resample a row
    by_hand = [jensenshannon(T[idx].mean(axis=0), Q[idx].mean(axis=0), base=2) ** 2 for idx in draws]
    np.testing.assert_allclose(np.sort(distribution), np.sort(by_hand), atol=1e-12)
    assert ours == pytest.approx(list(np.percentile(by_hand, [5, 95])), abs=1e-12)
    point = jsd(T.mean(axis=0), Q.mean(axis=0))
    assert ours[0] <= point <= ours[1]


def test_an_interval_needs_two_states():
    assert interval(lambda idx: idx.mean(axis=-1), 1, Bootstrap(), (0,)) == (None, None)


def test_numeric_options_are_read_as_the_expected_number():
    Q = np.zeros((2, 11))
    Q[0, 10] = 1.0
    Q[1, [2, 4]] = 0.5
    assert cell_values(Q, [str(k) for k in range(11)]) == pytest.approx([10.0, 3.0])
    assert cell_values(np.array([[0.3, 0.7]]), ["C", "D"]) == pytest.approx([0.3])


def _rows(cells: dict[tuple[str, str], list[float]], models: dict) -> pd.DataFrame:
    """Long-format prediction rows: for each cell, the teacher's P(C) per state, and per model
    a function of the teacher's P(C) giving its own."""
    rows, state_id = [], 0
    for (game, context), teacher in cells.items():
        for t in teacher:
            for name, answer in models.items():
                q = answer(t, context)
                rows.append({"state_id": state_id, "split": "test", "student": name, "game": game,
                             "context": context, "teacher_C": t, "teacher_D": 1 - t, "student_C": q,
                             "student_D": 1 - q})
            state_id += 1
    return pd.DataFrame(rows)


def test_cells_report_values_intervals_fallbacks_and_a_guarded_gap_closed():
    cells = {("pd", "business"): [0.6, 0.7, 0.8, 0.7], ("pd", "sports"): [0.3, 0.4, 0.2, 0.3],
             ("stag", "business"): [0.52]}
    models = {"mlp": lambda t, c: 0.5,
              "slm_base": lambda t, c: 0.5,
              "slm_tuned": lambda t, c: t if c == "business" else 0.5 - (0.5 - t) / 2}
    report = compare_split(_rows(cells, models), ["game", "context"], ["C", "D"], Bootstrap(200), 0.05, 0,
                           unseen={"context": {"sports"}})
    by_cell = {(c["game"], c["context"]): c for c in report["cells"]}
    business, sports, lone = by_cell[("pd", "business")], by_cell[("pd", "sports")], by_cell[("stag", "business")]
    assert business["teacher"]["value"] == pytest.approx(0.7) and business["states"] == 4
    assert business["slm_tuned"]["jsd"] == pytest.approx(0.0) and business["slm_base"]["jsd"] > 0
    low, high = business["teacher"]["value_ci"]
    assert 0.6 <= low <= 0.7 <= high <= 0.8
    # gap closed: all of it where the tuned model matches, half where it moved halfway ...
    assert business["gap_closed"]["value"] == pytest.approx(1.0)
    assert sports["gap_closed"]["value"] == pytest.approx(0.5)
    # ... and no ratio where the base model is already within gap_min of the teacher
    assert lone["gap_closed"]["value"] is None and lone["states"] == 1
    assert lone["teacher"]["value_ci"] is None and lone["mlp"]["jsd_ci"] is None
    # the small student falls back only in the cell with a context it never saw
    assert sports["mlp"]["fallback"] and not business["mlp"]["fallback"]
    assert "fallback" not in sports["slm_tuned"]
    summary = report["summary"]
    assert summary["mlp"]["fallback_cells"] == 1
    assert summary["slm_tuned"]["gap_closed"]["cells"] == 2
    assert summary["slm_tuned"]["gap_closed"]["value"] == pytest.approx(0.75)
    mean_jsd = np.mean([c["slm_base"]["jsd"] for c in report["cells"]])
    assert summary["slm_base"]["jsd_mean"] == pytest.approx(mean_jsd)
    assert summary["slm_base"]["jsd_mean_ci"][0] <= summary["slm_base"]["jsd_mean_ci"][1]


def test_reports_are_reproducible_from_the_seed():
    cells = {("pd", "business"): [0.6, 0.7, 0.8], ("pd", "sports"): [0.3, 0.4, 0.2]}
    rows = _rows(cells, {"slm_base": lambda t, c: 0.5, "slm_tuned": lambda t, c: (t + 0.5) / 2})
    first = compare_split(rows, ["game", "context"], ["C", "D"], Bootstrap(200, seed=1), 0.05, 0)
    again = compare_split(rows.sample(frac=1, random_state=0), ["game", "context"], ["C", "D"],
                          Bootstrap(200, seed=1), 0.05, 0)
    other = compare_split(rows, ["game", "context"], ["C", "D"], Bootstrap(200, seed=2), 0.05, 0)
    assert first == again
    assert first["cells"][0]["slm_base"]["jsd_ci"] != other["cells"][0]["slm_base"]["jsd_ci"]


def test_unseen_values_are_those_no_training_state_has():
    scenario = load_scenario(GAMES)
    train = pd.DataFrame({"game": ["stag_hunt"], "stakes": ["standard"], "context": ["business"],
                          "history": ["first_game"], "partner": ["rival"]})
    held = train.assign(context="sports", stakes="doubled")
    assert unseen_in_training(train, held, scenario) == {"stakes": {"doubled"}, "context": {"sports"}}


def test_the_eleven_option_zero_shot_readout_is_the_option_softmax_with_the_real_loading_code(tmp_path, build_tiny_teacher):
    """The public-goods game through the teacher's token readout on a tiny model built from the
    games scenario's texts (and those of its zero-shot scenarios)."""

    import torch

    from decision_distill.core.params import parse_params
    from decision_distill.lm.answer_cache import AnswerCache
    from decision_distill.lm.load import load_causal_lm
    from decision_distill.lm.scorer import TokenScorer
    from decision_distill.lm.source import download
    from decision_distill.teacher.ask import Readout, build_prompts, teacher_answers

    public_goods = load_scenario(load_scenario(GAMES).zero_shot[0])
    assert len(public_goods.options) == 11
    weights = build_tiny_teacher(tmp_path / "weights", scenario_path=GAMES)
    download(str(weights), "main", tmp_path / "teacher")
    params = parse_params({"scenario": GAMES, "teacher": {"model": str(weights), "device": "cpu", "batch_size": 16,
                                                         "dtype": "float32"}})  # compared with float32 below
    states = public_goods.all_states()
    cache = AnswerCache(tmp_path / "cache.sqlite")
    answers = teacher_answers(tmp_path / "teacher", public_goods, states, params, cache)
    cache.close()
    P = np.array([a["probs"] for a in answers])
    assert len(states) == 9 * 3 * 5 and P.shape == (len(states), 11)
    assert len({tuple(np.round(p, 6)) for p in P}) > 1  # the answers depend on the state
    # each answer is the softmax over the eleven option tokens (in option order) of one plain
    # forward pass of the prompt, computed here by hand for a few states
    teacher = load_causal_lm(tmp_path / "teacher", device="cpu")
    scorer = TokenScorer(teacher, [o.text for o in public_goods.options])
    prompts = build_prompts(public_goods, states, Readout.teacher(params))
    for i in (0, 17, 101):
        ids = scorer.encode_prefix(prompts.prefix) + scorer.encode_suffix(prompts.suffixes[i])
        with torch.no_grad():
            logits = teacher.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        expected = torch.softmax(logits[scorer.option_ids], dim=-1).numpy()
        np.testing.assert_allclose(P[i], expected, atol=1e-5)
    rows = zero_shot_rows(public_goods, states, P, {"slm_base": P[::-1].copy()})
    report = compare_split(rows, list(public_goods.cells), [o.id for o in public_goods.options], Bootstrap(100),
                           0.05, 0)
    assert len(report["cells"]) == 9 and all(0 <= c["teacher"]["value"] <= 10 for c in report["cells"])


def test_the_gap_guard_is_a_share_of_the_value_scale_for_numeric_options():
    """gap_min 0.05 means half a point on a 0..10 scale: a base model 0.3 points from the
    teacher gets no ratio, one 2 points away does."""
    options = [str(k) for k in range(11)]

    def point_mass(points: float) -> np.ndarray:  # a distribution with mean `points`, between two options
        p = np.zeros(11)
        low = int(points)
        p[low], p[min(low + 1, 10)] = 1 - (points - low), points - low
        return p

    rows, state_id = [], 0
    for context, teacher, base in (("near", 3.0, 3.3), ("far", 3.0, 5.0)):
        for _ in range(3):
            for name, points in (("slm_base", base), ("slm_tuned", (teacher + base) / 2)):
                rows.append({"state_id": state_id, "split": "public_goods", "student": name, "context": context,
                             **{f"teacher_{o}": x for o, x in zip(options, point_mass(teacher))},
                             **{f"student_{o}": x for o, x in zip(options, point_mass(points))}})
            state_id += 1
    report = compare_split(pd.DataFrame(rows), ["context"], options, Bootstrap(100), 0.05, 0)
    by_context = {c["context"]: c for c in report["cells"]}
    assert by_context["near"]["teacher"]["value"] == pytest.approx(3.0)
    assert by_context["near"]["gap_closed"]["value"] is None
    assert by_context["far"]["gap_closed"]["value"] == pytest.approx(0.5)


# Per-cell cooperation counts out of 300 samples at temperature 0.8 (C, of 300) of seed 003's study:
# teacher 70B, base 7B, fine-tuned 7B, from the files 70b_distribution.txt, 7b_org_distribution.txt and
# 7b_finetuned_distribution.txt of github.com/sepehrilami/LFB (commit 43eba19).
SEED_003_COUNTS = {("IR", "staghunt"): (266, 262, 216), ("environment", "delight"): (276, 263, 208),
                   ("IR", "prison"): (140, 254, 221)}


def _count_rows(counts: dict[tuple[str, str], tuple[int, int, int]], samples: int = 300) -> pd.DataFrame:
    """One row per sample: each model's answer is C (1) for the first `count` samples of its cell."""
    rows, state_id = [], 0
    for (context, game), (teacher, base, tuned) in counts.items():
        for i in range(samples):
            t = float(i < teacher)
            for name, count in (("slm_base", base), ("slm_tuned", tuned)):
                q = float(i < count)
                rows.append({"state_id": state_id, "split": "test", "student": name, "context": context, "game": game,
                             "teacher_C": t, "teacher_D": 1 - t, "student_C": q, "student_D": 1 - q})
            state_id += 1
    return pd.DataFrame(rows)


def test_jsd_gap_closed_is_guarded_where_the_base_model_already_matches_the_teacher():
    """Seed 003's counts: in IR x stag hunt and environment x delight the base model is within
    0.05 of the teacher's cooperation rate, and 1 - JSD_tuned / JSD_base read -106 and -15.8 there.
    The share is left out in those cells, as the value ratio is; the difference JSD_base - JSD_tuned
    is reported in every cell with a paired bootstrap interval."""
    report = compare_split(_count_rows(SEED_003_COUNTS), ["context", "game"], ["C", "D"], Bootstrap(300), 0.05, 0)
    cells = {(c["context"], c["game"]): c for c in report["cells"]}
    for near in (("IR", "staghunt"), ("environment", "delight")):
        teacher, base, tuned = (n / 300 for n in SEED_003_COUNTS[near])
        assert abs(teacher - base) < 0.05
        closed = cells[near]["gap_closed"]
        assert closed["value"] is None and closed["jsd"] is None
        # the tuned model moved away from the teacher: a reduction below zero, and its interval says so
        expected = jsd(np.array([teacher, 1 - teacher]), np.array([base, 1 - base])) - jsd(
            np.array([teacher, 1 - teacher]), np.array([tuned, 1 - tuned]))
        assert closed["jsd_reduction"] == pytest.approx(float(expected))
        low, high = closed["jsd_reduction_ci"]
        assert low <= closed["jsd_reduction"] <= high < 0
    wide = cells[("IR", "prison")]["gap_closed"]
    assert wide["value"] == pytest.approx((221 - 254) / (140 - 254))
    assert wide["jsd"] == pytest.approx(1 - cells[("IR", "prison")]["slm_tuned"]["jsd"]
                                        / cells[("IR", "prison")]["slm_base"]["jsd"])
    assert wide["jsd_reduction_ci"][0] > 0  # here fine-tuning did bring it closer
    summary = report["summary"]["slm_tuned"]["gap_closed"]
    assert summary["cells"] == 1 and summary["jsd"] == pytest.approx(wide["jsd"])
    reductions = [c["gap_closed"]["jsd_reduction"] for c in report["cells"]]
    assert summary["jsd_reduction"] == pytest.approx(np.mean(reductions))
    assert summary["jsd_reduction_ci"][0] <= summary["jsd_reduction"] <= summary["jsd_reduction_ci"][1]
