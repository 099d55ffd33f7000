"""The stability stage: honesty checks, cache reuse, bad input, and the noise floor in evaluate."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from ruamel.yaml import YAML

from decision_distill.core.errors import UserError
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import check_stability_settings, load_scenario, parse_scenario
from decision_distill.data.split import split_decisions
from decision_distill.evaluation import stability as stability_module
from decision_distill.evaluation.evaluate import add_noise_floor_ratios
from decision_distill.evaluation.icc import NONE_MEASURED, mard, summarize
from decision_distill.evaluation.plots_teacher import plot_stability_icc, plot_stability_spread, stability_spread
from decision_distill.evaluation.stability import describe, measure_stability
from decision_distill.evaluation.stability_stats import explanation_cosine, numerics_metrics
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.verbalized import VerbalizedReader
from decision_distill.teacher.generate import generate

SCENARIO = "scenarios/ice_cream.yaml"


def tiny_params(tmp_path, scenario=SCENARIO, **stability):
    return parse_params({
        "scenario": str(scenario),
        "teacher": {"batch_size": 4, "device": "cpu", "max_new_tokens": 8},
        "generate": {"states": 6, "cache": str(tmp_path / "cache.sqlite")},
        "stability": {"states": 6, "repeats": 2, "paraphrases": 2, "shot_orders": 1, "batch_sizes": [3],
                      **stability},
    })


def stand_in_test_split(scenario_path=SCENARIO, n: int = 6) -> pd.DataFrame:
    """A stand-in test split: `n` states drawn apart from generate's stream, ids not from 0."""
    states = load_scenario(scenario_path).sample_states(n, seed=99)
    return pd.DataFrame([{"state_id": 100 + 3 * i, **state, "ok": True} for i, state in enumerate(states)])


def raw_scenario() -> dict:
    return YAML(typ="safe", pure=True).load(open(SCENARIO).read())


# ---- honesty: no variation is reported as none, not as perfect agreement -------------

def test_identical_prompting_measures_no_variation_and_says_so(tmp_path, tiny_teacher):
    raw = raw_scenario()
    canonical = {"intro": raw["prompt"]["intro"], "case": raw["prompt"]["case"]}
    raw["prompt"]["paraphrases"] = [canonical, canonical]  # every "wording" is the same prompt
    path = tmp_path / "same_wording.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = tiny_params(tmp_path, path, paraphrases=3, shot_orders=0)
    metrics, _, _ = measure_stability(params, load_scenario(path), tiny_teacher, stand_in_test_split())
    wording = metrics["wording"]
    assert wording["variation"] == NONE_MEASURED and wording["mean_state_std"] == 0.0
    assert wording["icc2"] is None and wording["icc3"] is None and "undefined" in wording["icc_note"]
    assert metrics["noise_floor"]["kl"] == 0.0
    assert any(line.startswith("wording: no variation measured") for line in describe(metrics))
    ratios = add_noise_floor_ratios({"mlp": {"kl": 0.01, "mse": 0.002}}, metrics)
    assert ratios["mlp"]["kl_vs_noise_floor"] is None  # nothing to divide by, no infinite ratio


def test_constant_readings_have_no_icc():
    readings = np.tile(np.linspace(0.1, 0.9, 10)[:, None], (1, 4))
    summary = summarize(readings, ["a", "b", "c", "d"])
    assert summary["variation"] == NONE_MEASURED and summary["mard"] == 0.0
    assert summary["icc2"] is None and summary["icc3"] is None


