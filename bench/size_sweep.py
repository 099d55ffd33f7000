"""Student size against fidelity and speed: test KL vs parameter count and decisions/s.

In-process equivalent of the documented `dvc exp run --queue -S student.mlp.hidden=...`
sweep (docs/active.md), on an existing split directory (the split stage's output): for every
architecture and width in --widths (student.mlp.hidden, student.{logreg has none,encoder,
decoder}.d_model) it trains the student with params.yaml's settings through the pipeline's
train_student, scores test KL(teacher || student) with a bootstrap interval over test
states, counts parameters and times predict() (best of --repeats, end to end from a
DataFrame, one thread). Writes --out/sweep.csv and --out/size_sweep.png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from decision_distill.core.params import WIDTH_KEYS, load_params
from decision_distill.data.schema import Schema
from decision_distill.data.split import read_split
from decision_distill.stats.bootstrap import bootstrap_interval
from decision_distill.stats.metrics import kl_per_state
from decision_distill.students.models import load_student, predict
from decision_distill.students.train import train_student


def decisions_per_s(model, encoder, frame: pd.DataFrame, repeats: int) -> float:
    torch.set_num_threads(1)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict(model, encoder, frame)
        best = min(best, time.perf_counter() - start)
    return len(frame) / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", type=Path, default=Path("data/splits"))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--arches", nargs="+", default=["logreg", "mlp", "encoder", "decoder"])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("bench/out/size_sweep"))
    args = p.parse_args()
    params = load_params(args.params)
    schema = Schema.load(args.splits / "features.json")
    test = read_split(args.splits / "test.parquet").reset_index(drop=True)
    teacher = test[schema.prob_columns].to_numpy(dtype=float)
    rows = []
    for arch in args.arches:
        for width in ([None] if arch == "logreg" else args.widths):
            student = getattr(params.student, arch)
            if width is not None:
                student = student.model_copy(update={WIDTH_KEYS[arch]: width})
            run = params.model_copy(update={"student": params.student.model_copy(update={arch: student})})
            with tempfile.TemporaryDirectory() as work:
                summary = train_student(arch, run, args.splits, Path(work) / "m", Path(work) / "live")
                model, encoder = load_student(Path(work) / "m")
            per_state = kl_per_state(teacher, predict(model, encoder, test))
            low, high = bootstrap_interval(lambda v: v.mean(axis=-1), per_state, resamples=args.bootstrap,
                                           confidence=0.95, seed=0, vectorized=True)
            rows.append({"arch": arch, "width": width, "parameters": summary["parameters"],
                         "test_kl": per_state.mean(), "low": low, "high": high,
                         "decisions_per_s": decisions_per_s(model, encoder, test, args.repeats)})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "sweep.csv", index=False)
    plot(frame, args.out / "size_sweep.png", len(test))


def plot(frame: pd.DataFrame, out: Path, n_test: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, x, label in ((axes[0], "parameters", "parameters"), (axes[1], "decisions_per_s", "decisions/s (one thread)")):
        for arch, g in frame.groupby("arch", sort=False):
            ax.errorbar(g[x], g["test_kl"], yerr=[g["test_kl"] - g["low"], g["high"] - g["test_kl"]],
                        fmt="o-", capsize=2, label=arch)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel(f"test KL(teacher || student), 95% bootstrap CI ({n_test} states)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=150)


if __name__ == "__main__":
    main()
