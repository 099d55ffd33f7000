"""The effects report: per-value effects on the log-odds with intervals, teacher vs students,
permutation importance, input ablations, and the effects stage's outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from decision_distill.core.atomic import write_parquet
from decision_distill.evaluation.effects import (INTERCEPT as INTERCEPT_ROW, design, differences, effects_table,
                                                 joint_test, log_odds, permutation_importance, regress)
from decision_distill.students.encoding import FeatureEncoder
from decision_distill.core.errors import UserError
from decision_distill.data.schema import Feature, Schema
from decision_distill.students.models import ARCHES, build_student, save_student

TRAITS = ("t0", "t1", "t2", "t3", "t4")
GAMES = ("pd", "stag", "snow")
# The synthetic teacher's true effects on the log-odds of the action ("t4" has none).
TRUTH = {"traits=t0": 1.5, "traits=t1": -1.0, "traits=t2": 0.4, "traits=t3": -0.2, "traits=t4": 0.0,
         "game=stag": 0.8, "game=snow": -0.6, "temperature": 1.2}
INTERCEPT = -0.3


def synthetic_teacher(n: int, seed: int = 0, noise: float = 0.3) -> tuple[Schema, pd.DataFrame]:
    """States and a teacher whose log-odds are INTERCEPT + sum of TRUTH + Gaussian noise: the
    noise stands in for everything a real teacher does that the features do not explain."""
    rng = np.random.default_rng(seed)
    schema = Schema(features=(Feature("traits", "set", TRAITS), Feature("game", "choice", GAMES),
                              Feature("temperature", "number", low=-5.0, high=35.0)),
                    options=("yes", "no"), action="act")
    rows = []
    for i in range(n):
        traits = sorted(rng.choice(TRAITS, size=rng.integers(1, 4), replace=False).tolist())
        game, temp = str(rng.choice(GAMES)), float(rng.uniform(-5, 35))
        z = INTERCEPT + sum(TRUTH[f"traits={t}"] for t in traits) + TRUTH.get(f"game={game}", 0.0)
        z += TRUTH["temperature"] * (temp - 15) / 20 + rng.normal(0, noise)
        p = 1 / (1 + np.exp(-z))
        rows.append({"state_id": i, "traits": traits, "game": game, "temperature": temp,
                     "p_yes": p, "p_no": 1 - p, "ok": True, "option_mass": 1.0, "logodds": z})
    return schema, pd.DataFrame(rows)


def true_probs(frame: pd.DataFrame, bias: dict[str, float] | None = None) -> np.ndarray:
    """A student that knows the noiseless policy, optionally off by `bias` on some values."""
    X = design(frame, Schema(features=(Feature("traits", "set", TRAITS), Feature("game", "choice", GAMES),
                                       Feature("temperature", "number", low=-5.0, high=35.0)),
                             options=("yes", "no")))
    effects = {**TRUTH, **{k: TRUTH[k] + v for k, v in (bias or {}).items()}}
    z = INTERCEPT + X[list(effects)].to_numpy() @ np.array(list(effects.values()))
    p = 1 / (1 + np.exp(-z))
    return np.stack([p, 1 - p], axis=1)


def recovered(table: pd.DataFrame, truth: dict[str, float]) -> dict[str, bool]:
    """For each value with a known true effect: does the teacher's interval cover it?"""
    teacher = table[table["source"] == "teacher"].set_index("value")
    return {v: bool(teacher.loc[v, "low"] <= t <= teacher.loc[v, "high"]) for v, t in truth.items()}


def test_teacher_effects_recovered_within_intervals():
    schema, frame = synthetic_teacher(1500)
    table = effects_table(frame, schema, {}, confidence=0.95)
    assert all(recovered(table, TRUTH).values()), table
    # The intercept is kept: the log-odds at the reference state (no trait, pd, 15 degrees).
    assert recovered(table, {INTERCEPT_ROW: INTERCEPT})[INTERCEPT_ROW]
    # The intervals are informative, not just wide: a truth shifted by 0.5 falls outside each.
    assert not any(recovered(table, {k: v + 0.5 for k, v in TRUTH.items()}).values())
    # More states, narrower intervals (HC3 standard errors shrink like 1/sqrt(n)).
    wide = effects_table(synthetic_teacher(300)[1], schema, {}, 0.95)
    width = lambda t: (t["high"] - t["low"]).mean()  # noqa: E731
    assert width(wide) > 1.8 * width(table)