def synthetic_ratings(seed: int, states=40, runs=5, between=1.0, rater=0.25, within=0.5) -> np.ndarray:
    """rating = state effect + run effect + noise, each normal with the given variance."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, between**0.5, (states, 1)) + rng.normal(0, rater**0.5, (1, runs))
            + rng.normal(0, within**0.5, (states, runs)))


def test_icc_intervals_cover_the_true_values():
    # ICC(2,1) = between / (between + rater + within); ICC(3,1) = between / (between + within)
    true = {"icc2": 1.0 / 1.75, "icc3": 1.0 / 1.5}
    fits = [summarize(synthetic_ratings(seed), [f"r{i}" for i in range(5)]) for seed in range(20)]
    for kind, value in true.items():
        covered = sum(f[kind]["ci95"][0] <= value <= f[kind]["ci95"][1] for f in fits)
        assert covered >= 16, f"{kind}: the 95 % CI held the true value in only {covered} of 20 samples"
        assert abs(np.mean([f[kind]["value"] for f in fits]) - value) < 0.04


def test_mard_skips_missing_readings_and_zero_means():
    readings = np.array([[0.2, 0.4, np.nan], [0.0, 0.0, 0.0]])
    assert mard(readings) == pytest.approx(0.2 / 0.3)


def test_explanation_similarity_uses_the_packaged_minilm():
    same = explanation_cosine([["A hot day makes ice cream tempting."] * 3])
    mixed = explanation_cosine([["A hot day makes ice cream tempting.", "They are saving money for rent.", None]])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert mixed < 0.6
    assert explanation_cosine([["only one"], [None, None]]) is None


def test_numerics_beyond_a_thousandth_fail_the_stage():
    rng = np.random.default_rng(0)
    canonical = rng.dirichlet([1, 1], size=10)
    nudge = np.zeros_like(canonical)
    nudge[3] = [2e-4, -2e-4]
    within = numerics_metrics({"batch 4": canonical, "batch 1": canonical, "no prefix reuse": canonical + nudge})
    assert within["max_abs_diff"] == pytest.approx(2e-4)
    with pytest.raises(UserError, match=r"^stability numerics: .*0\.002 .*'no prefix reuse'.* teacher\.dtype"):
        numerics_metrics({"batch 4": canonical, "batch 1": canonical, "no prefix reuse": canonical + 10 * nudge})


# ---- the answer cache -------------------------------------------------------------

def test_canonical_answers_come_from_generate_and_a_rerun_asks_nothing(tmp_path, tiny_teacher, monkeypatch):
    params = tiny_params(tmp_path)
    scenario = load_scenario(SCENARIO)
    generate(params, scenario, tiny_teacher, tmp_path / "d.parquet", tmp_path / "f.json", tmp_path / "m.json")
    asked, sampled = [], []
    real_ask, real_answer = stability_module.ask_into_cache, VerbalizedReader.answer
    monkeypatch.setattr(stability_module, "ask_into_cache",
                        lambda *args: asked.append(args[-1]) or real_ask(*args))  # args[-1]: the run's name
    monkeypatch.setattr(VerbalizedReader, "answer", lambda self, prefix, suffixes, seed=0: sampled.append(
        len(suffixes)) or real_answer(self, prefix, suffixes, seed))

    test = pd.read_parquet(tmp_path / "d.parquet")  # every generated state serves as a test state here
    first, readings, _ = measure_stability(params, scenario, tiny_teacher, test)
    assert len(asked) == 2 and "canonical" not in asked  # generate had asked the canonical prompts
    assert sum(sampled) == 6 * 2
    cache = AnswerCache(params.generate.cache)
    assert len(cache) == 6 + 2 * 6 + 6 * 2  # generate's, two new wording runs, 2 samples per state
    cache.close()

    asked.clear(), sampled.clear()
    second, _, _ = measure_stability(params, scenario, tiny_teacher, test)
    assert asked == [] and sampled == []
    assert second["sampling"] == first["sampling"] and second["wording"] == first["wording"]
    assert first["sampling"]["parse_failures"] == int(readings.query("source == 'sampling'")["p_action"].isna().sum())


def test_the_noise_floor_is_measured_on_the_test_splits_states(tmp_path, tiny_teacher, monkeypatch):
    """Students are scored on the test split, so the floor they are read against is measured on
    its first stability.states states, with generate's cached canonical answers, state by state."""
    raw = {"scenario": SCENARIO, "teacher": {"batch_size": 4, "device": "cpu", "max_new_tokens": 8},
           "generate": {"states": 24, "cache": str(tmp_path / "cache.sqlite")}, "split": {"test": 0.5, "val": 0.1},
           "stability": {"states": 6, "repeats": 2, "paraphrases": 2, "shot_orders": 1, "batch_sizes": [3]}}
    params, scenario = parse_params(raw), load_scenario(SCENARIO)
    generate(params, scenario, tiny_teacher, tmp_path / "d.parquet", tmp_path / "f.json", tmp_path / "m.json")
    split_decisions(tmp_path / "d.parquet", tmp_path / "f.json", params.split, tmp_path / "splits")
    test = pd.read_parquet(tmp_path / "splits" / "test.parquet")
    first_test_ids = sorted(test["state_id"])[:6]
    assert first_test_ids != list(range(6))  # the premise: the stream's first states are not all test states
    asked = []
    real_ask = stability_module.ask_into_cache
    monkeypatch.setattr(stability_module, "ask_into_cache", lambda *args: asked.append(args[-1]) or real_ask(*args))

    metrics, readings, floor = measure_stability(params, scenario, tiny_teacher, tmp_path / "splits" / "test.parquet")
    assert "canonical" not in asked  # generate had answered these states
    assert sorted(set(floor["state_id"])) == first_test_ids and metrics["noise_floor"]["states"] == 6
    canonical = readings.query("source == 'wording' and run == 'canonical'").set_index("state_id")["p_action"]
    np.testing.assert_allclose(canonical.loc[first_test_ids], test.set_index("state_id").loc[first_test_ids, "p_yes"],
                               atol=1e-9)
    # the per-state values average to the floor in metrics/stability.json
    assert floor["kl"].mean() == pytest.approx(metrics["noise_floor"]["kl"])
    assert floor["mse"].mean() == pytest.approx(metrics["noise_floor"]["mse"])
    assert (floor["kl"] > 0).any() and (floor["kl"] >= 0).all()
    low, high = metrics["noise_floor"]["kl_ci95"]
    assert floor.groupby("state_id")["kl"].mean().min() <= low < metrics["noise_floor"]["kl"] < high
    assert any(line.startswith("noise floor (wording, 6 test states): KL") for line in describe(metrics))


