"""Evaluate and plot: the predictions frame, the metrics JSON, the figures, the stage CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from decision_distill.core.atomic import write_parquet
from decision_distill.core.errors import UserError
from decision_distill.evaluation.evaluate import evaluate_students
from decision_distill.evaluation.predictions import metrics_from_predictions, prediction_rows
from decision_distill.stats.metrics import all_metrics
from decision_distill.evaluation.plots import make_plots
from decision_distill.data.schema import Feature, Schema

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = ["mse", "mae", "pearson", "spearman", "kl", "ce", "brier", "ece", "agreement"]


def blurred(P: np.ndarray, amount: float) -> np.ndarray:
    """A fake student: the teacher's distribution mixed with uniform."""
    return (1 - amount) * P + amount / P.shape[1]


@pytest.fixture(scope="session")
def fake_predictions(synthetic_policy_frame):
    def fake_predictions(options=("yes", "no"), students=("logreg", "mlp"), n=120) -> tuple[Schema, pd.DataFrame]:
        schema, frame = synthetic_policy_frame(n, options)
        P = frame[schema.prob_columns].to_numpy()
        parts = [
            prediction_rows(frame.iloc[idx].reset_index(drop=True), schema, split, student, blurred(P[idx], 0.1 * (i + 1)))
            for i, student in enumerate(students)
            for split, idx in (("test", slice(0, n - 20)), ("oos_contexts", slice(n - 20, n)))
        ]
        return schema, pd.concat(parts, ignore_index=True)
    return fake_predictions


@pytest.mark.parametrize("options", [("yes", "no"), ("a", "b", "c")])
def test_predictions_layout_and_metrics_shape(options, fake_predictions):
    schema, predictions = fake_predictions(options)
    assert list(predictions.columns) == [
        "state_id", "split", "student", "traits", "contexts", "game", "temperature",
        *[f"teacher_{o}" for o in options], *[f"student_{o}" for o in options],
    ]
    assert len(predictions) == 2 * 120
    metrics = metrics_from_predictions(predictions, options, ece_bins=10)
    assert list(metrics) == ["logreg", "mlp"]
    assert list(metrics["mlp"]) == [*METRIC_KEYS, "holdouts"]
    assert list(metrics["mlp"]["holdouts"]) == ["oos_contexts"]
    assert list(metrics["mlp"]["holdouts"]["oos_contexts"]) == METRIC_KEYS
    assert metrics["logreg"]["kl"] < metrics["mlp"]["kl"]  # less blurred student is closer
    test = predictions[(predictions.student == "mlp") & (predictions.split == "test")]
    expected = all_metrics(test[[f"teacher_{o}" for o in options]].to_numpy(),
                           test[[f"student_{o}" for o in options]].to_numpy(), 10)
    assert metrics["mlp"]["mse"] == pytest.approx(expected["mse"])
    json.dumps(metrics, allow_nan=False)


@pytest.fixture
def fake_students(monkeypatch):
    """Stand-in students: each 'model' is its architecture's blur amount."""
    from decision_distill.students import models

    amounts = {"logreg": 0.3, "mlp": 0.1}
    monkeypatch.setattr(models, "load_student", lambda directory: (amounts[Path(directory).name], None))
    monkeypatch.setattr(models, "predict",
                        lambda model, encoder, frame: blurred(frame[["p_yes", "p_no"]].to_numpy(), model))
    return amounts


def test_evaluate_students_drops_failed_rows_and_scores_each_holdout(tmp_path, fake_students, write_synthetic_splits):
    splits = tmp_path / "splits"
    write_synthetic_splits(splits, n=200)
    test = pd.read_parquet(splits / "test.parquet")
    test.loc[test.index[:5], "ok"] = False
    write_parquet(test, splits / "test.parquet")
    for arch in fake_students:
        (tmp_path / "students" / arch).mkdir(parents=True)

    metrics, predictions = evaluate_students(splits, tmp_path / "students", list(fake_students), 10)
    assert list(metrics) == ["logreg", "mlp"] and "holdouts" not in metrics["mlp"]
    assert (predictions.groupby("student").size() == len(test) - 5).all()

    # two overlapping holdouts (rows 20-29 are in both) and an empty one, in params order
    write_parquet(test.iloc[20:40], splits / "ood_games.parquet")
    write_parquet(test.iloc[:30], splits / "oos_contexts.parquet")
    write_parquet(test.iloc[0:0], splits / "empty.parquet")
    holdouts = ["ood_games", "empty", "oos_contexts"]
    metrics, predictions = evaluate_students(splits, tmp_path / "students", list(fake_students), 10, holdouts=holdouts)
    assert list(metrics["mlp"]) == [*METRIC_KEYS, "holdouts"]
    assert list(metrics["mlp"]["holdouts"]) == ["ood_games", "oos_contexts"]  # the empty holdout is skipped
    assert list(metrics["mlp"]["holdouts"]["ood_games"]) == METRIC_KEYS
    mlp = predictions[predictions.student == "mlp"]
    assert mlp.groupby("split", sort=False).size().to_dict() == {"test": len(test) - 5, "ood_games": 20,
                                                                 "oos_contexts": 30 - 5}  # 5 failed readouts
    in_both = set(test.iloc[20:30]["state_id"])
    assert all(set(mlp[mlp.split == name]["state_id"]) >= in_both for name in ("ood_games", "oos_contexts"))
    games = test.iloc[20:40][["p_yes", "p_no"]].to_numpy()  # the mlp stand-in blurs by 0.1
    assert metrics["mlp"]["holdouts"]["ood_games"]["kl"] == pytest.approx(all_metrics(games, blurred(games, 0.1), 10)["kl"])

    with pytest.raises(UserError, match=r"doubled\.parquet: not found; run the split stage"):
        evaluate_students(splits, tmp_path / "students", list(fake_students), 10, holdouts=["doubled"])


