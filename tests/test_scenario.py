
import pytest
from ruamel.yaml import YAML

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario, parse_scenario

ICE_CREAM = "scenarios/ice_cream.yaml"


def small_scenario(**overrides):
    raw = {
        "name": "toy",
        "features": {
            "colour": {"kind": "set", "min": 1, "max": 3, "values": {"red": "red", "blue": "blue", "green": "green"}},
            "mood": {"kind": "choice", "values": {"happy": "happy", "sad": "sad"}},
            "price": {"kind": "number", "low": 1, "high": 3, "step": 0.5, "format": "{value:.2f} EUR"},
        },
        "conflicts": [["red", "blue"], ["sad", "green"]],
        "options": [{"id": "a", "text": " A"}, {"id": "b", "text": " B"}, {"id": "c", "text": " C"}],
        "prompt": {"intro": "Toy.", "case": "Colours: {colour}; mood {mood}; price {price}\nPick:",
                   "examples": [{"state": {"colour": ["red"], "mood": "happy", "price": 2.0}, "answer": "b"}]},
    }
    raw.update(overrides)
    return parse_scenario(raw, "toy.yaml")


def test_sampler_never_breaks_conflicts_and_hits_every_value():
    scenario = load_scenario(ICE_CREAM)
    states = scenario.sample_states(3000, seed=1)
    assert not any(scenario.violates_conflicts(s) for s in states)
    for s in states:
        assert 1 <= len(s["traits"]) <= 6 and 1 <= len(s["contexts"]) <= 6
    seen = {v for s in states for v in s["traits"] + s["contexts"]}
    assert seen == {v for f in scenario.features for v in f.texts}
    # every conflict pair is respected, but each value of a pair still occurs
    for pair in scenario.conflicts:
        a, b = tuple(pair)
        assert not any(a in s["traits"] + s["contexts"] and b in s["traits"] + s["contexts"] for s in states)


def test_sampler_is_reproducible_distinct_and_extends_as_a_prefix():
    scenario = load_scenario(ICE_CREAM)
    first = scenario.sample_states(500, seed=7)
    assert first == scenario.sample_states(500, seed=7)
    assert first != scenario.sample_states(500, seed=8)
    assert scenario.sample_states(1000, seed=7)[:500] == first
    keys = {str(sorted(s.items())) for s in first}
    assert len(keys) == 500


def test_choice_number_and_three_options():
    scenario = small_scenario()
    states = scenario.sample_states(20, seed=0)
    for s in states:
        assert s["mood"] in ("happy", "sad")
        assert s["price"] in (1.0, 1.5, 2.0, 2.5, 3.0)
        assert not (s["mood"] == "sad" and "green" in s["colour"])
        assert not {"red", "blue"} <= set(s["colour"])
    assert scenario.describe(states[0]).endswith("EUR\nPick:")
    assert scenario.schema().options == ("a", "b", "c")
    assert "Colours: red; mood happy; price 2.00 EUR\nPick: B" in scenario.token_prefix()


def test_impossible_conflicts_are_a_one_line_error_naming_the_field():
    with pytest.raises(UserError, match=r"features\.colour\.min is 3 but its conflicts allow at most 2"):
        small_scenario(features={
            "colour": {"kind": "set", "min": 3, "max": 3, "values": {"red": "r", "blue": "b", "green": "g"}},
        }, conflicts=[["red", "blue"]], prompt={"intro": "x", "case": "{colour}"})


def test_too_many_distinct_states_requested():
    scenario = small_scenario()
    # 5 prices x 7 valid (colour, mood) pairs: 35 distinct states at most
    assert len(scenario.sample_states(35, seed=0)) == 35
    with pytest.raises(UserError, match="generate.states"):
        scenario.sample_states(36, seed=0)


@pytest.mark.parametrize("change, message", [
    ({"conflicts": [["red", "purple"]]}, r"conflicts\[0\]"),
    ({"options": [{"id": "a", "text": " A"}]}, "at least two"),
    ({"prompt": {"intro": "x", "case": "{colour} {weather}"}}, r"prompt\.case"),
    ({"features": {"colour": {"kind": "bag", "values": {"r": "r"}}}}, r"features\.colour.*kind"),
])
def test_malformed_scenarios(change, message):
    with pytest.raises(UserError, match=message):
        small_scenario(**change)


