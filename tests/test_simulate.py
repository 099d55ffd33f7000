"""The simulations: Mesa models driven by a decision_distill.simulation.policy decider."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
import yaml

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario, parse_scenario
from decision_distill.simulation.config import check_against_scenario, load_simulation
from decision_distill.simulation.market import MarketModel, context_table, persona_traits, states_frame
from decision_distill.simulation.policy import ConstantPolicy, LookupPolicy, Policy
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


def _decided(model: MarketModel, scenario) -> pd.DataFrame:
    """The states a model's visitors decided on (its decision log), with the clock tick (from 0)."""
    log = model.decision_log()
    table = context_table(scenario, model.weather)
    return states_frame(model.trait_sets, table, log["traits"].to_numpy(), log["contexts"].to_numpy()
                        ).assign(tick=log["tick"].to_numpy() - 1)


def test_market_situations_follow_the_clock(market):
    config, scenario = market
    nobody = ConstantPolicy(0.0, scenario.schema())  # nobody buys: meals alone drive hunger
    model = MarketModel(config, scenario, nobody, population=400, rng=3, log_decisions=True)
    model.run_model()
    seen = _decided(model, scenario)
    assert seen["tick"].nunique() == config.clock.ticks  # visitors decide at every tick
    hour = config.clock.open + seen["tick"] * config.clock.tick_minutes / 60
    ctx = seen["contexts"].map(set)
    has = lambda c: ctx.map(lambda s: c in s)
    assert has("discount").eq((hour >= 18) & (hour < 19)).all()
    assert not (has("hungry") & has("after_lunch")).any()  # a scenario conflict, never produced
    assert has("truck_nearby").mean() == pytest.approx(1 / len(config.stalls), abs=0.05)
    assert has("after_work")[hour < config.visitors.workers_from].sum() == 0 and has("after_work").any()
    assert has("hungry").any() and has("after_lunch").any()
    # without the food stall's meals (and nobody buying), "after_lunch" ends 2 h after the
    # last lunch (13:30) and everyone is hungry 4 h after their own lunch
    fasting = config.model_copy(update={"meals": config.meals.model_copy(update={"eat_probability": 0.0})})
    model = MarketModel(fasting, scenario, nobody, population=400, rng=3, log_decisions=True)
    model.run_model()
    seen = _decided(model, scenario)
    hour = config.clock.open + seen["tick"] * config.clock.tick_minutes / 60
    ctx = seen["contexts"].map(set)
    assert not ctx[hour >= 15.5].map(lambda s: "after_lunch" in s).any()
    assert ctx[hour >= 17.5].map(lambda s: "hungry" in s).all()
    for traits in seen["traits"]:
        assert traits and not any(scenario.in_conflict(a, b) for a in traits for b in traits)


def _with(config, **visitors):
    return config.model_copy(update={"visitors": config.visitors.model_copy(update=visitors)})


def test_a_purchase_counts_as_eating(market):
    config, scenario = market
    recorder = Recorder(scenario.schema(), lambda s: 1.0)  # everyone buys at every chance
    model = MarketModel(_with(config, decide="every_tick"), scenario, recorder, population=300, rng=1,
                        log_decisions=True)
    model.run_model()
    log = model.decision_log()
    hungry = (log["contexts"] & 1).astype(bool)  # bit 0 of the context code
    first = ~log["row"].duplicated()
    assert hungry[first].any()  # some arrive hungry ...
    assert not hungry[~first].any()  # ... but having bought every tick, nobody is hungry again
    assert log["buy"].all()
    # the log's clock since the last meal restarts at each purchase: one tick later it reads one tick
    later = log.sort_values(["row", "tick"])
    gap = later.groupby("row")["tick"].diff()
    assert later.loc[gap == 1, "since_meal"].to_numpy() == pytest.approx(config.clock.tick_minutes / 60)


def test_until_bought_ends_a_visitors_decisions_at_the_purchase(market):
    config, scenario = market
    assert config.visitors.decide == "until_bought"  # what the file says it does
    logs = {}
    for decide in ("until_bought", "every_tick"):
        model = MarketModel(_with(config, decide=decide), scenario, ConstantPolicy(0.3, scenario.schema()),
                            population=300, rng=2, log_decisions=True)
        model.run_model()
        logs[decide] = model.decision_log().sort_values(["row", "tick"])
    log = logs["until_bought"]
    bought_before = log.groupby("row")["buy"].transform(lambda b: b.cumsum().shift(fill_value=0)) > 0
    assert not bought_before.any() and log.groupby("row")["buy"].sum().max() == 1
    again = logs["every_tick"]
    assert (again.groupby("row")["buy"].sum() > 1).any()  # the setting is what stops them