def test_student_bias_is_found_only_where_it_is():
    schema, frame = synthetic_teacher(1500, seed=1)
    # 99.9%: eight intervals at 95% would miss 0 somewhere by chance a third of the time.
    table = effects_table(frame, schema, {"exact": true_probs(frame), "biased": true_probs(frame, {"traits=t1": 0.7})},
                          confidence=0.999)
    diff = {s: table[table["source"] == f"diff:{s}"].set_index("value") for s in ("exact", "biased")}
    covers0 = lambda d: (d["low"] <= 0) & (d["high"] >= 0)  # noqa: E731
    assert covers0(diff["exact"]).all()
    assert not covers0(diff["biased"]).loc["traits=t1"]
    assert diff["biased"].loc["traits=t1", "low"] <= 0.7 <= diff["biased"].loc["traits=t1", "high"]
    assert covers0(diff["biased"]).drop("traits=t1").all()
    whole = differences(frame, schema, {"biased": true_probs(frame, {"traits=t1": 0.7})}, 0.999)
    assert whole["biased"]["joint_test"]["rejects"]


def shifted(frame: pd.DataFrame, shift: float, noise: float, seed: int) -> np.ndarray:
    """A student whose log-odds are the teacher's plus `shift` plus independent N(0, noise)."""
    z = log_odds(frame["p_yes"].to_numpy()) + shift + np.random.default_rng(seed).normal(0, noise, len(frame))
    p = 1 / (1 + np.exp(-z))
    return np.stack([p, 1 - p], axis=1)


def test_a_student_shifted_as_a_whole_is_biased_though_no_value_differs():
    # The case: log-odds above the teacher's everywhere (it oversells). Every value's
    # effect matches; only the overall bias and the joint test can see it.
    schema, frame = synthetic_teacher(1500, seed=6)
    probs = {"oversells": shifted(frame, 0.3, 0.2, seed=7)}
    whole = differences(frame, schema, probs, 0.999)["oversells"]
    bias = whole["bias"]
    assert bias["log_odds"] == pytest.approx(0.3, abs=0.02)
    assert 0 < bias["low"] <= 0.3 <= bias["high"]
    assert whole["joint_test"]["rejects"] and whole["joint_test"]["p_value"] < 1e-6
    assert whole["joint_test"]["df_num"] == len(TRUTH) + 1  # every value and the intercept
    assert whole["verdict"].startswith("overall bias toward the action; differs from the teacher")
    diff = effects_table(frame, schema, probs, 0.999).query("source == 'diff:oversells'").set_index("value")
    values = diff.drop(INTERCEPT_ROW)
    assert ((values["low"] <= 0) & (values["high"] >= 0)).all()  # per value, nothing to see
    negative = differences(frame, schema, {"s": shifted(frame, -0.3, 0.2, seed=7)}, 0.999)["s"]
    assert negative["bias"]["high"] < 0 and negative["verdict"].startswith("overall bias against the action")


def test_a_student_equal_to_the_teacher_up_to_noise_is_not_called_biased():
    schema, frame = synthetic_teacher(1500, seed=8)
    whole = differences(frame, schema, {"noisy": shifted(frame, 0.0, 0.3, seed=9),
                                        "teacher": frame[["p_yes", "p_no"]].to_numpy()}, 0.95)
    noisy = whole["noisy"]
    assert noisy["bias"]["low"] <= 0 <= noisy["bias"]["high"]
    assert not noisy["joint_test"]["rejects"] and noisy["joint_test"]["p_value"] > 0.05
    assert noisy["verdict"] == "no detectable overall bias; no detectable difference from the teacher (joint test)"
    # The teacher as its own student: no residuals, a defined statistic of 0, nothing rejected.
    assert whole["teacher"]["joint_test"]["statistic"] == 0.0 and not whole["teacher"]["joint_test"]["rejects"]


def test_joint_test_rejects_pure_noise_about_as_often_as_its_level():
    # Size check: on 300 noise-only differences the Wald test rejects near 5%, neither never
    # (a test that cannot fire) nor far more (a test that fires on noise). The noise spreads
    # with temperature, as log-odds residuals spread near 0 or 1: the ordinary covariance
    # rejected 12% of these, HC3 6%.
    schema, frame = synthetic_teacher(600, seed=10)
    X = design(frame, schema)
    spread = 0.02 + X["temperature"].to_numpy() ** 4
    rng = np.random.default_rng(11)
    rate = np.mean([joint_test(X, rng.normal(0, 1, len(X)) * spread, 0.95)["rejects"] for _ in range(300)])
    assert 0.02 <= rate <= 0.09, rate


