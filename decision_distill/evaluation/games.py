"""The games stage: how every model's decisions compare with the teacher's, cell by cell.

A scenario that lists `cells` (e.g. [game, context]) gets, for every held-out split of
the evaluate stage (test, and each of split.holdouts) and every cell (one combination of
the cell features' values):

  value     the cell's mean decision: P(first option) for the teacher and every model,
            or, when the option ids are numbers (donate 0..10), the expected number
  value_ci  its bootstrap interval over the cell's states
  jsd       Jensen-Shannon divergence (base 2, in [0, 1]) between the teacher's and the
            model's cell-mean distribution over the options, with a paired bootstrap interval
  fallback  small students only: the cell holds a feature value they never saw in training
            (one-hot column without a gradient), so what they answer there is a default,
            not something learnt
  gap_closed  slm_tuned against slm_base on the cell means: `value` is the research's
            (tuned - base) / (teacher - base) on the cell values and `jsd` is
            1 - JSD(tuned) / JSD(base), both only where |teacher - base| exceeds
            evaluate.gap_min times the value scale (1 for P, 10 for 0..10 points): where the
            base model already matches the teacher both ratios divide by almost nothing
            (seed 003's counts gave -106). `jsd_reduction` = JSD(base) - JSD(tuned), in every
            cell, with a paired bootstrap interval (both JSDs from the same resampled states)

Scenarios listed under `zero_shot` in the scenario file (the public-goods game) are never
trained on: every one of their states is answered by the teacher and both small LMs
(through the answer cache) and reported the same way; the small students cannot read
them (other features, other options) and are reported as not applicable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.scenario import Scenario
from ..slm.answers import SLM_BASE, SLM_TUNED
from ..stats.bootstrap import bootstrap_interval, percentile_interval
from ..stats.metrics import jsd
from .predictions import student_columns, teacher_columns

TEACHER = "teacher"
SMALL_LMS = (SLM_BASE, SLM_TUNED)


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def decision_values(options: list[str]) -> np.ndarray | None:
    """The number each option stands for when every option id is a number, else None."""
    try:
        return np.array([float(o) for o in options])
    except ValueError:
        return None


def value_label(options: list[str]) -> str:
    return f"mean answer ({options[0]}-{options[-1]})" if decision_values(options) is not None else f"P({options[0]})"


def cell_values(Q: np.ndarray, options: list[str]) -> np.ndarray:
    """Each row's decision value: the expected number, or P(first option)."""
    numbers = decision_values(options)
    return Q @ numbers if numbers is not None else Q[..., 0]


def interval(statistic, n: int, boot: Bootstrap, stream: tuple[int, ...]) -> tuple[list[float] | None, np.ndarray | None]:
    """Percentile bootstrap interval of `statistic(idx)` over resampled state indices (vectorized:
    idx may carry a leading resample axis), and the bootstrap distribution; None with fewer than
    2 states. `stream` seeds this statistic's own generator, so a cell's interval does not
    depend on what else was computed."""
    ci, distribution = bootstrap_interval(statistic, np.arange(n), resamples=boot.resamples,
                                          confidence=boot.confidence, seed=[boot.seed, *stream], vectorized=True,
                                          distribution=True)
    return (list(ci) if ci is not None else None), distribution


def compare_cell(T: np.ndarray, models: dict[str, np.ndarray], options: list[str], boot: Bootstrap,
                 stream: tuple[int, ...]) -> tuple[dict, dict]:
    """The teacher's and each model's value and interval, and each model's JSD to the teacher,
    for one cell's states (rows aligned across T and every model); also the JSD bootstrap
    distributions, for the split summary."""
    out = {TEACHER: _value_block(T, options, boot, (*stream, 0))}
    distributions = {}
    for k, (name, Q) in enumerate(models.items(), start=1):
        block = _value_block(Q, options, boot, (*stream, k))
        stat = lambda idx, Q=Q: jsd(T[idx].mean(axis=-2), Q[idx].mean(axis=-2))  # noqa: E731
        block["jsd"] = float(jsd(T.mean(axis=0), Q.mean(axis=0)))
        block["jsd_ci"], distributions[name] = interval(stat, len(T), boot, (*stream, k, 1))
        out[name] = block
    return out, distributions


