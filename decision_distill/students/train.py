"""Fit one student to the teacher's distributions (train@<arch>).

Minibatch AdamW on the soft labels, early stopping on the validation loss with the
best weights restored, per-epoch curves through DVCLive. The student is written only
when training finished with finite losses, and atomically, so a failed or killed run
never leaves a model behind.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from dvclive import Live
from tqdm import tqdm

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from ..core.params import Params, Train as TrainConfig
from ..data.schema import Schema
from ..data.split import read_split
from .encoding import FeatureEncoder
from .losses import LOSSES, kl_divergence
from .models import ARCHES, SEEDS_DIR, SEEDS_JSON, build_student, save_student

EVAL_BATCH = 8192
# Students are tiny: each op is too small to split across threads, and on a shared
# machine extra threads spin against other processes (a transformer step measured 10x
# slower with 2 threads than with 1 on a busy 2-core machine).
TRAIN_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_student(arch: str, params: Params, splits_dir, out_dir, live_dir) -> dict:
    """Train student `arch` on splits_dir/{train,val}.parquet; write it to out_dir; return a summary."""
    with torch_threads(TRAIN_THREADS):
        return _train_student(arch, params, Path(splits_dir), out_dir, live_dir)


class Rows(NamedTuple):
    """One split, encoded: student inputs and the teacher's distributions."""

    ids: torch.Tensor
    values: torch.Tensor
    target: torch.Tensor


def _train_student(arch: str, params: Params, splits_dir: Path, out_dir, live_dir) -> dict:
    if arch not in ARCHES:
        raise UserError(f"unknown student architecture '{arch}'; choose one of {', '.join(ARCHES)}")
    encoder = FeatureEncoder(Schema.load(splits_dir / "features.json"))
    train, val = (read_split(splits_dir / f"{name}.parquet") for name in ("train", "val"))
    if train.empty:
        raise UserError(f"{splits_dir / 'train.parquet'}: no usable rows (all missing or ok=False)")

    train_rows, val_rows = _rows(encoder, train), _rows(encoder, val)  # bad data fails before any output

    hparams = params.student.hparams(arch)  # the width resolved: config.json records the number trained
    seeds = params.student.seeds(arch, params.train)
    summaries = []
    # The curves are a declared output too: staged and moved into place whole, like the models.
    with atomic_dir(live_dir) as live_tmp, Live(str(live_tmp), dvcyaml=None, save_dvc_exp=False,
                                                 report=None) as live, atomic_dir(out_dir) as tmp:
        for k, seed in enumerate(seeds):
            torch.manual_seed(seed)  # weight init and dropout
            model = build_student(arch, hparams, encoder)
            # The primary student (the first seed) is the one with curves; the others only differ by seed.
            summary = _fit(model, arch, hparams["lr"], params.train, train_rows, val_rows,
                           live if k == 0 else _Unlogged(), seed)
            save_student(tmp if k == 0 else tmp / SEEDS_DIR / str(seed), arch, hparams, model, encoder)
            summaries.append({"seed": seed, **summary})
        for name, value in summaries[0].items():
            live.log_metric(name, value, plot=False)
        write_json(summaries, tmp / SEEDS_JSON)
    return {"arch": arch, "train_rows": len(train), "val_rows": len(val), "seeds": len(seeds),
            **{k: v for k, v in summaries[0].items() if k != "seed"}}


class _Unlogged:
    """DVCLive's two calls _fit makes, for the seeds beyond the first."""

    def log_metric(self, *args, **kwargs) -> None:
        pass

    def next_step(self) -> None:
        pass


def _rows(encoder: FeatureEncoder, frame: pd.DataFrame) -> Rows:
    return Rows(*encoder.encode(frame), encoder.targets(frame))


def _fit(model, arch: str, lr: float, config: TrainConfig, train: Rows, val: Rows, live, seed: int) -> dict:
    """Train until `config.epochs` or until the watched loss stops improving for
    `config.patience` epochs; leaves the model at its best epoch's weights."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    loss_fn = LOSSES[config.loss]
    # With an empty validation split (split.val: 0) the training loss decides when to stop.
    watched = "val" if len(val.ids) else "train"
    best = {"loss": math.inf, "epoch": 0, "state": None}

    with tqdm(range(1, config.epochs + 1), desc=f"train@{arch} seed {seed}", unit="epoch") as progress:
        for epoch in progress:
            losses = {"train": _train_epoch(model, optimizer, loss_fn, train, config.batch_size, shuffle, arch, epoch)}
            live.log_metric("train/loss", losses["train"])
            if watched == "val":
                losses["val"], val_kl = _evaluate(model, loss_fn, val, arch, epoch)
                live.log_metric("val/loss", losses["val"])
                live.log_metric("val/kl", val_kl)
            live.next_step()
            progress.set_postfix({f"{watched}_loss": f"{losses[watched]:.4f}"})
            if losses[watched] < best["loss"]:
                best = {"loss": losses[watched], "epoch": epoch, "state": _copy_state(model)}
            elif epoch - best["epoch"] >= config.patience:
                break

    model.load_state_dict(best["state"])
    return {
        "best_epoch": best["epoch"],
        f"best_{watched}_loss": best["loss"],
        "epochs_run": epoch,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _train_epoch(model, optimizer, loss_fn, rows: Rows, batch_size: int, generator, arch: str, epoch: int) -> float:
    """One pass over the shuffled training rows; returns the row-weighted mean loss."""
    ids, values, target = rows
    model.train()
    total = 0.0
    order = torch.randperm(len(ids), generator=generator)
    for step, start in enumerate(range(0, len(ids), batch_size), start=1):
        batch = order[start : start + batch_size]
        loss = loss_fn(model(ids[batch], values[batch]), target[batch])
        if not torch.isfinite(loss):
            raise UserError(
                f"train@{arch}: loss became {loss.item()} at epoch {epoch} step {step}; lower student.{arch}.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(ids)


@torch.no_grad()
def _evaluate(model, loss_fn, rows: Rows, arch: str, epoch: int) -> tuple[float, float]:
    """(loss, KL) on the validation rows, in eval mode."""
    ids, values, target = rows
    model.eval()
    logits = torch.cat(
        [model(ids[i : i + EVAL_BATCH], values[i : i + EVAL_BATCH]) for i in range(0, len(ids), EVAL_BATCH)]
    )
    loss = loss_fn(logits, target).item()
    if not math.isfinite(loss):
        raise UserError(
            f"train@{arch}: validation loss became {loss} after epoch {epoch}; lower student.{arch}.lr"
        )
    return loss, kl_divergence(logits, target).item()


def _copy_state(model: torch.nn.Module) -> dict:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}
