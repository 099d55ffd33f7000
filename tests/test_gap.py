"""The gap diagnostics (simulation/gap.py) on hand-made decision logs, shaped like
MarketModel.decision_log(): known errors must show where they were put, and nowhere else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.data.scenario_file import load_scenario
from decision_distill.simulation.config import CONTEXT_BITS
from decision_distill.simulation.gap import gap_report

TRAIT_SETS = [["likes_sweets", "impulsive_buyer"], ["likes_sweets"], ["cheap"], ["health_conscious"]]
WEATHER_BIT = 1 << CONTEXT_BITS.index("weather")


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("scenarios/ice_cream.yaml")


def teacher(rows: pd.DataFrame) -> np.ndarray:
    """A known P(buy) that differs from state to state (persona, context code and weather)."""
    t, c = rows["traits"].to_numpy(), rows["contexts"].to_numpy()
    return 0.1 + 0.1 * t + 0.005 * c + 0.04 * (rows["weather"].to_numpy() == "none")


def synthetic_logs(days: int = 5, seed: int = 0) -> dict[int, pd.DataFrame]:
    """seed -> a day's decision log: random personas and context codes, a decision's p the teacher's.
    Days differ in length and weather, as market days do."""
    rng = np.random.default_rng(seed)
    logs = {}
    for day in range(days):
        n = int(rng.integers(150, 300))
        weather = "none" if day % 3 == 2 else "cold_winter_day"
        contexts = rng.integers(1, 2 ** len(CONTEXT_BITS), n)
        contexts = contexts & ~WEATHER_BIT if weather == "none" else contexts | WEATHER_BIT
        rows = pd.DataFrame({"tick": rng.integers(1, 33, n), "row": rng.integers(0, 400, n),
                             "traits": rng.choice(len(TRAIT_SETS), n, p=[0.4, 0.3, 0.2, 0.1]),
                             "contexts": contexts, "weather": np.full(n, weather, dtype=object)})
        rows["p"] = teacher(rows)
        rows["buy"] = rng.random(n) < rows["p"]
        logs[100 + day] = rows[["tick", "row", "traits", "contexts", "p", "buy", "weather"]]
    return logs


def test_a_decider_equal_to_the_teacher_shows_no_gap(scenario):
    logs = synthetic_logs()
    report = gap_report(logs, {"same": teacher}, {"same": 3.0}, None, scenario, TRAIT_SETS)
    assert report["decisions"] == sum(len(d) for d in logs.values()) and report["days"] == 5
    same = report["deciders"]["same"]
    assert same["kl"] == pytest.approx(0, abs=1e-12) and same["signed_error"] == pytest.approx(0, abs=1e-12)
    assert same["direct"] == pytest.approx(0, abs=1e-12) and same["feedback"] == pytest.approx(3.0)
    assert set(same["by_persona"]) == {"likes_sweets+impulsive_buyer", "likes_sweets", "cheap", "health_conscious"}
    for block in [*same["by_persona"].values(), *same["by_context"].values()]:
        assert block["signed_error"] == pytest.approx(0, abs=1e-12) and block["decisions"] > 0
    assert sum(b["decisions"] for b in same["by_persona"].values()) == report["decisions"]
    assert "state_shift" not in report  # no generated states given


def test_an_error_on_one_persona_shows_on_that_persona_alone(scenario):
    logs = synthetic_logs()
    cheap = TRAIT_SETS.index(["cheap"])
    plus = lambda rows: teacher(rows) + 0.05 * (rows["traits"].to_numpy() == cheap)  # noqa: E731
    report = gap_report(logs, {"plus": plus, "same": teacher}, {"plus": 10.0, "same": 0.0}, None, scenario,
                        TRAIT_SETS)
    block = report["deciders"]["plus"]
    for persona, group in block["by_persona"].items():
        expected = 0.05 if persona == "cheap" else 0.0
        assert group["signed_error"] == pytest.approx(expected, abs=1e-12), persona
    per_day = np.mean([(log["traits"] == cheap).sum() for log in logs.values()])
    assert block["direct"] == pytest.approx(0.05 * per_day)
    assert block["feedback"] == pytest.approx(10.0 - 0.05 * per_day)
    pooled = pd.concat(logs.values())
    assert block["signed_error"] == pytest.approx(0.05 * (pooled["traits"] == cheap).mean())
    p, q = pooled["p"].to_numpy(), plus(pooled)
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    assert block["kl"] == pytest.approx(kl.mean()) and block["kl"] > 0
    # per context: the error is the cheap visitors' share of the decisions in that context times 0.05
    hungry = (pooled["contexts"].to_numpy() & 1).astype(bool)
    assert block["by_context"]["hungry"]["decisions"] == hungry.sum()
    assert block["by_context"]["hungry"]["signed_error"] == pytest.approx(
        0.05 * (pooled["traits"].to_numpy()[hungry] == cheap).mean())
    cold = pooled["weather"].to_numpy() == "cold_winter_day"
    assert block["by_context"]["cold_winter_day"]["decisions"] == cold.sum()
    assert "on_a_diet" not in block["by_context"]  # a context the market never produces
    assert report["deciders"]["same"]["direct"] == pytest.approx(0, abs=1e-12)  # deciders do not mix


def test_state_shift_on_a_hand_made_case(scenario):
    code = {b: 1 << i for i, b in enumerate(CONTEXT_BITS)}
    trait_sets = [["likes_sweets"], ["cheap"]]
    log = pd.DataFrame({  # 4 decisions on 3 distinct states, the last one never generated
        "tick": [1, 1, 2, 2], "row": [0, 1, 0, 1], "traits": [0, 1, 0, 1],
        "contexts": [code["hungry"] | code["weather"], code["truck_nearby"], code["hungry"] | code["weather"],
                     code["after_lunch"] | code["after_work"]],
        "p": [0.3, 0.2, 0.3, 0.1], "buy": [False] * 4, "weather": ["cold_winter_day"] * 4})
    generated = pd.DataFrame({  # as data/decisions.parquet holds them: arrays, any order within a set
        "traits": [np.array(["likes_sweets"]), np.array(["cheap"]), np.array(["spender", "likes_sweets"])],
        "contexts": [np.array(["cold_winter_day", "hungry"]), np.array(["truck_nearby"]), np.array(["discount"])]})
    shift = gap_report({0: log}, {}, {}, generated, scenario, trait_sets)["state_shift"]
    assert shift["never_generated"] == pytest.approx(0.25)
    assert (shift["never_generated_states"], shift["distinct_states"], shift["generated_states"]) == (1, 3, 3)
    traits, contexts = shift["values"]["traits"], shift["values"]["contexts"]
    assert traits["likes_sweets"] == pytest.approx({"simulated": 0.5, "generated": 2 / 3})
    assert traits["spender"] == pytest.approx({"simulated": 0.0, "generated": 1 / 3})
    assert contexts["cold_winter_day"] == pytest.approx({"simulated": 0.5, "generated": 1 / 3})
    assert contexts["after_work"] == pytest.approx({"simulated": 0.25, "generated": 0.0})
    assert contexts["on_a_diet"] == {"simulated": 0.0, "generated": 0.0}
    sizes = {f: {k: (v["simulated"], v["generated"]) for k, v in shift["sizes"][f].items()} for f in shift["sizes"]}
    assert sizes["traits"] == {"1": pytest.approx((1.0, 2 / 3)), "2": pytest.approx((0.0, 1 / 3))}
    assert sizes["contexts"] == {"1": pytest.approx((0.25, 2 / 3)), "2": pytest.approx((0.75, 1 / 3))}


def test_deciders_are_asked_once_per_distinct_state(scenario):
    logs = synthetic_logs()
    asked = []
    gap_report(logs, {"same": lambda rows: asked.append(len(rows)) or teacher(rows)}, {}, None, scenario,
               TRAIT_SETS)
    pooled = pd.concat(logs.values())
    assert asked == [len(pooled[["traits", "contexts", "weather"]].drop_duplicates())]
