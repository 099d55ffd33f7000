"""Figures of the teacher itself: its spread and consistency across runs (the stability
stage) and, with a games report, each cell's mean decision of the teacher and the small LMs.

  stability_spread.png   per-state std of P(action) across runs, sorted, per stability source
  data/stability_spread.csv  source, rank, state_id, std
  stability_icc.png      ICC(2,1) and ICC(3,1) with 95 % CIs per stability source
  data/stability_icc.csv     source, icc, value, ci_low, ci_high (sources with an ICC only)
  games_<split>.png      per cell, the teacher's, base and tuned small LM's mean decision with
  data/games_<split>.csv   bootstrap intervals (split, cell, model, value, ci_low, ci_high)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .figures import figure

STABILITY_SOURCES = ("sampling", "wording", "numerics")  # as in metrics/stability.json


def stability_spread(readings: pd.DataFrame) -> pd.DataFrame:
    """Per source, each state's std of P(action) across runs (ddof=1, states with two or
    more readings), ranked from the most to the least variable."""
    stds = (readings.dropna(subset=["p_action"]).groupby(["source", "state_id"])["p_action"]
            .std(ddof=1).dropna().rename("std").reset_index())
    stds = stds.sort_values(["source", "std"], ascending=[True, False], kind="stable")
    stds.insert(1, "rank", stds.groupby("source").cumcount())
    return stds.reset_index(drop=True)


def plot_stability_spread(readings: pd.DataFrame, out_dir: Path) -> None:
    table = stability_spread(readings)
    sources = [source for source in STABILITY_SOURCES if source in set(table["source"])]
    if not sources:
        return
    fig, axes = figure(len(sources), panel_size=(4.0, 3.5))
    for color, (ax, source) in enumerate(zip(axes, sources)):
        rows = table[table["source"] == source]
        ax.plot(rows["rank"], rows["std"], "o-", markersize=3, color=f"C{color}")
        ax.set(xlabel="state (most variable first)", ylabel="std of P(action) across runs", title=source)
    fig.suptitle("Teacher: per-state spread across runs")
    fig.savefig(out_dir / "stability_spread.png")
    table.to_csv(out_dir / "data" / "stability_spread.csv", index=False)


def plot_stability_icc(stability: dict, out_dir: Path) -> None:
    """ICC point estimates with their 95 % CIs; a source with no ICC (no variation, too few
    answers, skipped) is named on the axis with the reason instead of a point."""
    rows, labels = [], []
    for source in STABILITY_SOURCES:
        block = stability.get(source) or {}
        found = [(kind, block[kind]) for kind in ("icc2", "icc3") if block.get(kind)]
        labels.append(source if found else f"{source}\n(no ICC: {block.get('variation', 'skipped')})")
        rows += [{"source": source, "icc": kind, "value": icc["value"], "ci_low": icc["ci95"][0],
                  "ci_high": icc["ci95"][1]} for kind, icc in found]
    table = pd.DataFrame(rows, columns=["source", "icc", "value", "ci_low", "ci_high"])
    fig, (ax,) = figure(panel_size=(6.0, 3.5))
    for offset, (kind, name) in zip((-0.12, 0.12), (("icc2", "ICC(2,1)"), ("icc3", "ICC(3,1)"))):
        part = table[table["icc"] == kind]
        y = [STABILITY_SOURCES.index(source) + offset for source in part["source"]]
        err = [part["value"] - part["ci_low"], part["ci_high"] - part["value"]]
        ax.errorbar(part["value"], y, xerr=err, fmt="o", capsize=3, label=name)
    ax.set_yticks(range(len(labels)), labels)
    low = min([-0.1, *(table["ci_low"] - 0.05)])  # an ICC interval can reach below 0
    ax.set(xlim=(low, 1.05), xlabel="intraclass correlation (95 % CI)", title="Teacher consistency per source")
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    fig.savefig(out_dir / "stability_icc.png")
    table.to_csv(out_dir / "data" / "stability_icc.csv", index=False)


GAMES_MODELS = ("teacher", "slm_base", "slm_tuned")  # the bars of the per-cell games figures


def games_table(split: str, block: dict, cells_by: list[str]) -> pd.DataFrame:
    """One row per (cell, model) of a games report block: value and its bootstrap interval."""
    rows = []
    for cell in block["cells"]:
        label = " / ".join(str(cell[f]) for f in cells_by)
        for model in GAMES_MODELS:
            if model in cell:
                ci = cell[model]["value_ci"] or [np.nan, np.nan]
                rows.append({"split": split, "cell": label, "model": model, "value": cell[model]["value"],
                             "ci_low": ci[0], "ci_high": ci[1]})
    return pd.DataFrame(rows, columns=["split", "cell", "model", "value", "ci_low", "ci_high"])


def plot_games_split(split: str, block: dict, header: dict, out_dir: Path) -> None:
    """Horizontal grouped bars, one group per cell, teacher vs base vs tuned small LM."""
    table = games_table(split, block, header["cells_by"])
    cells = list(dict.fromkeys(table["cell"]))
    models = [m for m in GAMES_MODELS if m in set(table["model"])]
    fig = Figure(figsize=(7.0, 1.0 + 0.28 * len(cells) * len(models)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    height = 0.8 / len(models)
    for k, model in enumerate(models):
        part = table[table["model"] == model].set_index("cell").reindex(cells)
        y = np.arange(len(cells)) + (k - (len(models) - 1) / 2) * height
        err = np.array([part["value"] - part["ci_low"], part["ci_high"] - part["value"]])
        ax.barh(y, part["value"], height=height, xerr=np.nan_to_num(err), capsize=2, color=f"C{k}", label=model)
    ax.set_yticks(range(len(cells)), cells, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel=f"{header['value']}, {header['confidence']:.0%} bootstrap interval over the cell's states",
           title=f"{split}: mean decision per cell")
    fig.legend(fontsize=7, loc="outside lower center", ncols=len(models))  # never over a bar
    fig.savefig(out_dir / f"games_{split}.png")
    table.to_csv(out_dir / "data" / f"games_{split}.csv", index=False)
