"""The simulations: Mesa models driven by a decision_distill.simulation.policy decider."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario
from decision_distill.simulation.config import check_against_scenario, load_simulation
from decision_distill.simulation.market import MarketModel
from decision_distill.simulation.policy import ConstantPolicy, Policy
from decision_distill.simulation.run import run_replicates

MARKET, DILEMMA = "simulations/christmas_market.yaml", "simulations/repeated_dilemma.yaml"


@pytest.fixture(scope="module")
def market():
    return load_simulation(MARKET), load_scenario("scenarios/ice_cream.yaml")


@pytest.fixture(scope="module")
def dilemma():
    return load_simulation(DILEMMA), load_scenario("scenarios/games.yaml")


@pytest.mark.parametrize("p", [0.1, 0.45])
def test_constant_decider_sells_at_its_rate(market, p):
    config, scenario = market
    rows, _ = run_replicates(config, scenario, ConstantPolicy(p, scenario.schema()), 400, [0, 1])
    sales, decisions = rows["sales"].sum(), rows["decisions"].sum()
    assert decisions > 1000
    # purchases are Bernoulli(p) draws, one per decision: within 4 binomial standard errors
    assert abs(sales / decisions - p) < 4 * np.sqrt(p * (1 - p) / decisions)


def test_replicates_repeat_with_the_seed_and_differ_across_seeds(market):
    config, scenario = market
    decider = ConstantPolicy(0.3, scenario.schema())
    a, _ = run_replicates(config, scenario, decider, 300, [5, 6])
    b, _ = run_replicates(config, scenario, decider, 300, [5, 6])
    pd.testing.assert_frame_equal(a, b)
    one, two = (a[a["seed"] == s]["sales"].to_numpy() for s in (5, 6))
    assert not np.array_equal(one, two)


class Recorder(Policy):
    """Answers with a fixed function of the state and keeps every state it was asked about."""

    def __init__(self, schema, p_of):
        self.schema, self.name, self.p_of, self.seen = schema, "recorder", p_of, []

    def probs(self, states):
        frame = self.frame(states)
        self.seen.append(frame.copy())
        p = np.array([self.p_of(row) for row in frame.to_dict("records")], dtype=float)
        return np.stack([p, 1 - p], axis=1)


def test_market_situations_follow_the_clock(market):
    config, scenario = market
    recorder = Recorder(scenario.schema(), lambda s: 0.0)  # nobody buys: meals alone drive hunger
    model = MarketModel(config, scenario, recorder, population=400, seed=3)
    model.run_model()
    assert len(recorder.seen) == config.clock.ticks  # one batched call per tick
    seen = pd.concat([f.assign(tick=t) for t, f in enumerate(recorder.seen)])
    hour = config.clock.open + seen["tick"] * config.clock.tick_minutes / 60
    ctx = seen["contexts"].map(set)
    has = lambda c: ctx.map(lambda s: c in s)
    assert has("discount").eq((hour >= 18) & (hour < 19)).all()
    assert not (has("hungry") & has("after_lunch")).any()  # a scenario conflict, never produced
    assert has("truck_nearby").mean() == pytest.approx(1 / len(config.stalls), abs=0.05)
    assert has("after_work")[hour < 17].sum() == 0 and has("after_work").any()
    assert has("hungry").any() and has("after_lunch").any()
    # without the food stall's meals (and nobody buying), "after_lunch" ends 2 h after the
    # last lunch (13:30) and everyone is hungry 4 h after their own lunch
    fasting = config.model_copy(update={"meals": config.meals.model_copy(update={"eat_probability": 0.0})})
    recorder.seen = []
    MarketModel(fasting, scenario, recorder, population=400, seed=3).run_model()
    seen = pd.concat([f.assign(tick=t) for t, f in enumerate(recorder.seen)])
    hour = config.clock.open + seen["tick"] * config.clock.tick_minutes / 60
    ctx = seen["contexts"].map(set)
    assert not ctx[hour >= 15.5].map(lambda s: "after_lunch" in s).any()
    assert ctx[hour >= 17.5].map(lambda s: "hungry" in s).all()
    for traits in seen["traits"]:
        assert traits and not any(scenario.in_conflict(a, b) for a in traits for b in traits)


def test_a_purchase_counts_as_eating(market):
    config, scenario = market
    recorder = Recorder(scenario.schema(), lambda s: 1.0)  # everyone buys at every chance
    model = MarketModel(config, scenario, recorder, population=300, seed=1, log_decisions=True)
    model.run_model()
    log = pd.concat(model.log)
    hungry = (log["contexts"] & 1).astype(bool)  # bit 0 of the context code
    first = ~log["row"].duplicated()
    assert hungry[first].any()  # some arrive hungry ...
    assert not hungry[~first].any()  # ... but having bought every tick, nobody is hungry again
    assert log["buy"].all()


def test_dilemma_history_is_what_the_partner_did(dilemma):
    config, scenario = dilemma
    # a tit-for-tat population cooperating unless the partner defected: with a first move of
    # P=1 everyone keeps cooperating; with "defect after defection" rates fall off
    tit_for_tat = Recorder(scenario.schema(), lambda s: 0.0 if s["history"] == "they_defected" else 1.0)
    rows, _ = run_replicates(config, scenario, tit_for_tat, 200, [0])
    assert rows["cooperation"].eq(1.0).all()
    assert set(tit_for_tat.seen[0]["history"]) == {"first_game"}
    assert set(tit_for_tat.seen[1]["history"]) == {"they_cooperated"}
    alternate = Recorder(scenario.schema(), lambda s: 0.0 if s["history"] == "first_game" else
                         1.0 if s["history"] == "they_defected" else 0.0)
    rows, _ = run_replicates(config, scenario, alternate, 200, [0])
    assert rows["cooperation"].tolist() == [0.0, 1.0] * (config.rounds // 2) + [0.0] * (config.rounds % 2)


def test_simulation_file_errors_name_the_key(tmp_path, market):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(MARKET).read().replace("tick_minutes: 15", "tick_minutes: -1"))
    with pytest.raises(UserError, match="clock.tick_minutes"):
        load_simulation(bad)
    bad.write_text(open(MARKET).read().replace("tick_minutes: 15", "tick_minute: 15"))
    with pytest.raises(UserError, match=r"unknown key 'clock\.tick_minute'; did you mean 'tick_minutes'\?$"):
        load_simulation(bad)
    bad.write_text(open(MARKET).read().replace("version: 1 ", "version: 2 "))
    with pytest.raises(UserError, match=r"bad\.yaml: version: must be 1, .*\(got 2\)"):
        load_simulation(bad)
    bad.write_text(open(MARKET).read().replace("version: 1 ", "# no version: read as 1 "))
    assert load_simulation(bad) == load_simulation(MARKET)
    config, _ = market
    with pytest.raises(UserError, match="no feature 'traits'"):
        check_against_scenario(config, load_scenario("scenarios/games.yaml"), MARKET)


def test_dilemma_runs_a_trained_games_student(dilemma, tmp_path, train_students, write_splits):

    config, scenario = dilemma
    splits = write_splits("scenarios/games.yaml", tmp_path / "splits", n=400)
    student = Policy.load(train_students(splits, tmp_path / "students", archs=("mlp",), epochs=5) / "mlp")
    recorder = Recorder(scenario.schema(), lambda s: 0.5)
    recorder.probs = lambda states, inner=recorder.probs: (inner(states), student.probs(states))[1]
    rows, _ = run_replicates(config, scenario, recorder, 2000, [0])
    first = recorder.seen[0]
    assert set(first["game"]) == {config.game} and first["both_cooperate"].eq(5.0).all()  # lookups derived
    expected = student.prob(first).mean()
    assert abs(rows["cooperation"].iloc[0] - expected) < 4 * np.sqrt(expected * (1 - expected) / 2000)
    assert rows["decisions"].eq(2000).all() and len(rows) == config.rounds
