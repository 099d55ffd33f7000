"""metrics/personas/votes.png: accuracy, balanced accuracy and AUROC of every arm and variant
(pooled, bars with their intervals over questions), the baselines as vertical lines."""

from __future__ import annotations

import numpy as np

from ..core.atomic import atomic_path

METRICS = ("accuracy", "balanced_accuracy", "auroc")


def draw_votes(report: dict, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = report["pooled"]
    models = list(pooled.get("models", {}))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(13, 1.2 + 0.32 * max(len(models), 3)), sharey=True)
    # Distinct colours as well as dashes: two baselines often tie (then the lines overlap). The
    # privileged baseline (it reads the other members' votes on the question) is grey.
    colours = iter(["#C44E52", "#55A868", "#DD8452", "#937860"])
    styles = {b: (":", "#7F7F7F") if pooled["baselines"][b]["privileged"] else ("--", next(colours))
              for b in pooled.get("baselines", {})}
    for ax, metric in zip(axes, METRICS):
        values = np.array([pooled["models"][m][metric] for m in models], dtype=float)
        ci = np.array([pooled["models"][m][f"{metric}_ci"] for m in models], dtype=float).reshape(-1, 2)
        err = np.nan_to_num(np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values])))
        ax.barh(range(len(models)), np.nan_to_num(values), xerr=err, capsize=3, color="#4C72B0")
        for name, (style, colour) in styles.items():
            value = pooled["baselines"][name][metric]
            if value is not None:
                label = f"{name} (privileged)" if style == ":" else name
                ax.axvline(value, ls=style, color=colour, lw=1.5, label=label if ax is axes[0] else None)
        ax.set_yticks(range(len(models)), models, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"{metric.replace('_', ' ')} ({report['confidence']:.0%} CI over questions)", fontsize=9)
    axes[0].set_xlabel(f"all members, {pooled['known']} known votes")
    fig.legend(loc="lower center", ncol=3, fontsize=8, title="baselines", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
