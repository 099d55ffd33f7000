"""The predictions frame (data/predictions.parquet), one row per (state, split, student):
state_id, split, student, the feature columns, teacher_<option>..., student_<option>...;
and the metrics read off it (decision_distill.stats.metrics), per student and split."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..data.schema import Schema
from ..stats.metrics import all_metrics


def teacher_columns(options: Iterable[str]) -> list[str]:
    return [f"teacher_{o}" for o in options]


def student_columns(options: Iterable[str]) -> list[str]:
    return [f"student_{o}" for o in options]


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
    """Per student: all_metrics on its test rows, plus a "holdouts" block with all_metrics
    on each other split it has rows for, in the order the rows come."""
    options = list(options)
    metrics = {}
    for student, rows in predictions.groupby("student", sort=False):
        by_split = {split: part for split, part in rows.groupby("split", sort=False)}
        scores = _split_metrics(by_split.pop("test"), options, ece_bins)
        if by_split:
            scores["holdouts"] = {split: _split_metrics(part, options, ece_bins) for split, part in by_split.items()}
        metrics[student] = scores
    return metrics


def _split_metrics(rows: pd.DataFrame, options: list[str], ece_bins: int) -> dict:
    P = rows[teacher_columns(options)].to_numpy(float)
    Q = rows[student_columns(options)].to_numpy(float)
    return all_metrics(P, Q, ece_bins)