def test_unknown_scenario_file_names_the_param(tmp_path):
    with pytest.raises(UserError, match="scenario: .*nope.yaml not found.*ice_cream.yaml"):
        load_scenario("scenarios/nope.yaml")


def test_state_problem_names_what_the_scenario_cannot_produce():
    scenario = load_scenario(ICE_CREAM)
    assert [s for s in scenario.sample_states(500, seed=2) if scenario.state_problem(s)] == []
    assert "contexts" in scenario.state_problem({"traits": ["cheap"], "contexts": []})  # min 1
    assert "contexts" in scenario.state_problem({"traits": ["cheap"], "contexts": ["hungry", "hungry"]})
    assert "unknown value 'rich'" in scenario.state_problem({"traits": ["rich"], "contexts": ["hungry"]})
    assert scenario.state_problem({"traits": ["cheap"], "contexts": ["hungry", "after_lunch"]}) == "values in conflict"
    assert scenario.state_problem({"traits": ["cheap"]}) == "no 'contexts'"
    toy = small_scenario()
    assert "price" in toy.state_problem({"colour": ["red"], "mood": "happy", "price": 3.5})
    assert toy.state_problem({"colour": ["red"], "mood": "happy", "price": 3.0}) is None


def _ice_cream_with(change) -> dict:
    raw = YAML(typ="safe", pure=True).load(open(ICE_CREAM).read())
    change(raw)
    return raw


def _rename(node: dict, old: str, new: str) -> None:
    node[new] = node.pop(old)


@pytest.mark.parametrize("change, message", [
    # the case: a misspelt optional key used to drop the conflicts without a word
    (lambda r: _rename(r, "conflicts", "conflict"), r"^x\.yaml: unknown key 'conflict'; did you mean 'conflicts'\?$"),
    (lambda r: _rename(r["features"]["traits"], "min", "mni"),
     r"^x\.yaml: unknown key 'features\.traits\.mni'; did you mean 'min'\?$"),
    (lambda r: _rename(r["features"]["traits"], "kind", "knid"),
     r"^x\.yaml: unknown key 'features\.traits\.knid'; did you mean 'kind'\?$"),
    (lambda r: _rename(r["prompt"]["examples"][2], "explanation", "explanaton"),
     r"^x\.yaml: unknown key 'prompt\.examples\[2\]\.explanaton'; did you mean 'explanation'\?$"),
    (lambda r: r["options"][1].update(label="no"), r"unknown key 'options\[1\]\.label'; valid keys here: id, text$"),
    (lambda r: r.update(version=2), r"^x\.yaml: version: must be 1, the file format this release reads \(got 2\)"),
    (lambda r: r["features"]["traits"].update(max="six"), r"^x\.yaml: features\.traits\.max: must be an integer"),
    (lambda r: r["prompt"].pop("case"), r"^x\.yaml: prompt\.case: missing; add it$"),
    (lambda r: r["prompt"]["examples"][0]["state"].update(trait=["cheap"]),
     r"prompt\.examples\[0\]\.state\.trait: not a feature of this scenario; did you mean 'traits'\?$"),
    (lambda r: r["prompt"]["examples"][0]["state"].update(traits=["likes_sweet"]),
     r"prompt\.examples\[0\]\.state\.traits: unknown value\(s\) \['likes_sweet'\]; did you mean 'likes_sweets'\?$"),
    (lambda r: r["prompt"]["examples"][0].update(probability=1.2), r"examples\[0\]\.probability: must be a probability"),
])
def test_scenario_file_mistakes_are_one_line_naming_the_key_and_the_fix(change, message):
    with pytest.raises(UserError, match=message) as err:
        parse_scenario(_ice_cream_with(change), "x.yaml")
    assert "\n" not in str(err.value)


def test_a_scenario_file_without_version_is_read_as_version_1():
    # files written before `version` existed keep loading, to the same scenario
    assert parse_scenario(_ice_cream_with(lambda r: r.pop("version")), ICE_CREAM) == load_scenario(ICE_CREAM)
