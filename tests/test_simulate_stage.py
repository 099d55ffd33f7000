"""The simulate stage end to end on a tiny profile, and its fidelity measures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from decision_distill.core.atomic import write_json
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.evaluation.evaluate import evaluate_students
from decision_distill.simulation.fidelity import compare
from decision_distill.simulation.report import build_deciders


def _rows(matrix: np.ndarray) -> pd.DataFrame:
    """A run's rows: its ticks 1..t, after the DataCollector's step-0 row (tick 0, nothing sold)."""
    r, t = matrix.shape
    matrix = np.hstack([np.zeros((r, 1)), matrix])
    return pd.DataFrame({"seed": np.repeat(np.arange(r), t + 1), "tick": np.tile(np.arange(t + 1), r),
                         "sales": matrix.ravel()})


def test_fidelity_of_identical_and_shifted_runs():
    rng = np.random.default_rng(0)
    teacher = rng.poisson(10, size=(6, 20)).astype(float)
    same = compare(_rows(teacher), _rows(teacher), "sales", 200, 0.9, 0)
    assert same["total_diff"] == 0 and same["wasserstein"] == 0 and same["jsd"] == 0
    assert same["spread_ratio"] == 1 and same["spread_ratio_ci"] == [1, 1]
    shifted = compare(_rows(teacher), _rows(teacher + 2), "sales", 200, 0.9, 0)
    assert shifted["total_diff"] == pytest.approx(40)  # 2 more per tick over 20 ticks
    assert shifted["wasserstein"] == pytest.approx(2)
    assert shifted["total_diff_ci"] is None  # the same shift every day: nothing varies, no interval


def test_training_seeds_widen_the_interval_and_are_reported_one_by_one():
    """Two seeds whose students sell 1 and 3 more per tick: the mean difference is 2 per tick,
    and the interval over seeds x days is much wider than over the days of one seed alone."""
    rng = np.random.default_rng(1)
    teacher = rng.poisson(10, size=(8, 20)).astype(float)
    noise = rng.normal(0, 0.5, size=(8, 20))
    one = compare(_rows(teacher), _rows(teacher + 1 + noise), "sales", 200, 0.95, 0)
    two = compare(_rows(teacher), [_rows(teacher + 1 + noise), _rows(teacher + 3 + noise[::-1])], "sales", 200, 0.95, 0)
    assert "seeds" not in one and two["seeds"]["count"] == 2
    assert two["seeds"]["total_diff"] == pytest.approx([20 + noise.sum(1).mean(), 60 + noise.sum(1).mean()])
    assert two["total_diff"] == pytest.approx(40 + noise.sum(1).mean())
    width = lambda block: block["total_diff_ci"][1] - block["total_diff_ci"][0]  # noqa: E731
    assert width(two) > 10 * width(one)
    low, high = two["total_diff_ci"]
    assert low < 20 and high > 60  # two seeds 40 apart: a t interval on 1 df spans both


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_teacher, train_students, write_splits):
    root = tmp_path_factory.mktemp("simulate_stage")
    splits = write_splits("scenarios/ice_cream.yaml", root / "splits", n=500)
    students = train_students(splits, root / "students", archs=("logreg", "mlp"), epochs=8)
    metrics, _ = evaluate_students(splits, students, ["logreg", "mlp"], ece_bins=10)
    write_json(metrics, root / "students.json")
    # the generate stage's dataset: every split's states with their answers
    pd.concat([pd.read_parquet(splits / f"{n}.parquet") for n in ("train", "val", "test")]).to_parquet(
        root / "decisions.parquet")
    params = {"generate": {"cache": str(root / "cache.sqlite")}, "slm": {"enabled": False},
              "teacher": {"batch_size": 16, "device": "cpu"},
              "simulate": {"population": 60, "replicates": 3, "bootstrap": 200,
                           "deciders": ["constant", "lookup", "logreg", "mlp", "slm_tuned", "mlp_ensemble"]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, tiny_teacher


@pytest.fixture(scope="session")
def simulate_stage(call_stage):
    """(root, teacher, *extra args) -> StageResult of stages/simulate.py on the files under root."""
    return lambda root, teacher, *extra: call_stage(
        "stages/simulate.py", "--teacher", str(teacher), "--students", str(root / "students"),
        "--slm-tuned", str(root / "no_slm"), "--splits", str(root / "splits"), "--decisions", str(root / "decisions.parquet"),
        "--students-metrics", str(root / "students.json"), "--metrics", str(root / "simulate.json"),
        "--out", str(root / "plots"), "--params", str(root / "params.yaml"), *extra)


def test_stage_end_to_end(project, simulate_stage):
    root, teacher = project
    result = simulate_stage(root, teacher)
    assert result.code == 0, result.stderr
    report = json.loads((root / "simulate.json").read_text())
    market = report["christmas_market"]
    assert "skipped" in report["repeated_dilemma"]  # written for the games scenario
    t = market["teacher"]
    assert 0 < t["teacher_calls"] == t["distinct_states"] < t["decisions"]  # states repeat
    assert "skipped" in market["deciders"]["slm_tuned"]
    students = json.loads((root / "students.json").read_text())
    for name in ("constant", "lookup", "logreg", "mlp"):
        block = market["deciders"][name]
        assert block["kl_per_decision"] == (students[name]["kl"] if name in students else None)
        assert block["decisions"] > 0 and block["wasserstein"] >= 0 and 0 <= block["jsd"] <= 1
        assert set(block["groups"]) == {"likes_sweets", "dislikes_sweets", "health_conscious",
                                        "lactose_intolerant", "cheap", "spender", "impulsive_buyer"}
    # the mlp's two training seeds each ran the days; their mean is a student of its own
    assert market["deciders"]["mlp"]["seeds"]["count"] == 2 and "seeds" not in market["deciders"]["constant"]
    assert market["deciders"]["mlp_ensemble"]["kl_per_decision"] == students["mlp_ensemble"]["kl"]
    seed_diffs = market["deciders"]["mlp"]["seeds"]["total_diff"]
    assert market["deciders"]["mlp"]["total_diff"] == pytest.approx(np.mean(seed_diffs))
    assert t["prefetched_states"] > 0
    fqe = market["fqe"]
    assert set(fqe["deciders"]) == {"teacher", "constant", "lookup", "logreg", "mlp", "mlp_ensemble"}
    for name, block in fqe["deciders"].items():
        assert block["fqe"] > 0 and block["monte_carlo"] > 0 and block["is"] > 0
        assert block["abs_error"] == pytest.approx(abs(block["fqe"] - block["monte_carlo"]))
        assert block["fqe_days_out_of_range"] == 0 and "fqe_inside_mc_ci" not in block
    # the teacher's days are its own log: importance weights 1, its PDIS is its Monte Carlo return
    teacher_fqe = fqe["deciders"]["teacher"]
    assert teacher_fqe["is"] == pytest.approx(teacher_fqe["monte_carlo"]) and teacher_fqe["is_max_weight"] == 1
    gap = market["gap"]  # on the teacher's logged decisions: each decider's departure from it, split
    assert gap["decisions"] == t["decisions"] and set(gap["deciders"]) == {"constant", "lookup", "logreg", "mlp", "mlp_ensemble"}
    for name, block in gap["deciders"].items():
        assert block["kl"] >= 0
        assert block["direct"] + block["feedback"] == pytest.approx(market["deciders"][name]["total_diff"])
        assert sum(g["decisions"] for g in block["by_persona"].values()) == t["decisions"]
    ticks = pd.read_csv(root / "plots" / "christmas_market_ticks.csv")
    assert set(ticks["decider"]) == {"teacher", "constant", "lookup", "logreg", "mlp", "mlp_ensemble"} and set(ticks["seed"]) == {0, 1, 2}
    assert set(ticks["tick"]) == set(range(33))  # the opening (step 0) and the evening's 32 ticks
    assert (root / "plots" / "christmas_market.png").stat().st_size > 0
    # a second run asks the teacher nothing: every state is in the answer cache
    assert simulate_stage(root, teacher).code == 0
    again = json.loads((root / "simulate.json").read_text())["christmas_market"]
    assert again["teacher"]["teacher_calls"] == 0
    assert again["deciders"]["mlp"]["total"] == market["deciders"]["mlp"]["total"]


def test_stage_bad_params_is_one_line_and_writes_nothing(project, tmp_path, simulate_stage):
    root, teacher = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["simulate"]["deciders"] = ["mlp", "forest"]
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    before = (root / "simulate.json").read_bytes() if (root / "simulate.json").exists() else None
    result = simulate_stage(root, teacher, "--params", str(bad))
    assert result.code == 2 and result.stderr.count("\n") == 1 and "simulate.deciders" in result.stderr
    after = (root / "simulate.json").read_bytes() if (root / "simulate.json").exists() else None
    assert before == after


def test_stage_runs_the_dilemma_on_the_games_scenario(tmp_path, build_tiny_teacher, train_students, write_splits, simulate_stage):
    """Not hard-wired to ice cream: with scenario games the dilemma runs and the market is skipped."""

    from decision_distill.lm.source import download

    games = "scenarios/games.yaml"
    download(str(build_tiny_teacher(tmp_path / "weights", scenario_path=games)), "main", tmp_path / "teacher")
    splits = write_splits(games, tmp_path / "splits", n=400)
    students = train_students(splits, tmp_path / "students", archs=("mlp",), epochs=5)
    metrics, _ = evaluate_students(splits, students, ["mlp"], ece_bins=10)
    write_json(metrics, tmp_path / "students.json")
    params = {"scenario": games, "generate": {"cache": str(tmp_path / "cache.sqlite")}, "slm": {"enabled": False},
              "teacher": {"batch_size": 16, "device": "cpu"},
              "simulate": {"population": 40, "replicates": 3, "deciders": ["mlp"], "bootstrap": 200}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = simulate_stage(tmp_path, tmp_path / "teacher")
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "simulate.json").read_text())
    assert "skipped" in report["christmas_market"]
    dilemma = report["repeated_dilemma"]
    assert dilemma["series"] == "cooperation" and "fqe" not in dilemma
    # 20 pairs x contexts/partners drawn from 5 x 5, x 3 histories: few distinct states
    assert 0 < dilemma["teacher"]["teacher_calls"] <= dilemma["teacher"]["distinct_states"] <= 3 * 25
    mlp = dilemma["deciders"]["mlp"]
    assert mlp["kl_per_decision"] == metrics["mlp"]["kl"] and mlp["decisions"] == 40 * 10 * 3
    assert 0 <= mlp["total"] <= 10  # a cooperation rate summed over 10 rounds
    ticks = pd.read_csv(tmp_path / "plots" / "repeated_dilemma_ticks.csv")
    played = ticks["tick"] > 0  # tick 0: the step-0 row, before the first round (no rate yet)
    assert ticks["cooperation"][played].between(0, 1).all() and ticks["cooperation"][~played].isna().all()


def test_stage_missing_inputs_are_one_line_errors(project, tmp_path, simulate_stage):
    root, teacher = project
    result = simulate_stage(root, teacher, "--students-metrics", str(tmp_path / "none.json"))
    assert result.code == 2 and "run the evaluate stage first" in result.stderr and result.stderr.count("\n") == 1
    result = simulate_stage(root, teacher, "--students", str(tmp_path / "no_students"))
    assert result.code == 2 and "no trained 'logreg' student" in result.stderr and result.stderr.count("\n") == 1
    result = simulate_stage(root, teacher, "--decisions", str(tmp_path / "none.parquet"))
    assert result.code == 2 and "none.parquet: not found; run the generate stage first" in result.stderr
    assert result.stderr.count("\n") == 1


def test_constant_decider_takes_the_training_mean_only(project):
    root, _ = project
    params = parse_params(yaml.safe_load((root / "params.yaml").read_text()))
    scenario = load_scenario("scenarios/ice_cream.yaml")
    deciders, _, _ = build_deciders(params, scenario, root / "students", root / "no_slm", root / "splits" / "train.parquet",
                                 root / "decisions.parquet", cache=None)
    means = {n: pd.read_parquet(root / "splits" / f"{n}.parquet")["p_yes"].mean() for n in ("train", "test")}
    assert deciders["constant"].p == pytest.approx(means["train"])
    assert abs(means["train"] - means["test"]) > 1e-3  # so the test split's mean would be told apart
