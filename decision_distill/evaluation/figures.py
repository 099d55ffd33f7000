"""The canvas every figure is drawn on, and the note a declared figure becomes when a run has
nothing to draw in it."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANELS_PER_ROW = 4


def note_undrawn(out_dir: Path, stability: dict | None) -> None:
    """dvc.yaml declares these figures for every scenario and mode, so one that this run cannot
    draw becomes a note saying why: `dvc plots show` then never reports a missing file."""
    no_stability = (stability or {}).get("skipped") or ("no state has two readings from one source"
                                                        if stability else "no stability metrics given")
    reasons = {"loss_curves.png": "no DVCLive loss curves found",
               "error_heatmap.png": "the scenario has fewer than two set features",
               "stability_spread.png": no_stability, "stability_icc.png": no_stability}
    for name, reason in reasons.items():
        if not (out_dir / name).exists():
            fig, (ax,) = figure(panel_size=(6.0, 1.5))
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{name.removesuffix('.png')}: not drawn ({reason})", ha="center", va="center")
            fig.savefig(out_dir / name)


def figure(panels: int = 1, panel_size: tuple[float, float] = (5.0, 4.0)) -> tuple[Figure, list]:
    ncols = min(panels, PANELS_PER_ROW)
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return fig, list(axes[:panels])
