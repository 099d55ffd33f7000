"""The games scenario: payoffs are lookup features, so the doubled (out-of-distribution)
games come from the scenario definition, and the scenario runs through generate with
the real loading code on a tiny in-process model."""

import copy

import pandas as pd
import pytest
from ruamel.yaml import YAML

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario, parse_scenario

GAMES = "scenarios/games.yaml"
PAYOFFS = ("both_cooperate", "sucker", "temptation", "both_defect")


def raw_games() -> dict:
    with open(GAMES) as fh:
        return YAML(typ="safe", pure=True).load(fh)


def test_doubled_games_are_the_standard_games_with_every_payoff_times_two():
    scenario = load_scenario(GAMES)
    states = scenario.all_states()  # the whole grid: 4 games x 2 stakes x 9 contexts x 3 histories x 5 partners
    assert len({(s["game"], s["stakes"], s["context"], s["history"], s["partner"]) for s in states}) == 1080
    assert len(scenario.sample_states(1080, seed=0)) == 1080  # sampling reaches every state too
    table = {}
    for s in states:
        payoffs = tuple(s[p] for p in PAYOFFS)
        assert table.setdefault((s["game"], s["stakes"]), payoffs) == payoffs  # one payoff table per game
    for game in ("prisoners_dilemma", "stag_hunt", "snowdrift", "prisoners_delight"):
        assert table[(game, "doubled")] == tuple(2 * v for v in table[(game, "standard")])
    # The orderings that make each game what it is (temptation, reward, punishment, sucker).
    T, R, P, S = (table[("prisoners_dilemma", "standard")][i] for i in (2, 0, 3, 1))
    assert T > R > P > S
    T, R, P, S = (table[("stag_hunt", "standard")][i] for i in (2, 0, 3, 1))
    assert R > T >= P > S
    T, R, P, S = (table[("snowdrift", "standard")][i] for i in (2, 0, 3, 1))
    assert T > R > S > P
    T, R, P, S = (table[("prisoners_delight", "standard")][i] for i in (2, 0, 3, 1))
    assert R > T and S > P


def test_payoffs_reach_the_prompt_and_the_students_as_numbers():
    scenario = load_scenario(GAMES)
    state = next(s for s in scenario.sample_states(50, 0) if s["game"] == "stag_hunt" and s["stakes"] == "doubled")
    text = scenario.describe(state)
    assert "both cooperate, 20 each" in text and "I get 4 and they get 10" in text
    features = {f["name"]: f for f in scenario.schema().to_json()["features"]}
    assert features["temptation"] == {"name": "temptation", "kind": "number", "low": 5.0, "high": 20.0}
    assert all(ex.state["both_cooperate"] > 0 for ex in scenario.examples)  # examples get derived payoffs too


@pytest.mark.parametrize("change, message", [
    (lambda r: r["features"]["sucker"]["factors"].update(mood={"x": 1}), r"factors\.mood: 'mood' is not a choice feature"),
    (lambda r: r["features"]["sucker"]["factors"]["game"].pop("stag_hunt"), r"missing \['stag_hunt'\]"),
    (lambda r: r["features"]["sucker"]["factors"]["stakes"].update(doubled="two"), r"stakes\.doubled: must be a finite number"),
    (lambda r: r["features"]["sucker"].update(factors={}), r"sucker\.factors: empty"),
])
def test_malformed_lookups_are_one_line_errors_naming_the_field(change, message):
    raw = copy.deepcopy(raw_games())
    change(raw)
    with pytest.raises(UserError, match=message) as err:
        parse_scenario(raw, GAMES)
    assert "\n" not in str(err.value)


