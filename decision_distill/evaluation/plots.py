"""Figures of how the students compare with the teacher, as PNG plus CSV for `dvc plots`.

All figures use the test split of the predictions frame written by the evaluate
stage; "P(action)" is the probability of the schema's first option. Written into
the output directory (replaced as a whole, atomically):

  loss_curves.png        train/val loss per student from DVCLive
  scatter.png            student vs teacher P(action), one panel per student
  data/scatter.csv       student, teacher, prediction
  calibration.png        reliability curve per student (see stats.metrics.calibration_curve)
  data/calibration.csv   student, bin_mean_student, bin_mean_teacher, count
  error_heatmap.png      mean |error| of P(action) by sizes of the first two set features,
  data/error_by_size.csv   for the student with the lowest KL (the CSV only if the schema has two set features)
  comparison.png         KL, MSE and agreement of every student; with stability metrics, the
  data/comparison.csv    teacher's noise floor as a band on KL and MSE (student, metric, value)
  stability_spread.png   per-state std of P(action) across runs, sorted, per stability source
  data/stability_spread.csv  source, rank, state_id, std
  stability_icc.png      ICC(2,1) and ICC(3,1) with 95 % CIs per stability source
  data/stability_icc.csv     source, icc, value, ci_low, ci_high (sources with an ICC only)
  games_<split>.png      with a games report (metrics/games.json): per cell, the teacher's, base and
  data/games_<split>.csv   tuned small LM's mean decision with bootstrap intervals, one figure per
                           held-out split and per zero-shot scenario (split, cell, model, value, ci_low, ci_high)

The stability and games figures are drawn by decision_distill.evaluation.plots_teacher.
loss_curves, error_heatmap and the two stability figures are always written: where there is
nothing to draw (no curves, fewer than two set features, imported decisions) the figure says
why (figures.note_undrawn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import atomic_dir
from ..data.schema import Schema
from ..stats.metrics import calibration_curve
from .figures import figure, note_undrawn
from .plots_teacher import plot_games_split, plot_stability_icc, plot_stability_spread
from .predictions import student_columns, teacher_columns

COMPARED_METRICS = ("kl", "mse", "agreement")


def make_plots(
    predictions: pd.DataFrame,
    metrics: dict,
    schema: Schema,
    live_root: Path | None,
    out_dir: Path,
    calibration_bins: int = 10,
    stability: dict | None = None,
    stability_readings: pd.DataFrame | None = None,
    games: dict | None = None,
) -> None:
    """Write every figure and its CSV (listed in the module docstring) into `out_dir`.
    `stability` / `stability_readings`: the stability stage's metrics and readings, if any;
    `games`: the games stage's report, if any."""
    test = predictions[predictions["split"] == "test"]
    students = list(pd.unique(test["student"]))
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        plot_loss_curves(students, live_root, tmp)
        plot_scatter(test, students, schema, tmp)
        plot_calibration(test, students, schema, calibration_bins, tmp)
        plot_error_heatmap(test, schema, best_by_kl(metrics, students), tmp)
        plot_comparison(metrics, students, tmp, (stability or {}).get("noise_floor"))
        if stability and "skipped" not in stability and stability_readings is not None:
            plot_stability_spread(stability_readings, tmp)
            plot_stability_icc(stability, tmp)
        note_undrawn(tmp, stability)
        if games and "splits" in games:
            blocks = {**games["splits"], **{k: v for k, v in games["zero_shot"].items() if "cells" in v}}
            for split, block in blocks.items():
                header = {**games, **games["zero_shot"].get(split, {})}  # a zero-shot scenario has its own cells
                plot_games_split(split, block, header, tmp)


def _action_probabilities(rows: pd.DataFrame, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    action = schema.options[0]
    return rows[f"teacher_{action}"].to_numpy(float), rows[f"student_{action}"].to_numpy(float)


def read_loss_curves(live_root: Path | None, student: str) -> dict[str, pd.DataFrame]:
    """The DVCLive train/val loss tables (columns step, loss) that exist for `student`."""
    if live_root is None:
        return {}
    curves = {}
    for phase in ("train", "val"):
        path = Path(live_root) / student / "plots" / "metrics" / phase / "loss.tsv"
        if path.exists():
            curves[phase] = pd.read_csv(path, sep="\t")
    return curves


def plot_loss_curves(students: list[str], live_root: Path | None, out_dir: Path) -> None:
    curves = {s: c for s in students if (c := read_loss_curves(live_root, s))}
    if not curves:
        return
    fig, (ax,) = figure(panel_size=(7.0, 4.5))
    for color, (student, phases) in enumerate(curves.items()):
        for phase, table in phases.items():
            style = "-" if phase == "train" else "--"
            ax.plot(table["step"], table["loss"], style, color=f"C{color}", label=f"{student} {phase}")
    ax.set(xlabel="step", ylabel="loss", title="Training curves (solid: train, dashed: val)")
    ax.legend()
    fig.savefig(out_dir / "loss_curves.png")


def plot_scatter(test: pd.DataFrame, students: list[str], schema: Schema, out_dir: Path) -> None:
    action = schema.options[0]
    fig, axes = figure(len(students), panel_size=(4.0, 4.0))
    tables = []
    for ax, student in zip(axes, students):
        teacher, predicted = _action_probabilities(test[test["student"] == student], schema)
        ax.scatter(teacher, predicted, s=6, alpha=0.4)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"teacher P({action})", ylabel=f"student P({action})", title=student)
        tables.append(pd.DataFrame({"student": student, "teacher": teacher, "prediction": predicted}))
    fig.suptitle(f"Student vs teacher P({action}) on the test split")
    fig.savefig(out_dir / "scatter.png")
    pd.concat(tables, ignore_index=True).to_csv(out_dir / "data" / "scatter.csv", index=False)


