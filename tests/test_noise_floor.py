"""The student-to-noise-floor ratio's bootstrap interval: coverage, and where evaluate puts it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decision_distill.evaluation.evaluate import FloorIntervals, add_noise_floor_ratios
from decision_distill.evaluation.predictions import metrics_from_predictions, prediction_rows
from decision_distill.stats.metrics import kl
from decision_distill.evaluation.noise_floor import ratio_interval


def test_the_ratio_interval_covers_the_true_ratio_about_as_often_as_it_claims():
    """Per-state student KLs and floor KLs drawn from skewed (gamma) distributions with known
    means, as per-state KLs are: the 95 % interval of mean(student) / mean(floor) holds the true
    ratio in about 95 % of 400 draws (binomial sd 1.1 points), neither much less nor always.
    Measured: 94.3 % over 1000 draws; resampling the students' states alone held it in 54 % at 90 %."""
    rng = np.random.default_rng(0)
    true_ratio = (2 * 0.01) / (1.5 * 0.02)
    covered, widths = 0, []
    for draw in range(400):
        student = rng.gamma(2.0, 0.01, size=120)  # 120 test states, mean 0.02
        floor = rng.gamma(1.5, 0.02, size=40)  # 40 floor states, mean 0.03
        low, high = ratio_interval(student, floor, 500, 0.95, [1, draw])
        covered += low <= true_ratio <= high
        widths.append(high - low)
    assert 0.91 <= covered / 400 <= 0.985, f"covered the true ratio in {covered} of 400 draws"
    assert np.median(widths) < true_ratio  # informative, not just wide


def test_no_interval_without_two_states_on_each_side_or_with_a_zero_floor():
    assert ratio_interval(np.ones(5), np.array([0.1]), 200, 0.95, 0) is None
    assert ratio_interval(np.ones(5), np.zeros(4), 200, 0.95, 0) is None


@pytest.fixture(scope="session")
def blurred_predictions(synthetic_policy_frame):
    def blurred_predictions(n: int = 120) -> pd.DataFrame:
        """Two students (the teacher mixed with uniform, 10 % and 40 %) on a test split of n-30
        states and a 30-state holdout."""
        schema, frame = synthetic_policy_frame(n)
        P = frame[schema.prob_columns].to_numpy()
        parts = [prediction_rows(frame.iloc[idx].reset_index(drop=True), schema, split, name, (1 - a) * P[idx] + a / 2)
                 for name, a in (("mlp", 0.1), ("logreg", 0.4))
                 for split, idx in (("test", slice(0, n - 30)), ("oos_contexts", slice(n - 30, n)))]
        return pd.concat(parts, ignore_index=True)
    return blurred_predictions


def test_evaluate_puts_an_interval_beside_every_noise_floor_ratio(blurred_predictions):
    predictions = blurred_predictions()
    metrics = metrics_from_predictions(predictions, ["yes", "no"], ece_bins=10)
    rng = np.random.default_rng(3)
    floor = pd.DataFrame({"state_id": np.tile(np.arange(20), 2), "run": np.repeat(["paraphrase 1", "examples"], 20),
                          "kl": rng.gamma(2.0, 0.01, 40), "mse": rng.gamma(2.0, 0.002, 40)})
    stability = {"noise_floor": {"kl": floor["kl"].mean(), "mse": floor["mse"].mean()}}
    out = add_noise_floor_ratios(metrics, stability, FloorIntervals(predictions, ["yes", "no"], floor, 500))
    mlp = out["mlp"]
    assert list(mlp)[:3] == ["mse", "mse_vs_noise_floor", "mse_vs_noise_floor_ci"]
    test = predictions[(predictions.student == "mlp") & (predictions.split == "test")]
    point = kl(test[["teacher_yes", "teacher_no"]].to_numpy(), test[["student_yes", "student_no"]].to_numpy())
    assert mlp["kl_vs_noise_floor"] == pytest.approx(point / floor["kl"].mean())
    for block in (mlp, mlp["holdouts"]["oos_contexts"], out["logreg"]):
        for m in ("kl", "mse"):
            low, high = block[f"{m}_vs_noise_floor_ci"]
            assert low < block[f"{m}_vs_noise_floor"] < high
    # the more blurred student is farther from the teacher, and its interval lies above the other's
    assert out["logreg"]["kl_vs_noise_floor_ci"][0] > mlp["kl_vs_noise_floor_ci"][1]
    skipped = add_noise_floor_ratios(metrics, {"skipped": "no teacher", "noise_floor": None},
                                     FloorIntervals(predictions, ["yes", "no"], floor.iloc[:0]))
    assert skipped["mlp"]["kl_vs_noise_floor"] is None and skipped["mlp"]["kl_vs_noise_floor_ci"] is None


def test_the_evaluate_stage_writes_the_intervals_from_the_per_state_floor(tmp_path, monkeypatch, load_stage, write_synthetic_splits):
    """stages/evaluate.py with --stability and --noise-floor, students stood in by blurred teachers."""
    import json

    from decision_distill.students import models

    monkeypatch.setattr(models, "load_student", lambda directory: (0.2, None))
    monkeypatch.setattr(models, "predict",
                        lambda model, encoder, frame: (1 - model) * frame[["p_yes", "p_no"]].to_numpy() + model / 2)
    write_synthetic_splits(tmp_path / "splits", n=200)
    for arch in ("logreg", "mlp", "encoder", "decoder"):
        (tmp_path / "students" / arch).mkdir(parents=True)
    floor = pd.DataFrame({"state_id": range(20), "run": "paraphrase 1",
                          "kl": np.random.default_rng(0).gamma(2.0, 0.01, 20), "mse": 0.004})
    floor.to_parquet(tmp_path / "floor.parquet")
    (tmp_path / "stability.json").write_text(json.dumps({"noise_floor": {"kl": floor.kl.mean(), "mse": 0.004}}))
    (tmp_path / "params.yaml").write_text("slm: {enabled: false}\nevaluate: {bootstrap: 200}\n")
    load_stage("evaluate").main([
        "--splits", str(tmp_path / "splits"), "--students", str(tmp_path / "students"),
        "--metrics", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.parquet"),
        "--stability", str(tmp_path / "stability.json"), "--noise-floor", str(tmp_path / "floor.parquet"),
        "--params", str(tmp_path / "params.yaml")])
    mlp = json.loads((tmp_path / "m.json").read_text())["mlp"]
    low, high = mlp["kl_vs_noise_floor_ci"]
    assert low < mlp["kl_vs_noise_floor"] < high
    assert mlp["mse_vs_noise_floor_ci"][0] < mlp["mse_vs_noise_floor"]  # a constant floor: the students' spread only