def test_games_scenario_runs_through_generate_with_the_real_loading_code(tmp_path, build_tiny_teacher):
    from decision_distill.teacher.generate import generate
    from decision_distill.lm.source import download
    from decision_distill.core.params import parse_params

    weights = build_tiny_teacher(tmp_path / "weights", scenario_path=GAMES)
    download(str(weights), "main", tmp_path / "teacher")
    params = parse_params({"scenario": GAMES, "teacher": {"model": str(weights), "device": "cpu", "batch_size": 8},
                           "generate": {"states": 40, "cache": str(tmp_path / "cache.sqlite")}})
    scenario = load_scenario(GAMES)
    metrics = generate(params, scenario, tmp_path / "teacher", tmp_path / "d.parquet", tmp_path / "f.json",
                       tmp_path / "m.json")
    frame = pd.read_parquet(tmp_path / "d.parquet")
    assert metrics["states"] == 40 and metrics["parse_failures"] == 0
    assert ((frame["p_C"] + frame["p_D"] - 1).abs() < 1e-9).all()
    assert frame["p_C"].nunique() > 1  # the answers depend on the state
    doubled = frame[frame["stakes"] == "doubled"]
    assert (doubled["both_cooperate"] >= 10).all()


@pytest.mark.slow
def test_whole_pipeline_runs_on_the_games_scenario_with_held_out_contexts_and_doubled_games(games_pipeline, ran,
                                                                                           pipeline_stages,
                                                                                           assert_params_declared):
    import json

    root, log = games_pipeline  # held out: three contexts and the doubled games
    assert ran(log) == pipeline_stages
    assert_params_declared(root)  # games and simulate load the small LMs here: slm.quantize among their keys
    metrics = json.loads((root / "metrics/students.json").read_text())
    assert {"logreg", "mlp", "encoder", "decoder", "slm_base", "slm_tuned"} <= set(metrics)
    # held-out contexts and doubled games are scored apart, each as its own split
    assert all(list(m["holdouts"]) == ["oos_contexts", "ood_games"] for m in metrics.values())
    assert list(metrics["slm_tuned"]["gap_closed"]["holdouts"]) == ["oos_contexts", "ood_games"]
    contexts = pd.read_parquet(root / "data/splits/oos_contexts.parquet")
    doubled = pd.read_parquet(root / "data/splits/ood_games.parquet")
    train = pd.read_parquet(root / "data/splits/train.parquet")
    assert set(contexts["context"]) == {"sports", "room_sharing", "venture_capital"}
    assert len(doubled) and (doubled["stakes"] == "doubled").all()
    assert set(contexts["state_id"]) & set(doubled["state_id"])  # a doubled game in a held-out context: in both
    assert not set(train["context"]) & {"sports", "room_sharing", "venture_capital"}
    assert (train["stakes"] == "standard").all()
    # a student trained on in-sample cells is never evaluated on a state it trained on
    predictions = pd.read_parquet(root / "data/predictions.parquet")
    feature_names = ["game", "stakes", "context", "history", "partner"]
    trained = set(map(tuple, train[feature_names].to_numpy()))
    scored = set(map(tuple, predictions[feature_names].to_numpy()))
    assert scored and not trained & scored
    assert set(predictions["split"]) == {"test", "oos_contexts", "ood_games"}
    # the games stage: every split cell by cell, and the public-goods game zero-shot
    games = json.loads((root / "metrics/games.json").read_text())
    assert games["cells_by"] == ["game", "context"] and list(games["splits"]) == ["test", "oos_contexts", "ood_games"]
    held_out_contexts = games["splits"]["oos_contexts"]
    assert held_out_contexts["unseen_in_training"]["context"] == ["room_sharing", "sports", "venture_capital"]
    assert all(cell["mlp"]["fallback"] for cell in held_out_contexts["cells"])
    assert not any(cell["mlp"]["fallback"] for cell in games["splits"]["test"]["cells"])
    public_goods = games["zero_shot"]["public_goods"]
    assert public_goods["states"] == 135 and len(public_goods["cells"]) == 9
    assert set(public_goods["summary"]) == {"teacher", "slm_base", "slm_tuned"}
    assert "not applicable" in public_goods["small_students"]
    assert all(0 <= cell["slm_tuned"]["value"] <= 10 for cell in public_goods["cells"])
    plots = {p.name for p in (root / "plots").glob("games_*.png")}
    assert plots == {"games_test.png", "games_oos_contexts.png", "games_ood_games.png", "games_public_goods.png"}