def cache_contents(path) -> dict:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, value FROM answers"))


def test_interrupted_sampling_resumes_to_the_same_answers(tmp_path, tiny_teacher, monkeypatch):
    scenario = load_scenario(SCENARIO)
    params = tiny_params(tmp_path, repeats=3)  # 18 sampled answers in groups of teacher.batch_size 4
    real_answer, calls, crashes = VerbalizedReader.answer, [], [3]  # the first run dies in its third group

    def crash_on_third_group(self, prefix, suffixes, seed=0):
        calls.append(len(suffixes))
        if crashes and len(calls) == crashes[0]:
            crashes.clear()
            raise RuntimeError("killed")
        return real_answer(self, prefix, suffixes, seed)

    monkeypatch.setattr(VerbalizedReader, "answer", crash_on_third_group)
    with pytest.raises(RuntimeError):
        measure_stability(params, scenario, tiny_teacher, stand_in_test_split())
    calls.clear()
    measure_stability(params, scenario, tiny_teacher, stand_in_test_split())
    assert calls == [4, 4, 2]  # only the groups that were not committed
    (tmp_path / "clean").mkdir()
    measure_stability(tiny_params(tmp_path / "clean", repeats=3), scenario, tiny_teacher, stand_in_test_split())
    assert cache_contents(tmp_path / "cache.sqlite") == cache_contents(tmp_path / "clean" / "cache.sqlite")


# ---- bad input ------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ({"repeats": 1}, "stability.repeats:"),
    ({"temperature": 0.0}, "stability.temperature:"),
    ({"paraphrases": 1}, "stability.paraphrases:"),
    ({"paraphrases": 5}, "stability.paraphrases: 5 but scenario 'ice_cream' has 4 wordings"),
    ({"shot_orders": 120}, "stability.shot_orders:"),
])
def test_bad_settings_name_the_param(tmp_path, setting, message):
    params = tiny_params(tmp_path, **setting)
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        check_stability_settings(params.stability, load_scenario(SCENARIO))