def _value_block(Q: np.ndarray, options: list[str], boot: Bootstrap, stream: tuple[int, ...]) -> dict:
    values = cell_values(Q, options)
    ci, _ = interval(lambda idx: values[idx].mean(axis=-1), len(Q), boot, stream)
    return {"value": float(values.mean()), "value_ci": ci}


def value_span(options: list[str]) -> float:
    """The width of the value scale: 1 for a probability, max - min for numeric options."""
    numbers = decision_values(options)
    return 1.0 if numbers is None else float(numbers.max() - numbers.min())


def cell_gap_closed(block: dict, gap_min: float) -> dict:
    """slm_tuned's share of slm_base's distance to the teacher, on one cell's means (see module
    doc); `gap_min` is a share of the value scale (for 0..10 points, 0.05 is half a point).
    Both shares are None where the base model is within gap_min of the teacher."""
    teacher, base, tuned = block[TEACHER]["value"], block[SLM_BASE]["value"], block[SLM_TUNED]["value"]
    gap = teacher - base
    wide = abs(gap) > gap_min and block[SLM_BASE]["jsd"] > 0
    return {
        "value": (tuned - base) / gap if wide else None,
        "jsd": 1.0 - block[SLM_TUNED]["jsd"] / block[SLM_BASE]["jsd"] if wide else None,
    }


def jsd_reduction(T: np.ndarray, Q_base: np.ndarray, Q_tuned: np.ndarray, boot: Bootstrap,
                  stream: tuple[int, ...]) -> tuple[float, list[float] | None, np.ndarray | None]:
    """JSD(teacher, base) - JSD(teacher, tuned) on one cell's means, its percentile interval and
    bootstrap distribution. Paired: each resample recomputes both JSDs on the same states, so
    what the cell's states share (their teacher answers) cancels out of the difference."""
    def reduction(idx):
        mean_t = T[idx].mean(axis=-2)
        return jsd(mean_t, Q_base[idx].mean(axis=-2)) - jsd(mean_t, Q_tuned[idx].mean(axis=-2))

    ci, distribution = interval(reduction, len(T), boot, stream)
    return float(reduction(np.arange(len(T)))), ci, distribution


def compare_split(rows: pd.DataFrame, cells: list[str], options: list[str], boot: Bootstrap, gap_min: float,
                  split_index: int, unseen: dict[str, set[str]] | None = None) -> dict:
    """Per-cell comparison (compare_cell) of one split's long-format prediction rows (the
    evaluate stage's predictions frame, one split), and a summary per model: its mean value
    over states, its mean cell JSD with a stratified bootstrap interval, and for small
    students how many cells are fallbacks (a value in `unseen`: feature -> values never trained on)."""
    unseen = unseen or {}
    models = list(dict.fromkeys(rows["student"]))
    rows = rows.sort_values("state_id", kind="stable")  # sums in one order, however the rows came
    table, per_model_dists, per_model_jsd = [], {m: [] for m in models}, {m: [] for m in models}
    reductions = []  # per cell, the paired bootstrap distribution of JSD_base - JSD_tuned
    for c, (key, cell) in enumerate(rows.groupby(cells, sort=True)):
        key = key if isinstance(key, tuple) else (key,)
        by_model = {m: part.sort_values("state_id") for m, part in cell.groupby("student", sort=False)}
        first = by_model[models[0]]
        T = first[teacher_columns(options)].to_numpy(float)
        Q = {m: by_model[m][student_columns(options)].to_numpy(float) for m in models}
        block, dists = compare_cell(T, Q, options, boot, (split_index, c))
        row = {**dict(zip(cells, key)), "states": len(T), **block}
        falls_back = any(v in unseen.get(f, ()) for f, v in zip(cells, key)) or any(
            first[f].isin(list(values)).any() for f, values in unseen.items() if f not in cells)
        for m in models:
            if m not in SMALL_LMS:
                row[m]["fallback"] = bool(falls_back)
            per_model_dists[m].append(dists[m] if dists[m] is not None else np.full(boot.resamples, block[m]["jsd"]))
            per_model_jsd[m].append(block[m]["jsd"])
        if SLM_BASE in models and SLM_TUNED in models:
            value, ci, dist = jsd_reduction(T, Q[SLM_BASE], Q[SLM_TUNED], boot, (split_index, c, len(models) + 1))
            row["gap_closed"] = cell_gap_closed(row, gap_min * value_span(options)) | {
                "jsd_reduction": value, "jsd_reduction_ci": ci}
            reductions.append(dist if dist is not None else np.full(boot.resamples, value))
        table.append(row)
    summary = _summary(rows, models, options, table, per_model_dists, per_model_jsd, boot)
    if reductions:
        summary[SLM_TUNED]["gap_closed"] |= _reduction_summary(table, reductions, boot)
    return {"states": int(rows["state_id"].nunique()), "cells": table, "summary": summary}