def test_constant_column_is_not_estimated_and_too_few_states_is_an_error():
    schema, frame = synthetic_teacher(400, seed=2)
    frame = frame[frame["game"] != "snow"]  # game=snow never drawn: no estimate, never a made-up 0
    table = effects_table(frame, schema, {}, 0.95).set_index("value")
    assert np.isnan(table.loc["game=snow", "effect"])
    assert np.isfinite(table.loc["game=stag", "effect"])
    with pytest.raises(UserError, match="split.test"):
        regress(design(frame.head(5), schema), np.zeros(5), 0.95)


def test_permutation_importance_ranks_groups_by_their_effect():
    schema, frame = synthetic_teacher(800, seed=3)
    # A policy that ignores temperature: shuffling it costs nothing; traits carry the most.
    no_temp = {k: v for k, v in TRUTH.items() if k != "temperature"}

    def student(f):
        X = design(f, schema)
        p = 1 / (1 + np.exp(-(INTERCEPT + X[list(no_temp)].to_numpy() @ np.array(list(no_temp.values())))))
        return np.stack([p, 1 - p], axis=1)

    imp = permutation_importance(student, frame, schema, repeats=5, seed=0, confidence=0.95).set_index("group")
    assert imp.loc["temperature", "importance"] == pytest.approx(0.0, abs=1e-12)
    assert imp.loc["traits", "importance"] > imp.loc["game", "importance"] > 0.01
    assert (imp["low"] <= imp["importance"]).all() and (imp["importance"] <= imp["high"]).all()


def test_effects_stage_writes_report_and_ablation(tmp_path, call_stage):
    schema, frame = synthetic_teacher(500, seed=4)
    splits = tmp_path / "splits"
    splits.mkdir()
    schema.save(splits / "features.json")
    for name, part in (("train", frame.iloc[:300]), ("val", frame.iloc[300:350]), ("test", frame.iloc[350:])):
        write_parquet(part.reset_index(drop=True), splits / f"{name}.parquet")
    encoder = FeatureEncoder(schema)
    for arch in ARCHES:  # untrained students are enough to check the report's shape
        hp = {"hidden": 8, "layers": 1, "dropout": 0.0, "d_model": 8, "heads": 2}
        save_student(tmp_path / "students" / arch, arch, hp, build_student(arch, hp, encoder), encoder)
    params = {"train": {"epochs": 3, "patience": 3}, "effects": {"repeats": 3, "ablate": ["logreg"], "bootstrap": 100}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = call_stage("stages/effects.py", "--splits", str(splits), "--students", str(tmp_path / "students"),
                        "--out", str(tmp_path / "effects"), "--metrics", str(tmp_path / "effects.json"),
                        "--params", str(tmp_path / "params.yaml"))
    assert result.code == 0, result.stderr
    table = pd.read_csv(tmp_path / "effects" / "effects.csv")
    assert set(table["source"]) == {"teacher", *ARCHES, *(f"diff:{a}" for a in ARCHES)}
    assert (tmp_path / "effects" / "effects.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "effects.json").read_text())
    assert metrics["states"] == 150
    for arch in ARCHES:  # the whole difference comes first, before any per-value line
        assert list(metrics[arch])[:3] == ["bias", "joint_test", "verdict"]
        assert metrics[arch]["joint_test"]["df_num"] == len(design(frame, schema).columns) + 1
    report = (tmp_path / "effects" / "report.md").read_text()
    for arch in ARCHES:
        part = report.split(f"## {arch}\n")[1].splitlines()
        assert part[1].startswith("- overall bias ") and part[2].startswith("- joint test")
        assert part[4] == f"- verdict: {metrics[arch]['verdict']}"
    assert "no biased" not in report and "no biased" not in result.stdout
    assert set(metrics["logreg"]["ablation"]) == {"traits", "game", "temperature"}
    assert "ablation" not in metrics["mlp"]
    rise = metrics["logreg"]["ablation"]["traits"]
    assert rise["low"] <= rise["kl_rise"] <= rise["high"]
