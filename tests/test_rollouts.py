"""generate.rollouts: a share of generate's states from market days the (tiny) teacher drives,
drawn by visits, on day seeds of their own, mixed with the random sequence's first states."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from decision_distill.core.errors import UserError
from decision_distill.core.params import parse_params
from decision_distill.data.scenario import state_key
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.simulation.config import load_simulation, rollout_config
from decision_distill.simulation.market import persona_traits
from decision_distill.simulation.prompt_policy import TeacherPolicy
from decision_distill.simulation.rollouts import rollout_states, visited_states
from decision_distill.simulation.run import run_replicates
from decision_distill.teacher.generate import generate

SCENARIO, MARKET = "scenarios/ice_cream.yaml", "simulations/christmas_market.yaml"


def params_for(tmp_path, **rollouts):
    return parse_params({"teacher": {"batch_size": 16, "device": "cpu"},
                         "generate": {"states": 60, "cache": str(tmp_path / "cache.sqlite"),
                                      "rollouts": {"simulation": MARKET, "population": 40, "max_days": 3,
                                                   "seed": 500, **rollouts}}})


def test_rollout_states_are_the_markets_own_on_their_own_day_seeds(tmp_path, tiny_teacher):
    params, scenario, config = params_for(tmp_path, share=0.5), load_scenario(SCENARIO), load_simulation(MARKET)
    # the first state the day-500 market asks about is left out: it must not come back
    excluded = {state_key(_day_states(config, scenario, tiny_teacher, params, 500)[0])}
    cache = AnswerCache(params.generate.cache)
    try:
        states, summary = rollout_states(params, scenario, tiny_teacher, cache, 25, excluded)
        answered = len(cache)
    finally:
        cache.close()
    keys = [state_key(s) for s in states]
    assert len(states) == 25 and len(set(keys)) == 25 and not set(keys) & excluded
    personas = [set(t) for t in persona_traits(config, scenario)]
    assert all(set(s["traits"]) in personas for s in states)  # the market's visitors, not random people
    assert summary["days"] >= 1 and summary["distinct_states"] >= 25 and summary["decisions"] >= summary["distinct_states"]
    # the states of day 500 (the first rollout day) are among them: the rollouts ran on the seeds asked for
    assert set(keys) <= {state_key(s) for d in range(summary["days"]) for s in _day_states(config, scenario, tiny_teacher, params, 500 + d)}
    # every rollout state was answered while driving: nothing is left for generate to ask
    assert answered >= summary["distinct_states"]


def _day_states(config, scenario, teacher_dir, params, seed):
    cache = AnswerCache(params.generate.cache)
    try:
        logs = []
        run_replicates(config, scenario, TeacherPolicy(teacher_dir, scenario, params, cache), 40, [seed], logs)
        return visited_states(config, scenario, logs[0][1])
    finally:
        cache.close()


def test_generate_mixes_the_random_sequence_with_rollout_states(tmp_path, tiny_teacher):
    scenario = load_scenario(SCENARIO)
    out = tmp_path / "mixed"
    out.mkdir()
    params = params_for(tmp_path, share=0.25)
    calls = []

    def rollouts(n, exclude, cache):
        states, summary = rollout_states(params, scenario, tiny_teacher, cache, n, exclude)
        calls.append((n, len(exclude)))
        return states, summary

    metrics = generate(params, scenario, tiny_teacher, out / "d.parquet", out / "f.json", out / "m.json", rollouts)
    frame = pd.read_parquet(out / "d.parquet")
    assert calls == [(15, 45)]  # a quarter of 60 from rollouts, the 45 random states left out of them
    random_states = scenario.sample_states(45, params.generate.seed)
    assert frame["from_rollout"].tolist() == [False] * 45 + [True] * 15
    assert [state_key(s) for s in random_states] == [
        state_key({"traits": list(t), "contexts": list(c)}) for t, c in zip(frame.traits[:45], frame.contexts[:45])]
    assert frame["state_id"].is_unique and len(frame) == metrics["states"] == 60
    assert metrics["rollouts"]["states"] == 15 and metrics["rollouts"]["simulation"] == "christmas_market"
    assert json.loads((out / "m.json").read_text())["rollouts"] == metrics["rollouts"]


def test_rollouts_need_a_market_of_the_pipelines_scenario(tmp_path):
    games = load_scenario("scenarios/games.yaml")
    with pytest.raises(UserError, match=r"generate.rollouts.simulation: simulations/repeated_dilemma.yaml is a "
                                        r"dilemma; rollouts run a market"):
        rollout_config("simulations/repeated_dilemma.yaml", games)
    with pytest.raises(UserError, match=r"is written for scenario 'ice_cream', the pipeline's is 'games'"):
        rollout_config(MARKET, games)
    with pytest.raises(UserError, match=r"generate: rollouts.share: rollout states mix with random states only"):
        parse_params({"generate": {"strategy": "active", "rollouts": {"share": 0.5}}})