def test_workers_arrive_from_the_hour_the_file_gives(market):
    config, scenario = market
    first = {}
    for hour in (17.0, 19.5):
        model = MarketModel(_with(config, workers_from=hour), scenario, ConstantPolicy(0.0, scenario.schema()),
                            population=400, rng=4, log_decisions=True)
        model.run_model()
        seen = _decided(model, scenario)
        after_work = seen["tick"][seen["contexts"].map(lambda c: "after_work" in c)].min()
        first[hour] = config.clock.open + after_work * config.clock.tick_minutes / 60
    assert first == {17.0: 17.0, 19.5: 19.5}


def test_every_state_the_market_asks_about_is_one_the_scenario_can_produce(market):
    config, scenario = market
    # a day without weather: a visitor who is neither hungry nor just fed, not after work, not at
    # the ice-cream stall and outside the discount hour has no context at all
    plain = config.model_copy(update={"weather": {"none": 1.0}})
    recorder = Recorder(scenario.schema(), lambda s: 0.0)  # nobody buys: every present visitor may decide
    model = MarketModel(plain, scenario, recorder, population=400, rng=5)
    model.run_model()
    asked = pd.concat(recorder.seen).to_dict("records")
    assert [s for s in asked if scenario.state_problem(s) is not None] == []
    rows = model.datacollector.get_model_vars_dataframe()
    assert (rows["decisions"] < rows["present"]).any()  # those without a context were not asked


def _state_p(state) -> float:
    """A P(buy) that differs between nearly all states, the same each time a state is asked."""
    key = json.dumps([sorted(state["traits"]), sorted(state["contexts"])]).encode()
    return 0.02 + 0.96 * (zlib.crc32(key) % 1000) / 1000


def _logged_states(config, scenario, logs) -> pd.DataFrame:
    """Every logged decision's state, rebuilt from its codes and the day's weather."""
    trait_sets, frames = persona_traits(config, scenario), []
    for _, log in logs:
        table = context_table(scenario, log["weather"].iloc[0])
        frames.append(states_frame(trait_sets, table, log["traits"].to_numpy(), log["contexts"].to_numpy())
                      .assign(weather=log["weather"].to_numpy(), p=log["p"].to_numpy()))
    return pd.concat(frames, ignore_index=True)


def test_the_market_asks_each_state_once_and_answers_every_decision_for_its_own_state(market):
    config, scenario = market
    recorder, logs = Recorder(scenario.schema(), _state_p), []
    run_replicates(config, scenario, recorder, 300, list(range(8)), logs)
    decided = _logged_states(config, scenario, logs)
    assert decided["weather"].nunique() >= 2  # a context code stands for other contexts under other weather
    expected = [_state_p(s) for s in decided[["traits", "contexts"]].to_dict("records")]
    np.testing.assert_array_equal(decided["p"].to_numpy(), expected)
    asked = pd.concat(recorder.seen)
    distinct = decided.assign(t=decided["traits"].map(tuple), c=decided["contexts"].map(tuple))
    assert len(asked) == len(distinct.drop_duplicates(["weather", "t", "c"])) < len(decided) / 10


def test_a_remembered_answer_still_counts_its_fallback_decisions(market):
    config, scenario = market
    schema = scenario.schema()
    probe, logs = Recorder(schema, _state_p), []
    run_replicates(config, scenario, probe, 300, [0, 1], logs)
    states = pd.concat(probe.seen, ignore_index=True)
    answered = states.iloc[::3].assign(**{schema.prob_columns[0]: 0.3, schema.prob_columns[1]: 0.7})
    lookup = LookupPolicy(answered, schema)
    logs = []
    run_replicates(config, scenario, lookup, 300, [0, 1], logs)
    fresh = LookupPolicy(answered, schema)  # asked about every decision, one row each
    fresh.prob(_logged_states(config, scenario, logs)[["traits", "contexts"]])
    assert 0 < lookup.fallbacks == fresh.fallbacks


