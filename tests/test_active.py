"""Active sampling: the disagreement measure and pick, reproducibility, exact budget, resuming
after a kill without re-asking, and a test split that stays the reserved random sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.teacher.active import active_states, cached_ask, disagreement, pick, pick_proportional, plan_budget
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.core.errors import UserError
from decision_distill.core.params import Active, parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.data.scenario import state_key
from decision_distill.data.split import split_decisions

SCENARIO = load_scenario("scenarios/ice_cream.yaml")
SMALL = Active(reserve=30, seed_states=20, rounds=3, pool=400, committee=3, hidden=8, epochs=30)
EFFECTS = {"likes_sweets": 1.5, "dislikes_sweets": -2.0, "hot_summer_day": 1.2, "cold_winter_day": -1.5,
           "on_a_diet": -1.0, "discount": 0.5}


def synthetic_teacher(state) -> list[float]:
    """Known effects on the log-odds, plus one interaction the students must find."""
    values = set(state["traits"]) | set(state["contexts"])
    z = -0.5 + sum(EFFECTS.get(v, 0.0) for v in values)
    z += 2.0 * ("cheap" in values and "discount" in values)
    p = 1 / (1 + np.exp(-z))
    return [p, 1 - p]


class Counting:
    """The synthetic teacher, counting the states it is asked about; it can die after `limit`."""

    def __init__(self, limit: int | None = None):
        self.asked: list[str] = []
        self.limit = limit

    def __call__(self, state):
        if self.limit is not None and len(self.asked) >= self.limit:
            raise KeyboardInterrupt("killed")
        self.asked.append(state_key(state))
        return synthetic_teacher(state)


def run(tmp_path, teacher, total=110, seed=0, config=SMALL, cache_name="cache.sqlite"):
    cache = AnswerCache(tmp_path / cache_name)
    try:
        return active_states(SCENARIO, total, seed, config, cached_ask(teacher, cache, "synthetic"), log=lambda m: None)
    finally:
        cache.close()


def test_disagreement_is_zero_on_consensus_and_picks_the_disputed_states():
    agree = np.array([[0.3, 0.7]] * 3)
    constructed = np.stack([  # committee of 3 members, 5 states
        np.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5], [0.99, 0.01], [0.2, 0.8]]),
        np.array([[0.3, 0.7], [0.1, 0.9], [0.6, 0.4], [0.999, 0.001], [0.2, 0.8]]),
        np.array([[0.3, 0.7], [0.5, 0.5], [0.4, 0.6], [0.9, 0.1], [0.2, 0.8]]),
    ])
    scores = disagreement(constructed)
    assert disagreement(agree[None].repeat(3, 0))[0] == pytest.approx(0.0, abs=1e-12)
    assert scores[0] == pytest.approx(0.0, abs=1e-12) and scores[4] == pytest.approx(0.0, abs=1e-12)
    assert list(pick(scores, 2)) == [1, 3]  # the split vote first, then the spread near certainty
    assert scores[1] > scores[3] > scores[2] > 0


def test_proportional_pick_is_seeded_skips_consensus_and_favours_disagreement():
    scores = np.array([0.0] * 50 + [0.01] * 50 + [0.1] * 50)
    draws = [pick_proportional(scores, 10, np.random.default_rng(s)) for s in range(200)]
    assert (draws[0] == pick_proportional(scores, 10, np.random.default_rng(0))).all()
    picked = np.concatenate(draws)
    assert len(set(draws[0])) == 10 and (picked >= 50).all()  # never a state the committee agrees on
    assert (picked >= 100).sum() > 5 * ((picked >= 50) & (picked < 100)).sum()


def test_budget_is_spent_exactly_and_too_small_a_budget_is_an_error():
    assert sum(plan_budget(110, SMALL)) == 60 and len(plan_budget(110, SMALL)) == 3
    with pytest.raises(UserError, match="generate.states"):
        plan_budget(40, SMALL)


def test_active_run_is_reproducible_from_its_seed_and_starts_with_the_random_reserve(tmp_path):
    teacher = Counting()
    states, answers, reserved = run(tmp_path, teacher)
    again, _, _ = run(tmp_path / "b", Counting(), cache_name="other.sqlite")
    assert [state_key(s) for s in states] == [state_key(s) for s in again]
    other_seed, _, _ = run(tmp_path / "c", Counting(), seed=1)
    assert [state_key(s) for s in states] != [state_key(s) for s in other_seed]
    assert len(states) == 110 and len({state_key(s) for s in states}) == 110
    assert len(teacher.asked) == 110  # every answer asked once
    # The reserve is the random stream's first states: what a random run would draw.
    assert states[:30] == SCENARIO.sample_states(30, 0) and reserved.sum() == 30 and reserved[:30].all()
    # The picks are not random draws: they are where the committee disagreed.
    assert [state_key(s) for s in states[50:]] != [state_key(s) for s in SCENARIO.sample_states(110, 0)[50:]]


@pytest.mark.parametrize("limit", [10, 55, 80])  # killed in the reserve, in round 0, in round 1
def test_killed_run_resumes_to_the_same_states_without_asking_again(tmp_path, limit):
    clean, _, _ = run(tmp_path / "clean", Counting())
    dying = Counting(limit=limit)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, dying)
    resumed = Counting()
    states, answers, _ = run(tmp_path, resumed)
    assert [state_key(s) for s in states] == [state_key(s) for s in clean]
    assert len(dying.asked) == limit and len(resumed.asked) == 110 - limit  # nothing asked twice
    assert not set(dying.asked) & set(resumed.asked)


def test_split_puts_exactly_the_reserved_random_states_in_test(tmp_path):
    states, answers, reserved = run(tmp_path, Counting())
    frame = pd.DataFrame([{**s, "state_id": i, "p_yes": a["probs"][0], "p_no": a["probs"][1], "ok": True}
                          for i, (s, a) in enumerate(zip(states, answers))])
    frame["reserved_test"] = reserved
    frame.to_parquet(tmp_path / "d.parquet")
    SCENARIO.schema().save(tmp_path / "f.json")
    spec = parse_params({"split": {"test": 0.5, "val": 0.1}}).split  # split.test does not apply: the reserve is test
    counts = split_decisions(tmp_path / "d.parquet", tmp_path / "f.json", spec, tmp_path / "splits")
    test = pd.read_parquet(tmp_path / "splits" / "test.parquet")
    assert sorted(test["state_id"]) == list(range(30)) and counts["test"] == 30
    assert counts["val"] == 8 and counts["train"] == 72
    # Without the marker (a random run) the split is the seeded random draw it always was.
    frame.drop(columns="reserved_test").to_parquet(tmp_path / "r.parquet")
    split_decisions(tmp_path / "r.parquet", tmp_path / "f.json", spec, tmp_path / "rsplits")
    random_test = pd.read_parquet(tmp_path / "rsplits" / "test.parquet")["state_id"]
    assert len(random_test) == 55 and sorted(random_test) != list(range(55))


ACTIVE_RAW = {"strategy": "active", "states": 60,
              "active": {"reserve": 20, "seed_states": 10, "rounds": 2, "pool": 200, "committee": 2, "hidden": 8,
                         "epochs": 10}}


@pytest.mark.slow
def test_generate_stage_with_the_tiny_teacher_is_killed_and_resumes_to_the_same_dataset(tmp_path, tiny_teacher, generate_runs):
    raw = {"teacher": {"batch_size": 1, "device": "cpu"},
           "generate": {**ACTIVE_RAW, "cache": str(tmp_path / "clean.sqlite")}}
    assert generate_runs.run_stage(raw, tmp_path / "clean", tiny_teacher).wait(timeout=300) == 0
    clean = pd.read_parquet(tmp_path / "clean/d.parquet")
    assert len(clean) == 60 and clean["reserved_test"].sum() == 20 and clean["reserved_test"].iloc[:20].all()

    cache = tmp_path / "killed.sqlite"
    killed = {**raw, "generate": {**raw["generate"], "cache": str(cache)}}
    out = tmp_path / "killed"
    kills = 0
    for answers in (16, 30):  # in the reserve, then once the seed states are in (round 0 begins)
        kills += generate_runs.kill_when(generate_runs.run_stage(killed, out, tiny_teacher), cache, answers, 0.0)
    assert kills >= 1 and not (out / "d.parquet").exists()
    assert 0 < generate_runs.cached(cache) < 60
    assert generate_runs.run_stage(killed, out, tiny_teacher).wait(timeout=300) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "d.parquet"), clean)
    assert generate_runs.cached(cache) == 60  # every state asked once: the replay found the rest cached