def test_stage_refuses_greedy_repeats_with_one_line(tmp_path, tiny_teacher):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"teacher": {"device": "cpu"}, "stability": {"temperature": 0}}))
    result = subprocess.run([sys.executable, "stages/stability.py", "--params", str(params_file), "--teacher",
                             str(tiny_teacher), "--metrics", str(tmp_path / "s.json"), "--readings",
                             str(tmp_path / "s.parquet")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: stability.temperature: 0")
    assert not (tmp_path / "s.json").exists()


def test_paraphrase_must_describe_every_feature():
    raw = raw_scenario()
    raw["prompt"]["paraphrases"] = [{"intro": "Log.", "case": "Who: {traits}\nBought:"}]
    with pytest.raises(UserError, match=r"prompt.paraphrases\[0\].case: never shows contexts"):
        parse_scenario(raw, "x.yaml")


# ---- the noise floor in evaluate ---------------------------------------------------

def test_noise_floor_ratios_sit_beside_kl_and_mse():
    students = {"mlp": {"mse": 0.002, "kl": 0.006, "agreement": 0.9,
                        "holdouts": {"oos_contexts": {"mse": 0.004, "kl": 0.03}, "ood_games": {"kl": 0.0015}}}}
    floor = {"noise_floor": {"kl": 0.003, "mse": 0.004}}
    out = add_noise_floor_ratios(students, floor)["mlp"]
    assert list(out) == ["mse", "mse_vs_noise_floor", "kl", "kl_vs_noise_floor", "agreement", "holdouts"]
    assert out["kl_vs_noise_floor"] == pytest.approx(2.0) and out["mse_vs_noise_floor"] == pytest.approx(0.5)
    assert out["holdouts"]["oos_contexts"]["kl_vs_noise_floor"] == pytest.approx(10.0)
    assert out["holdouts"]["oos_contexts"]["mse_vs_noise_floor"] == pytest.approx(1.0)
    assert out["holdouts"]["ood_games"] == {"kl": 0.0015, "kl_vs_noise_floor": pytest.approx(0.5)}
    skipped = add_noise_floor_ratios(students, {"skipped": "no teacher", "noise_floor": None})
    assert skipped["mlp"]["kl_vs_noise_floor"] is None


# ---- plots -------------------------------------------------------------------------

def test_spread_plot_ranks_states_and_icc_plot_names_sources_without_an_icc(tmp_path):
    readings = pd.DataFrame({"source": ["wording"] * 6, "run": ["a", "b"] * 3, "state_id": [0, 0, 1, 1, 2, 2],
                             "p_action": [0.5, 0.5, 0.2, 0.6, 0.3, np.nan], "explanation": None})
    spread = stability_spread(readings)
    assert list(spread["state_id"]) == [1, 0] and list(spread["rank"]) == [0, 1]  # state 2 has one reading
    assert spread["std"].iloc[0] == pytest.approx(np.std([0.2, 0.6], ddof=1))
    (tmp_path / "data").mkdir()
    plot_stability_spread(readings, tmp_path)
    icc = {"value": 0.7, "ci95": [0.5, 0.85]}
    plot_stability_icc({"sampling": {"skipped": "three options"}, "wording": {"icc2": icc, "icc3": icc},
                        "numerics": {"variation": NONE_MEASURED, "icc2": None, "icc3": None}}, tmp_path)
    table = pd.read_csv(tmp_path / "data" / "stability_icc.csv")
    assert list(table["source"]) == ["wording", "wording"]
    assert (tmp_path / "stability_spread.png").stat().st_size > 1000
    assert (tmp_path / "stability_icc.png").stat().st_size > 1000


def test_numerics_in_bfloat16_are_held_to_the_bound_measured_for_bfloat16():
    rng = np.random.default_rng(0)
    canonical = rng.dirichlet([1, 1], size=10)
    nudge = np.zeros_like(canonical)
    nudge[3] = [0.03, -0.03]  # bf16's measured scorer-vs-naive rounding: fails float32's bound, not bf16's
    runs = {"batch 4": canonical, "no prefix reuse": canonical + nudge}
    assert numerics_metrics(runs, "bfloat16")["tolerance"] == 0.06
    with pytest.raises(UserError, match=r"more than 0\.001 in float32"):
        numerics_metrics(runs, "float32")
    with pytest.raises(UserError, match=r"0\.2 \(more than 0\.06 in bfloat16\)"):
        numerics_metrics({"batch 4": canonical, "no prefix reuse": canonical + nudge * 20 / 3}, "bfloat16")