@pytest.mark.parametrize("options", [("yes", "no"), ("a", "b", "c")])
def test_make_plots_writes_figures_and_data(tmp_path, options, fake_predictions):
    schema, predictions = fake_predictions(options)
    metrics = metrics_from_predictions(predictions, options, ece_bins=10)
    curves = tmp_path / "dvclive" / "mlp" / "plots" / "metrics"
    for phase in ("train", "val"):
        (curves / phase).mkdir(parents=True)
        pd.DataFrame({"step": range(5), "loss": np.linspace(1, 0.2, 5)}).to_csv(curves / phase / "loss.tsv", sep="\t", index=False)

    out = tmp_path / "plots"
    make_plots(predictions, metrics, schema, tmp_path / "dvclive", out)
    for name in ("loss_curves", "scatter", "calibration", "error_heatmap", "comparison"):
        assert (out / f"{name}.png").stat().st_size > 0
    columns = {
        "scatter": ["student", "teacher", "prediction"],
        "calibration": ["student", "bin_mean_student", "bin_mean_teacher", "count"],
        "error_by_size": ["student", "n_traits", "n_contexts", "mean_abs_error", "count"],
        "comparison": ["student", "metric", "value"],
    }
    for name, expected in columns.items():
        assert list(pd.read_csv(out / "data" / f"{name}.csv").columns) == expected
    assert set(pd.read_csv(out / "data" / "error_by_size.csv")["student"]) == {"logreg"}  # lowest KL
    assert len(pd.read_csv(out / "data" / "scatter.csv")) == 2 * 100  # test rows only


def test_plot_stage_without_two_set_features_or_curves(tmp_path, load_stage, fake_predictions):
    schema, predictions = fake_predictions()
    schema = Schema(features=(schema.features[0], Feature("game", "choice", ("pd",))), options=schema.options)
    (tmp_path / "splits").mkdir()
    schema.save(tmp_path / "splits" / "features.json")
    write_parquet(predictions, tmp_path / "predictions.parquet")
    (tmp_path / "students.json").write_text(json.dumps(metrics_from_predictions(predictions, schema.options, 10)))
    out = tmp_path / "plots"
    load_stage("plot").main([
        "--predictions", str(tmp_path / "predictions.parquet"), "--metrics", str(tmp_path / "students.json"),
        "--splits", str(tmp_path / "splits"), "--live", str(tmp_path / "no_dvclive"), "--out", str(out),
    ])
    # the figures with nothing to draw are notes saying why (dvc.yaml declares them in every mode)
    assert sorted(p.name for p in out.glob("*.png")) == [
        "calibration.png", "comparison.png", "error_heatmap.png", "loss_curves.png", "scatter.png",
        "stability_icc.png", "stability_spread.png"]
    assert not (out / "data" / "error_by_size.csv").exists()


@pytest.fixture(scope="session")
def evaluate_stage_error(write_synthetic_splits):
    def evaluate_stage_error(tmp_path: Path, params_yaml: str) -> str:
        """Run the evaluate stage as a user would on synthetic splits and no students; return its
        one-line error, after checking the exit code and that no metrics were written."""
        write_synthetic_splits(tmp_path / "splits", n=50)
        (tmp_path / "params.yaml").write_text(params_yaml)
        result = subprocess.run(
            [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--splits", str(tmp_path / "splits"),
             "--students", str(tmp_path / "students"), "--metrics", str(tmp_path / "m.json"),
             "--predictions", str(tmp_path / "p.parquet"), "--params", str(tmp_path / "params.yaml")],
            capture_output=True, text=True, cwd=tmp_path,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and not (tmp_path / "m.json").exists()
        return lines[0]
    return evaluate_stage_error


def test_evaluate_stage_names_a_missing_student(tmp_path, evaluate_stage_error):
    error = evaluate_stage_error(tmp_path, "evaluate:\n  ece_bins: 10\n")
    assert "students/logreg" in error and "train@logreg" in error


def test_evaluate_stage_reads_holdout_names_from_params(tmp_path, evaluate_stage_error):
    error = evaluate_stage_error(tmp_path, "split:\n  holdouts: {oos_contexts: [[c1]]}\n")
    assert "splits/oos_contexts.parquet: not found" in error