def _reduction_summary(table: list[dict], reductions: list[np.ndarray], boot: Bootstrap) -> dict:
    """The mean over cells of JSD_base - JSD_tuned, its interval stratified by cell (each
    resample pools one paired resample of every cell)."""
    pooled = np.mean(reductions, axis=0)
    return {"jsd_reduction": float(np.mean([r["gap_closed"]["jsd_reduction"] for r in table])),
            "jsd_reduction_ci": list(percentile_interval(pooled, boot.confidence))}


def _summary(rows, models, options, table, dists, jsds, boot: Bootstrap) -> dict:
    first = rows[rows["student"] == models[0]]
    summary = {TEACHER: {"value": float(cell_values(first[teacher_columns(options)].to_numpy(float), options).mean())}}
    for m in models:
        Q = rows.loc[rows["student"] == m, student_columns(options)].to_numpy(float)
        pooled = np.mean(dists[m], axis=0)  # one resample of every cell at a time: stratified by cell
        block = {"value": float(cell_values(Q, options).mean()), "jsd_mean": float(np.mean(jsds[m])),
                 "jsd_mean_ci": list(percentile_interval(pooled, boot.confidence))}
        if m not in SMALL_LMS:
            block["fallback_cells"] = sum(1 for r in table if r[m]["fallback"])
        summary[m] = block
    if SLM_BASE in models and SLM_TUNED in models:
        wide = [r for r in table if r["gap_closed"]["value"] is not None]  # cells past the gap_min guard
        base_jsd = sum(r[SLM_BASE]["jsd"] for r in wide)
        summary[SLM_TUNED]["gap_closed"] = {
            "value": float(np.mean([r["gap_closed"]["value"] for r in wide])) if wide else None, "cells": len(wide),
            "jsd": 1.0 - sum(r[SLM_TUNED]["jsd"] for r in wide) / base_jsd if base_jsd > 0 else None}
    return summary


def unseen_in_training(train: pd.DataFrame, split_rows: pd.DataFrame, scenario: Scenario) -> dict[str, set[str]]:
    """Choice-feature values present in a split's states but in no training state."""
    unseen = {}
    for f in scenario.features:
        if f.kind == "choice" and f.name in split_rows:
            values = set(split_rows[f.name].astype(str)) - set(train[f.name].astype(str))
            if values:
                unseen[f.name] = values
    return unseen


def compare_predictions(predictions: pd.DataFrame, train: pd.DataFrame, scenario: Scenario, boot: Bootstrap,
                        gap_min: float) -> dict:
    """compare_split for every split of the evaluate stage's predictions, in their order."""
    options = [o.id for o in scenario.options]
    out = {}
    for i, (split, rows) in enumerate(predictions.groupby("split", sort=False)):
        unseen = unseen_in_training(train, rows, scenario)
        out[split] = {"unseen_in_training": {f: sorted(v) for f, v in unseen.items()},
                      **compare_split(rows, list(scenario.cells), options, boot, gap_min, i, unseen)}
    return out


