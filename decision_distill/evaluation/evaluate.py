"""Score every trained student against the teacher on the held-out splits.

The result is a metrics dict, test-split metrics per student plus a "holdouts" block
with one entry per non-empty held-out split of split.holdouts, in params order:

    {"mlp": {"mse": ..., ..., "agreement": ..., "holdouts": {"oos_contexts": {"mse": ..., ...}}}, ...}

and a long-format predictions frame, one row per (state, split, student), split being
"test" or a holdout name (a state in two holdouts has rows under both):
state_id, split, student, the feature columns, teacher_<option>..., student_<option>...
(decision_distill.evaluation.predictions). Metric definitions live in `decision_distill.stats.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..core.errors import UserError
from ..core.params import Params
from ..data.scenario_file import load_scenario
from ..data.schema import Schema
from ..data.split import read_held_out
from ..slm.answers import SLM_BASE, SLM_TUNED
from ..data.schema import teacher_probs
from ..stats.crossed import crossed_t_interval
from ..stats.metrics import gap_closed, kl
from .noise_floor import FLOOR_METRICS, floor_by_state, ratio_interval
from .predictions import metrics_from_predictions, prediction_rows, student_columns, teacher_columns


@dataclass(frozen=True)
class SLMStudents:
    """The small-LM rows: each model directory answers the short prompt, through the answer cache."""
    params: Params  # reads scenario, slm (dtype, device, trust_remote_code, batch_size) and generate.cache
    models: dict[str, Path]  # row name (SLM_BASE, SLM_TUNED) -> model directory


def student_dirs(students_dir: Path, archs: Iterable[str]) -> dict[str, Path]:
    """Each architecture's saved student, checked to exist before any is loaded."""
    dirs = {arch: students_dir / arch for arch in archs}
    for arch, directory in dirs.items():
        if not directory.is_dir():
            raise UserError(f"{directory}: no trained '{arch}' student; run the train@{arch} stage first")
    return dirs


NOISE_FLOOR_METRICS = ("kl", "mse")


@dataclass(frozen=True)
class FloorIntervals:
    """What the bootstrap interval of `<m>_vs_noise_floor` needs: the predictions frame (for
    each student's per-state kl and mse), the floor per state and wording run
    (data/noise_floor.parquet), and the bootstrap settings (evaluate.bootstrap, .confidence, .seed)."""
    predictions: pd.DataFrame
    options: list[str]
    floor: pd.DataFrame
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def add_noise_floor_ratios(metrics: dict, stability: dict, intervals: FloorIntervals | None = None) -> dict:
    """`metrics` with `<m>_vs_noise_floor` = student <m> / the teacher's noise floor <m>
    beside each kl and mse (holdout blocks too). `stability` is metrics/stability.json; the
    ratio is None where no noise floor was measured (skipped, or exactly 0). Near 1: the
    student is as close to the teacher as the teacher is to itself under another wording.
    With `intervals`, each ratio also gets `<m>_vs_noise_floor_ci`, a percentile bootstrap
    interval resampling the split's states and the floor's states (noise_floor.ratio_interval)."""
    floor = stability.get("noise_floor") or {}
    per_state = floor_by_state(intervals.floor) if intervals is not None and floor else None
    return {student: _with_ratios(scores, floor, per_state, intervals, (s, student, "test"))
            for s, (student, scores) in enumerate(metrics.items())}


def _with_ratios(scores: dict, floor: dict, per_state, intervals: FloorIntervals | None, where: tuple) -> dict:
    out = {}
    for key, value in scores.items():
        out[key] = {name: _with_ratios(block, floor, per_state, intervals, (*where[:2], name))
                    for name, block in value.items()} if key == "holdouts" else value
        if key in NOISE_FLOOR_METRICS:
            out[f"{key}_vs_noise_floor"] = value / floor[key] if floor.get(key) else None
            if intervals is not None:
                out[f"{key}_vs_noise_floor_ci"] = _ratio_ci(key, per_state, intervals, where)
    return out


def _ratio_ci(metric: str, per_state, intervals: FloorIntervals, where: tuple) -> list[float] | None:
    index, student, split = where
    if per_state is None:
        return None
    p = intervals.predictions
    rows = p[(p["student"] == student) & (p["split"] == split)]
    P, Q = (rows[cols(intervals.options)].to_numpy(float) for cols in (teacher_columns, student_columns))
    values = FLOOR_METRICS[metric](P, Q)
    # one generator per (student, split, metric): an interval does not depend on what else was computed
    stream = [intervals.seed, index, list(intervals.predictions["split"].unique()).index(split),
              NOISE_FLOOR_METRICS.index(metric)]
    return ratio_interval(values, per_state[metric].to_numpy(), intervals.resamples, intervals.confidence, stream)