def plot_calibration(test: pd.DataFrame, students: list[str], schema: Schema, bins: int, out_dir: Path) -> None:
    fig, (ax,) = figure(panel_size=(5.5, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, label="perfect calibration")
    tables = []
    for student in students:
        rows = test[test["student"] == student]
        P = rows[teacher_columns(schema.options)].to_numpy(float)
        Q = rows[student_columns(schema.options)].to_numpy(float)
        mean_student, mean_teacher, count = calibration_curve(P, Q, bins)
        ax.plot(mean_student, mean_teacher, "o-", label=student)
        tables.append(
            pd.DataFrame(
                {"student": student, "bin_mean_student": mean_student, "bin_mean_teacher": mean_teacher, "count": count}
            )
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="mean student probability in bin",
        ylabel="mean teacher probability in bin",
        title=f"Calibration against the teacher ({bins} bins)",
    )
    ax.legend()
    fig.savefig(out_dir / "calibration.png")
    pd.concat(tables, ignore_index=True).to_csv(out_dir / "data" / "calibration.csv", index=False)


def best_by_kl(metrics: dict, students: list[str]) -> str:
    """The plotted student with the lowest test KL."""
    return min(students, key=lambda s: metrics[s]["kl"])


def error_by_size(rows: pd.DataFrame, schema: Schema) -> pd.DataFrame | None:
    """Mean |student - teacher| P(action) per (size of set feature 1, size of set feature 2),
    or None when the schema has fewer than two set features."""
    set_features = [f.name for f in schema.features if f.kind == "set"][:2]
    if len(set_features) < 2:
        return None
    teacher, predicted = _action_probabilities(rows, schema)
    sizes = {f"n_{name}": rows[name].map(len).to_numpy() for name in set_features}
    table = pd.DataFrame({**sizes, "abs_error": np.abs(predicted - teacher)})
    return table.groupby(list(sizes), as_index=False)["abs_error"].agg(mean_abs_error="mean", count="size")


def plot_error_heatmap(test: pd.DataFrame, schema: Schema, student: str, out_dir: Path) -> None:
    table = error_by_size(test[test["student"] == student], schema)
    if table is None:
        return
    row_key, col_key = table.columns[:2]
    grid = table.pivot(index=row_key, columns=col_key, values="mean_abs_error")
    fig, (ax,) = figure(panel_size=(6.0, 5.0))
    image = ax.imshow(np.ma.masked_invalid(grid.to_numpy(float)), origin="lower", cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
    ax.set(
        xlabel=f"number of {col_key.removeprefix('n_')}",
        ylabel=f"number of {row_key.removeprefix('n_')}",
        title=f"Mean |error| of P({schema.options[0]}), {student} (lowest KL)",
    )
    fig.colorbar(image, ax=ax, label="mean absolute error")
    fig.savefig(out_dir / "error_heatmap.png")
    table.assign(student=student)[["student", *table.columns]].to_csv(out_dir / "data" / "error_by_size.csv", index=False)


def plot_comparison(metrics: dict, students: list[str], out_dir: Path, noise_floor: dict | None = None) -> None:
    """Bars per metric; the teacher's noise floor (mean line, band over wording runs) on kl and mse."""
    table = pd.DataFrame(
        [{"student": s, "metric": m, "value": metrics[s][m]} for m in COMPARED_METRICS for s in students]
    )
    fig, axes = figure(len(COMPARED_METRICS), panel_size=(4.0, 3.5))
    for color, (ax, metric) in enumerate(zip(axes, COMPARED_METRICS)):
        values = table[table["metric"] == metric]
        ax.bar(values["student"], values["value"], color=f"C{color}")
        better = "higher" if metric == "agreement" else "lower"
        if noise_floor and metric in ("kl", "mse"):
            ax.axhspan(noise_floor[f"{metric}_min"], noise_floor[f"{metric}_max"], color="grey", alpha=0.25,
                       label="teacher noise floor (range over wordings)")
            ax.axhline(noise_floor[metric], color="grey", linestyle="--", linewidth=1)
            ax.legend(fontsize=7)
        ax.set(xlabel="student", ylabel=metric, title=f"{metric} ({better} is better)")
        ax.tick_params(axis="x", labelrotation=45)  # six and more student names overlap when level
    fig.suptitle("Students on the test split")
    fig.savefig(out_dir / "comparison.png")
    table.to_csv(out_dir / "data" / "comparison.csv", index=False)