def zero_shot_rows(scenario: Scenario, states: list[dict], teacher: np.ndarray,
                   models: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long-format rows (as the evaluate stage writes) for a zero-shot scenario's states."""
    options = [o.id for o in scenario.options]
    parts = []
    for name, Q in models.items():
        frame = pd.DataFrame({"state_id": np.arange(len(states)), "split": scenario.name, "student": name})
        features = pd.DataFrame([{f.name: s[f.name] for f in scenario.features} for s in states])
        parts.append(pd.concat([frame, features, pd.DataFrame(teacher, columns=teacher_columns(options)),
                                pd.DataFrame(Q, columns=student_columns(options))], axis=1))
    return pd.concat(parts, ignore_index=True)


def zero_shot_report(scenario: Scenario, teacher_dir: Path, slm_models: dict[str, Path], params, cache,
                     boot: Bootstrap, gap_min: float, split_index: int) -> dict:
    """Score every state of a never-trained scenario with the teacher and the small LMs
    (through the answer cache) and compare them cell by cell."""
    from ..slm.answers import slm_answers
    from ..teacher.ask import teacher_answers

    options = [o.id for o in scenario.options]
    reason = _zero_shot_unreadable(scenario, params, slm_models)
    if reason:
        return {"skipped": reason}
    states = scenario.all_states()
    answers = teacher_answers(teacher_dir, scenario, states, params, cache, desc=f"teacher {scenario.name}")
    if not all(a["ok"] for a in answers):
        return {"skipped": f"the teacher gave no readable answer for some {scenario.name} states"}
    T = np.array([a["probs"] for a in answers], dtype=float)
    models = {name: slm_answers(d, scenario, states, params, cache, desc=f"{name} {scenario.name}")
              for name, d in slm_models.items()}
    rows = zero_shot_rows(scenario, states, T, models)
    return {"value": value_label(options), "cells_by": list(scenario.cells),
            "small_students": f"not applicable: they read {params_scenario_name(params)}'s features and options, "
                              f"not {scenario.name}'s",
            **compare_split(rows, list(scenario.cells), options, boot, gap_min, split_index)}


def _zero_shot_unreadable(scenario: Scenario, params, slm_models: dict) -> str | None:
    if not scenario.cells:
        return f"scenario {scenario.name} lists no cells"
    if not slm_models:
        return "no small LM to compare (slm.enabled is false)"
    if params.teacher.readout != "tokens" and len(scenario.options) != 2:
        return f"teacher.readout {params.teacher.readout} reads two options; {scenario.name} has {len(scenario.options)}"
    return None


def params_scenario_name(params) -> str:
    return Path(params.scenario).stem


def games_report(predictions: pd.DataFrame, train: pd.DataFrame, scenario: Scenario, params, teacher_dir: Path,
                 slm_models: dict[str, Path], cache) -> dict:
    """metrics/games.json: every held-out split cell by cell, then each zero-shot scenario."""
    from ..data.scenario_file import load_scenario

    boot = Bootstrap(params.games.bootstrap, params.games.confidence, params.games.seed)
    gap_min = params.evaluate.gap_min
    options = [o.id for o in scenario.options]
    report = {"scenario": scenario.name, "cells_by": list(scenario.cells), "value": value_label(options),
              "confidence": boot.confidence, "bootstrap": boot.resamples,
              "splits": compare_predictions(predictions, train, scenario, boot, gap_min)}
    zero_shot = {}
    for i, path in enumerate(scenario.zero_shot, start=len(report["splits"])):
        other = load_scenario(path)
        zero_shot[other.name] = zero_shot_report(other, teacher_dir, slm_models, params, cache, boot, gap_min, i)
    report["zero_shot"] = zero_shot
    return report
