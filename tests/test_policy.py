"""decision_distill.simulation.policy: one interface over students, the teacher and constants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.core.errors import UserError
from decision_distill.evaluation.evaluate import evaluate_students
from decision_distill.core.params import parse_params
from decision_distill.simulation.policy import ConstantPolicy, LookupPolicy, Policy
from decision_distill.simulation.prompt_policy import TeacherPolicy
from decision_distill.data.scenario_file import load_scenario

ICE = "scenarios/ice_cream.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_students, write_splits):
    root = tmp_path_factory.mktemp("policy")
    splits = write_splits(ICE, root / "splits")
    return splits, train_students(splits, root / "students", archs=("mlp", "encoder"), epochs=5)


def test_prob_equals_evaluate_predictions(trained):
    splits, students = trained
    _, predictions = evaluate_students(splits, students, ["mlp", "encoder"], ece_bins=10)
    test = pd.read_parquet(splits / "test.parquet")
    for arch in ("mlp", "encoder"):
        rows = predictions[predictions["student"] == arch].set_index("state_id").loc[test["state_id"]]
        policy = Policy.load(students / arch)
        np.testing.assert_allclose(policy.prob(test), rows["student_yes"].to_numpy(), rtol=0, atol=1e-6)
        # a list of dicts gives the same as the frame, in any batch split
        dicts = test[["traits", "contexts"]].to_dict("records")
        both = np.concatenate([policy.prob(dicts[:7]), policy.prob(dicts[7:])])
        np.testing.assert_allclose(both, rows["student_yes"].to_numpy(), atol=1e-6)


def test_bad_states_are_one_line_errors(trained):
    _, students = trained
    policy = Policy.load(students / "mlp")
    with pytest.raises(UserError, match="no feature 'contexts'"):
        policy.prob([{"traits": ["cheap"]}])
    with pytest.raises(UserError, match="unknown value 'rich'"):
        policy.prob([{"traits": ["rich"], "contexts": ["hungry"]}])
    with pytest.raises(UserError, match="feature 'traits': expected a list of values, got None"):
        policy.prob([{"traits": None, "contexts": ["hungry"]}, {"traits": ["cheap"], "contexts": ["hungry"]}])


def test_values_never_trained_on_are_counted_as_fallbacks(trained):
    splits, students = trained
    train = pd.read_parquet(splits / "train.parquet")
    no_discount = train[[("discount" not in list(c)) for c in train["contexts"]]]
    policy = Policy.load(students / "mlp", trained_on=no_discount)
    assert policy.unseen == {"contexts": {"discount"}}
    policy.prob([{"traits": ["cheap"], "contexts": ["hungry"]}])
    assert policy.fallbacks == 0
    policy.prob([{"traits": ["cheap"], "contexts": ["discount"]}, {"traits": ["spender"], "contexts": ["discount"]}])
    assert policy.fallbacks == 2


def test_constant_policy():
    schema = load_scenario(ICE).schema()
    p = ConstantPolicy(0.3, schema).probs([{"traits": ["cheap"], "contexts": ["hungry"]}] * 3)
    assert p.shape == (3, 2) and np.allclose(p[:, 0], 0.3)


def test_constant_policy_at_the_training_mean(tmp_path):
    schema = load_scenario(ICE).schema()
    train = pd.DataFrame({"traits": [["cheap"]] * 3, "contexts": [["hungry"]] * 3, "p_yes": [0.2, 0.4, 0.9],
                          "p_no": [0.8, 0.6, 0.1], "ok": [True, True, False]})  # an unreadable answer is no data
    train.to_parquet(tmp_path / "train.parquet")
    constant = ConstantPolicy.training_mean(tmp_path / "train.parquet", schema)
    assert constant.name == "constant" and constant.p == pytest.approx(0.3)
    np.testing.assert_allclose(constant.prob([{"traits": ["spender"], "contexts": ["discount"]}] * 2), [0.3, 0.3])
    with pytest.raises(UserError, match="nothing.parquet: not found; run the split stage first"):
        ConstantPolicy.training_mean(tmp_path / "nothing.parquet", schema)


def _answers(rows):
    return pd.DataFrame([{"traits": t, "contexts": c, "p_yes": p, "p_no": 1 - p, "ok": True} for t, c, p in rows])


def test_lookup_answers_seen_states_exactly_and_new_ones_by_the_nearest(trained):
    splits, _ = trained
    schema = load_scenario(ICE).schema()
    table = pd.concat([pd.read_parquet(splits / f"{n}.parquet") for n in ("train", "val", "test")])
    lookup = LookupPolicy(table, schema)
    np.testing.assert_array_equal(lookup.prob(table.iloc[::-1]), table["p_yes"].to_numpy()[::-1])
    assert lookup.fallbacks == 0
    cheap_hungry, cheap_hungry_discount, spender_hungry = (["cheap"], ["hungry"]), (["cheap"], ["hungry", "discount"]), \
        (["spender"], ["hungry"])
    small = _answers([(*cheap_hungry, 0.1), (*cheap_hungry_discount, 0.5), (*spender_hungry, 0.8),
                      (*cheap_hungry, 0.3)])  # a state listed twice answers the mean
    lookup = LookupPolicy(small, schema)
    asked = [{"traits": ["cheap"], "contexts": ["hungry"]},                         # seen: exact
             {"traits": ["cheap"], "contexts": ["discount"]},                       # 1 away from the second
             {"traits": ["spender"], "contexts": ["hungry", "discount"]},           # 1 from the third, 2 from the second
             {"traits": ["cheap"], "contexts": ["hungry", "truck_nearby"]},         # 1 from the first
             {"traits": ["likes_sweets"], "contexts": ["hungry"]}]                  # 2 from first and third: a tie
    np.testing.assert_allclose(lookup.prob(asked), [0.2, 0.5, 0.8, 0.2, 0.2])
    assert lookup.fallbacks == 4
    reordered = LookupPolicy(small.iloc[[2, 0, 1, 3]], schema)  # ties go to the state first in the table
    assert reordered.prob(asked[-1:])[0] == pytest.approx(0.8)
    with pytest.raises(UserError, match="unknown value 'rich'"):
        lookup.prob([{"traits": ["rich"], "contexts": ["hungry"]}])


def test_teacher_policy_asks_each_distinct_state_once(tiny_teacher, tmp_path):
    scenario = load_scenario(ICE)
    params = parse_params({"generate": {"cache": str(tmp_path / "cache.sqlite")}})
    cache = AnswerCache(params.generate.cache)
    states = [{"traits": ["cheap"], "contexts": ["hungry"]}, {"traits": ["spender"], "contexts": ["discount"]}]
    teacher = TeacherPolicy(tiny_teacher, scenario, params, cache)
    first = teacher.prob(states * 3)
    assert teacher.computed == 2 and teacher.asked == 2
    assert np.allclose(first[:2], first[2:4]) and np.all((first > 0) & (first < 1))
    again = TeacherPolicy(tiny_teacher, scenario, params, cache)  # a new process: the cache answers
    np.testing.assert_allclose(again.prob(states), first[:2])
    assert again.computed == 0 and again.asked == 2
    cache.close()


def test_teacher_policy_loads_its_model_once(tiny_teacher, tmp_path, monkeypatch):
    from decision_distill.lm import load as load_module

    loads = []
    original = load_module.load_causal_lm
    monkeypatch.setattr(load_module, "load_causal_lm", lambda *a, **k: loads.append(a) or original(*a, **k))
    scenario = load_scenario(ICE)
    params = parse_params({"generate": {"cache": str(tmp_path / "cache.sqlite")}})
    cache = AnswerCache(params.generate.cache)
    teacher = TeacherPolicy(tiny_teacher, scenario, params, cache)
    for contexts in (["hungry"], ["discount"], ["after_work"]):  # three ticks, each with a new state
        teacher.prob([{"traits": ["cheap"], "contexts": contexts}])
    assert teacher.computed == 3 and len(loads) == 1
    cache.close()