def test_datacollector_records_the_opening_and_every_tick(market):
    config, scenario = market
    model = MarketModel(config, scenario, ConstantPolicy(0.2, scenario.schema()), population=200, rng=0,
                        log_decisions=True)
    opening = model.datacollector.get_model_vars_dataframe()
    assert len(opening) == 1 and opening.loc[0, ["sales", "decisions", "present"]].tolist() == [0, 0, 0]
    model.run_model()
    rows = model.datacollector.get_model_vars_dataframe()
    assert len(rows) == config.clock.ticks + 1
    log = model.decision_log()  # the DataCollector's decisions table, one row per decision
    assert log.groupby("tick").size().reindex(rows.index, fill_value=0).tolist() == rows["decisions"].tolist()
    assert log.groupby("tick")["buy"].sum().reindex(rows.index, fill_value=0).tolist() == rows["sales"].tolist()
    # run_replicates keeps every collection, the last tick's included
    replicate, _ = run_replicates(config, scenario, ConstantPolicy(0.2, scenario.schema()), 200, [0])
    pd.testing.assert_frame_equal(replicate.drop(columns="seed"), rows.rename_axis("tick").reset_index(),
                                  check_dtype=False)


def test_dilemma_history_is_what_the_partner_did(dilemma):
    config, scenario = dilemma
    # a tit-for-tat population cooperating unless the partner defected: with a first move of
    # P=1 everyone keeps cooperating; with "defect after defection" rates fall off
    tit_for_tat = Recorder(scenario.schema(), lambda s: 0.0 if s["history"] == "they_defected" else 1.0)
    rows, _ = run_replicates(config, scenario, tit_for_tat, 200, [0])
    rows = rows[rows["tick"] > 0]  # tick 0: the DataCollector's row before the first round
    assert rows["cooperation"].eq(1.0).all()
    assert set(tit_for_tat.seen[0]["history"]) == {"first_game"}
    assert set(tit_for_tat.seen[1]["history"]) == {"they_cooperated"}
    alternate = Recorder(scenario.schema(), lambda s: 0.0 if s["history"] == "first_game" else
                         1.0 if s["history"] == "they_defected" else 0.0)
    rows, _ = run_replicates(config, scenario, alternate, 200, [0])
    assert rows[rows["tick"] > 0]["cooperation"].tolist() == [0.0, 1.0] * (config.rounds // 2) + [0.0] * (config.rounds % 2)


def test_simulation_file_errors_name_the_key(tmp_path, market):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(MARKET).read().replace("tick_minutes: 15", "tick_minutes: -1"))
    with pytest.raises(UserError, match="clock.tick_minutes"):
        load_simulation(bad)
    bad.write_text(open(MARKET).read().replace("workers_from: 17.0", "workers_from: 23.0"))
    with pytest.raises(UserError, match=r"visitors.workers_from: 23 is outside the opening hours 14-22") as err:
        load_simulation(bad)
    assert "\n" not in str(err.value)
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
    one_trait = yaml.safe_load(open("scenarios/ice_cream.yaml"))
    one_trait["features"]["traits"]["max"] = 1  # the file's first persona has two
    with pytest.raises(UserError, match=r"visitors.personas\[0\]: 2 traits, but scenario 'ice_cream' describes "
                                        r"a person by 1 to 1"):
        check_against_scenario(config, parse_scenario(one_trait, "one_trait.yaml"), MARKET)


def test_dilemma_runs_a_trained_games_student(dilemma, tmp_path, train_students, write_splits):

    config, scenario = dilemma
    splits = write_splits("scenarios/games.yaml", tmp_path / "splits", n=400)
    student = Policy.load(train_students(splits, tmp_path / "students", archs=("mlp",), epochs=5) / "mlp")
    recorder = Recorder(scenario.schema(), lambda s: 0.5)
    recorder.probs = lambda states, inner=recorder.probs: (inner(states), student.probs(states))[1]
    rows, _ = run_replicates(config, scenario, recorder, 2000, [0])
    opening, rows = rows.iloc[0], rows[rows["tick"] > 0]
    assert opening["tick"] == 0 and opening["decisions"] == 0 and np.isnan(opening["cooperation"])
    first = recorder.seen[0]
    assert set(first["game"]) == {config.game} and first["both_cooperate"].eq(5.0).all()  # lookups derived
    expected = student.prob(first).mean()
    assert abs(rows["cooperation"].iloc[0] - expected) < 4 * np.sqrt(expected * (1 - expected) / 2000)
    assert rows["decisions"].eq(2000).all() and len(rows) == config.rounds
