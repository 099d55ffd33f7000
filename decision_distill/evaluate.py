"""Score every trained student against the teacher on the held-out splits.

The result is a metrics dict, test-split metrics per student plus an "ood" block
when the split stage held out an out-of-distribution set:

    {"mlp": {"mse": ..., ..., "agreement": ..., "ood": {"mse": ..., ...}}, ...}

and a long-format predictions frame, one row per (state, split, student):
state_id, split, student, the feature columns, teacher_<option>..., student_<option>...
Metric definitions live in `decision_distill.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import UserError
from .metrics import all_metrics
from .schema import Schema

HELD_OUT_SPLITS = ("test", "ood")


def teacher_columns(options: Iterable[str]) -> list[str]:
    return [f"teacher_{o}" for o in options]


def student_columns(options: Iterable[str]) -> list[str]:
    return [f"student_{o}" for o in options]


def read_held_out(splits_dir: Path, schema: Schema) -> dict[str, pd.DataFrame]:
    """The test split and, if present and non-empty, the ood split, without failed readouts."""
    splits = {}
    for name in HELD_OUT_SPLITS:
        path = splits_dir / f"{name}.parquet"
        if not path.exists():
            if name == "test":
                raise UserError(f"{path}: not found; run the split stage first")
            continue
        frame = pd.read_parquet(path)
        missing = [c for c in ["state_id", *schema.feature_names, *schema.prob_columns] if c not in frame]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} required by features.json")
        if "ok" in frame:
            frame = frame[frame["ok"].fillna(False).astype(bool)]
        if len(frame):
            splits[name] = frame.reset_index(drop=True)
    if "test" not in splits:
        raise UserError(f"{splits_dir / 'test.parquet'}: no states with a readable teacher answer; rerun the split stage")
    return splits


def student_dirs(students_dir: Path, archs: Iterable[str]) -> dict[str, Path]:
    """Each architecture's saved student, checked to exist before any is loaded."""
    dirs = {arch: students_dir / arch for arch in archs}
    for arch, directory in dirs.items():
        if not directory.is_dir():
            raise UserError(f"{directory}: no trained '{arch}' student; run the train@{arch} stage first")
    return dirs


def prediction_rows(frame: pd.DataFrame, schema: Schema, split: str, student: str, Q: np.ndarray) -> pd.DataFrame:
    """Long-format rows for one student on one split: ids, features, teacher and student probabilities."""
    Q = np.asarray(Q, dtype=float)
    if Q.shape != (len(frame), len(schema.options)):
        raise ValueError(f"student '{student}' predicted shape {Q.shape}, expected {(len(frame), len(schema.options))}")
    ids = pd.DataFrame({"state_id": frame["state_id"].to_numpy(), "split": split, "student": student})
    features = frame[schema.feature_names].reset_index(drop=True)
    teacher = pd.DataFrame(frame[schema.prob_columns].to_numpy(float), columns=teacher_columns(schema.options))
    predicted = pd.DataFrame(Q, columns=student_columns(schema.options))
    return pd.concat([ids, features, teacher, predicted], axis=1)


def metrics_from_predictions(predictions: pd.DataFrame, options: Iterable[str], ece_bins: int) -> dict:
    """Per student: all_metrics on its test rows, plus "ood" when it has ood rows."""
    options = list(options)
    metrics = {}
    for student, rows in predictions.groupby("student", sort=False):
        by_split = {split: part for split, part in rows.groupby("split", sort=False)}
        scores = _split_metrics(by_split["test"], options, ece_bins)
        if "ood" in by_split:
            scores["ood"] = _split_metrics(by_split["ood"], options, ece_bins)
        metrics[student] = scores
    return metrics


def _split_metrics(rows: pd.DataFrame, options: list[str], ece_bins: int) -> dict:
    P = rows[teacher_columns(options)].to_numpy(float)
    Q = rows[student_columns(options)].to_numpy(float)
    return all_metrics(P, Q, ece_bins)


def evaluate_students(
    splits_dir: str | Path, students_dir: str | Path, archs: Iterable[str], ece_bins: int
) -> tuple[dict, pd.DataFrame]:
    """Load each student from `students_dir/<arch>`, predict the held-out splits in
    `splits_dir`, and return (metrics, predictions) as described in the module docstring."""
    splits_dir, students_dir = Path(splits_dir), Path(students_dir)
    schema = Schema.load(splits_dir / "features.json")
    splits = read_held_out(splits_dir, schema)
    dirs = student_dirs(students_dir, archs)
    from .students import load_student, predict  # torch is imported only once the inputs are known good

    parts = []
    for arch, directory in dirs.items():
        model, encoder = load_student(directory)
        for split, frame in splits.items():
            parts.append(prediction_rows(frame, schema, split, arch, predict(model, encoder, frame)))
    predictions = pd.concat(parts, ignore_index=True)
    return metrics_from_predictions(predictions, schema.options, ece_bins), predictions