def evaluate_students(
    splits_dir: str | Path, students_dir: str | Path, archs: Iterable[str], ece_bins: int,
    slm: SLMStudents | None = None, gap_min: float = 0.05, holdouts: Iterable[str] = (), confidence: float = 0.95,
) -> tuple[dict, pd.DataFrame]:
    """Load each student from `students_dir/<arch>`, predict the test split and the
    `holdouts` (split.holdouts names) in `splits_dir`, and return (metrics, predictions)
    as described in the module docstring.
    With `slm`, its models are rows too, and slm_tuned gets a "gap_closed" block
    (metrics.gap_closed against slm_base, with `gap_min`). An architecture trained with
    several seeds is scored as its primary (first) seed, as `<arch>_ensemble` (the seeds'
    mean) and, in metrics[arch]["seeds"], by the spread of its seeds' test KL."""
    splits_dir, students_dir = Path(splits_dir), Path(students_dir)
    schema = Schema.load(splits_dir / "features.json")
    splits = read_held_out(splits_dir, schema, holdouts)
    dirs = student_dirs(students_dir, archs)
    from ..students.models import ENSEMBLE, predict_seeds

    parts, spreads = [], {}
    for arch, directory in dirs.items():
        for split, frame in splits.items():
            by_seed = predict_seeds(directory, frame)  # the primary (first) seed is the student `arch`
            probs = list(by_seed.values())
            parts.append(prediction_rows(frame, schema, split, arch, probs[0]))
            if len(probs) > 1:
                parts.append(prediction_rows(frame, schema, split, arch + ENSEMBLE, np.mean(probs, axis=0)))
                if split == "test":
                    spreads[arch] = seed_spread(by_seed, teacher_probs(frame, schema.options), confidence)
    if slm is not None:
        parts += slm_prediction_rows(splits, schema, slm)
    predictions = pd.concat(parts, ignore_index=True)
    metrics = metrics_from_predictions(predictions, schema.options, ece_bins)
    for arch, spread in spreads.items():
        metrics[arch]["seeds"] = spread
    if SLM_BASE in metrics and SLM_TUNED in metrics:
        metrics[SLM_TUNED]["gap_closed"] = gap_closed_block(predictions, schema.options, gap_min)
    return metrics, predictions


def seed_spread(by_seed: dict, teacher: np.ndarray, confidence: float) -> dict:
    """Each seed's test KL to the teacher, their mean and standard deviation, and a t interval
    of the mean over seeds (the variation retraining adds, which one seed's numbers hide)."""
    kls = np.array([kl(teacher, probs) for probs in by_seed.values()])
    mean, interval, _ = crossed_t_interval(kls[:, None], confidence)
    return {"seeds": list(by_seed), "kl": kls.tolist(), "kl_mean": mean, "kl_sd": float(kls.std(ddof=1)),
            "kl_ci": interval}


def slm_prediction_rows(splits: dict[str, pd.DataFrame], schema: Schema, slm: SLMStudents) -> list[pd.DataFrame]:
    """Prediction rows of each SLM on every held-out split; one cache lookup (and at most
    one model load) per model."""
    from ..data.states import states_from_frame
    from ..lm.answer_cache import AnswerCache
    from ..slm.answers import slm_answers

    scenario = load_scenario(slm.params.scenario)
    if [o.id for o in scenario.options] != list(schema.options):
        raise UserError(f"scenario: the options of {scenario.name} differ from the data's {list(schema.options)}; "
                        "set `scenario` to the file the data was generated from")
    states = [s for frame in splits.values() for s in states_from_frame(frame, scenario)]
    bounds = np.cumsum([0, *(len(frame) for frame in splits.values())])
    cache = AnswerCache(slm.params.generate.cache)
    parts = []
    try:
        for name, model_dir in slm.models.items():
            Q = slm_answers(model_dir, scenario, states, slm.params, cache, desc=name)
            parts += [prediction_rows(frame, schema, split, name, Q[bounds[i] : bounds[i + 1]])
                      for i, (split, frame) in enumerate(splits.items())]
    finally:
        cache.close()
    return parts


def gap_closed_block(predictions: pd.DataFrame, options: Iterable[str], gap_min: float) -> dict:
    """metrics.gap_closed of slm_tuned against slm_base on the test split, plus a "holdouts"
    block with one entry per held-out split in `predictions`."""
    options = list(options)
    block = {}
    for split in predictions["split"].unique():
        rows = {name: predictions[(predictions["student"] == name) & (predictions["split"] == split)]
                for name in (SLM_BASE, SLM_TUNED)}
        if rows[SLM_BASE].empty:
            continue
        P = rows[SLM_BASE][teacher_columns(options)].to_numpy(float)
        Q_base, Q_tuned = (rows[n][student_columns(options)].to_numpy(float) for n in (SLM_BASE, SLM_TUNED))
        scores = gap_closed(P, Q_base, Q_tuned, gap_min)
        if split == "test":
            block.update(scores)
        else:
            block.setdefault("holdouts", {})[split] = scores
    return block
