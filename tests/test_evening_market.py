"""The evening market (simulations/christmas_market_evening.yaml): the scenario's number
features filled in from the clock, so its states hardly repeat, and the gap diagnostics read a
state as its sets and its numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario
from decision_distill.simulation.config import check_against_scenario, load_simulation
from decision_distill.simulation.gap import gap_report
from decision_distill.simulation.market import MarketModel
from decision_distill.simulation.market_report import prob_on_log
from decision_distill.simulation.policy import Policy

EVENING = "simulations/christmas_market_evening.yaml"
NUMBERS = ["temperature", "minutes_since_meal", "price"]


@pytest.fixture(scope="module")
def evening():
    return load_simulation(EVENING), load_scenario("scenarios/ice_cream_evening.yaml")


class Recorder(Policy):
    """Records every state it is asked about; buys with a fixed probability."""

    def __init__(self, schema, p: float):
        self.schema, self.p, self.seen = schema, p, []

    def probs(self, states):
        frame = self.frame(states)
        self.seen.append(frame)
        return np.tile([self.p, 1 - self.p], (len(frame), 1))


def _day(evening, p=0.2, rng=5, population=300):
    config, scenario = evening
    recorder = Recorder(scenario.schema(), p)
    model = MarketModel(config, scenario, recorder, population=population, rng=rng, log_decisions=True)
    model.run_model()
    asked = pd.concat([f.assign(tick=t) for t, f in enumerate(recorder.seen)], ignore_index=True)
    return model, asked


def test_numbers_follow_the_clock_and_stay_on_the_scenarios_scale(evening):
    config, scenario = evening
    model, asked = _day(evening)
    hour = config.clock.open + asked["tick"] * config.clock.tick_minutes / 60
    features = {f.name: f for f in scenario.features}
    for name in NUMBERS:  # every value is one the scenario's own sampler could draw
        f, values = features[name], asked[name].to_numpy(float)
        assert ((values >= f.low) & (values <= f.high)).all()
        np.testing.assert_allclose((values - f.low) / f.step, np.round((values - f.low) / f.step), atol=1e-6)
    # the temperature falls through the evening by per_hour, to the scale's half-degree step
    expected = model.temperature_at_open + config.numbers.temperature.per_hour * (hour - config.clock.open)
    np.testing.assert_allclose(asked["temperature"], expected, atol=0.25 + 1e-9)
    assert asked.groupby("tick")["temperature"].nunique().eq(1).all()
    assert asked["temperature"].iloc[-1] < asked["temperature"].iloc[0]
    # the price drops by the discount factor exactly while the scenario's "discount" context holds
    discounted = asked["contexts"].map(lambda c: "discount" in c)
    assert discounted.any() and (~discounted).any()
    assert asked.loc[discounted, "price"].max() < asked.loc[~discounted, "price"].min()
    assert asked.loc[discounted, "price"].iloc[0] == pytest.approx(
        model.base_price * config.numbers.price.discount, abs=0.05 + 1e-9)
    # minutes since a meal agree with the meal contexts the same clock writes
    hungry = asked["contexts"].map(lambda c: "hungry" in c)
    after_lunch = asked["contexts"].map(lambda c: "after_lunch" in c)
    assert (asked.loc[hungry, "minutes_since_meal"] >= config.meals.hungry_after_hours * 60 - 2.5).all()
    assert (asked.loc[after_lunch, "minutes_since_meal"] <= config.meals.after_lunch_hours * 60 + 2.5).all()
    # the decision log carries the same numbers the decider was asked about
    log = model.decision_log()
    np.testing.assert_array_equal(log[NUMBERS].to_numpy(), asked[NUMBERS].to_numpy())


def test_the_evening_markets_states_are_almost_all_new_to_training(evening):
    """The issue's bar: at least 90 % of decisions on states that generate's random sampling
    (2,000 states, as the default run asks) never produced."""
    config, scenario = evening
    _, asked = _day(evening, rng=11)
    generated = pd.DataFrame(scenario.sample_states(2000, np.random.default_rng(0)))
    key = lambda frame: [(tuple(sorted(t)), tuple(sorted(c)), *(round(float(frame[n].iloc[i]), 6) for n in NUMBERS))
                         for i, (t, c) in enumerate(zip(frame["traits"], frame["contexts"]))]
    known = set(key(generated))
    new = np.array([k not in known for k in key(asked)])
    assert new.mean() >= 0.9
    # and, unlike the discrete market, they hardly repeat within the simulation either
    assert len(set(key(asked))) / len(asked) > 0.8


def test_a_market_without_numbers_draws_what_it_always_drew(evening):
    """Numbers are drawn after everything else: the same seed gives the discrete market's visitors."""
    config, scenario = evening
    plain = config.model_copy(update={"numbers": type(config.numbers)()})
    discrete = load_scenario("scenarios/ice_cream.yaml")
    a = MarketModel(plain, discrete, Recorder(discrete.schema(), 0.2), population=200, rng=7)
    b = MarketModel(config, scenario, Recorder(scenario.schema(), 0.2), population=200, rng=7)
    for name in ("trait_code", "worker", "arrival", "leave", "last_meal"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.weather == b.weather
    assert not hasattr(a, "temperature_at_open") and hasattr(b, "temperature_at_open")


def test_gap_reads_a_state_as_its_sets_and_its_numbers(evening):
    config, scenario = evening
    model, _ = _day(evening, rng=3)
    log = model.decision_log()
    # a decider that reads the temperature: wrong by +0.1 below 0 C, exact above
    trait_sets = model.trait_sets

    def teacher_like(rows):
        return np.full(len(rows), 0.2)

    def cold_biased(rows):
        return 0.2 + 0.1 * (rows["temperature"].to_numpy(float) < 0)

    log = log.assign(p=0.2)
    asked = []
    report = gap_report({3: log}, {"cold": lambda r: asked.append(len(r)) or cold_biased(r), "same": teacher_like},
                        {"cold": None, "same": None}, None, scenario, trait_sets)
    distinct = len(log.drop_duplicates(["traits", "contexts", "weather", *NUMBERS]))
    assert report["distinct_states"] == distinct == asked[0]
    assert distinct > len(log.drop_duplicates(["traits", "contexts", "weather"]))
    assert report["deciders"]["cold"]["signed_error"] == pytest.approx(0.1 * (log["temperature"] < 0).mean())
    assert report["deciders"]["same"]["signed_error"] == 0
    # prob_on_log hands the decider every number feature of the logged rows
    frames = []
    recorder = Recorder(scenario.schema(), 0.3)
    recorder.probs = lambda states: frames.append(states) or np.tile([0.3, 0.7], (len(states), 1))
    prob_on_log(recorder, scenario, trait_sets)(log.head(20))
    got = pd.concat(frames)  # each distinct state once
    assert set(map(tuple, got[NUMBERS].to_numpy())) == set(map(tuple, log.head(20)[NUMBERS].to_numpy()))


def test_state_shift_counts_a_state_new_when_only_its_numbers_differ(evening):
    config, scenario = evening
    model, _ = _day(evening, rng=4, population=50)
    log = model.decision_log().head(1).assign(p=0.3)
    state = model.decision_log().head(1)
    traits = [model.trait_sets[state["traits"].iloc[0]]]
    contexts = [model.context_table[state["contexts"].iloc[0]]]
    same = pd.DataFrame({"traits": traits, "contexts": contexts, **{n: state[n].to_numpy() for n in NUMBERS}})
    warmer = same.assign(temperature=same["temperature"] + 0.5)
    shift = lambda generated: gap_report({0: log}, {}, {}, generated, scenario, model.trait_sets)["state_shift"]
    assert shift(same)["never_generated"] == 0.0
    assert shift(warmer)["never_generated"] == 1.0
    assert shift(warmer)["numbers"]["temperature"]["generated"][1] == pytest.approx(log["temperature"].iloc[0] + 0.5)


def test_the_file_and_the_scenario_must_agree_on_numbers(evening, tmp_path):
    config, scenario = evening
    with pytest.raises(UserError, match=r"numbers.temperature: scenario 'ice_cream' has no number feature "
                                        r"'temperature'; drop it") as err:
        check_against_scenario(config, load_scenario("scenarios/ice_cream.yaml"), EVENING)
    assert "\n" not in str(err.value)
    partial = config.model_copy(update={"numbers": config.numbers.model_copy(update={"price": None})})
    with pytest.raises(UserError, match=r"number feature 'price' the market does not fill; add numbers.price"):
        check_against_scenario(partial, scenario, EVENING)
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(EVENING).read().replace("discount: 0.7}", "discount: 1.7}"))
    with pytest.raises(UserError, match=r"numbers.price.discount"):
        load_simulation(bad)
