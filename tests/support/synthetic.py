"""A synthetic decisions dataset with a known policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from decision_distill.core.atomic import write_parquet
from decision_distill.data.schema import Feature, Schema

TRAITS = tuple(f"t{i}" for i in range(6))
CONTEXTS = tuple(f"c{i}" for i in range(5))
GAMES = ("pd", "stag", "snow")


def synthetic_policy_frame(n: int, options: tuple[str, ...] = ("yes", "no"), seed: int = 0):
    """States with two set features, a choice and a number; P(option|state) is a known
    softmax of per-item weights, so a student can be checked against the truth."""
    rng = np.random.default_rng(seed)
    schema = Schema(
        features=(
            Feature("traits", "set", TRAITS),
            Feature("contexts", "set", CONTEXTS),
            Feature("game", "choice", GAMES),
            Feature("temperature", "number", low=-5.0, high=35.0),
        ),
        options=options,
        action="act",
    )
    k = len(options)
    w = {v: rng.normal(0, 1.0, size=k) for v in TRAITS + CONTEXTS + GAMES}
    w_temp = rng.normal(0, 1.0, size=k)
    rows = []
    for i in range(n):
        traits = sorted(rng.choice(TRAITS, size=rng.integers(1, 4), replace=False).tolist())
        contexts = sorted(rng.choice(CONTEXTS, size=rng.integers(1, 3), replace=False).tolist())
        game = str(rng.choice(GAMES))
        temp = float(rng.uniform(-5, 35))
        logits = sum(w[v] for v in traits + contexts + [game]) + w_temp * (temp - 15) / 10
        p = np.exp(logits - logits.max())
        p /= p.sum()
        row = {"state_id": i, "traits": traits, "contexts": contexts, "game": game, "temperature": temp}
        row.update({f"p_{o}": float(p[j]) for j, o in enumerate(options)})
        row["ok"] = True
        row["option_mass"] = 1.0
        row["logodds"] = float(np.log(p[0] / (1 - p[0])))
        rows.append(row)
    return schema, pd.DataFrame(rows)


def write_synthetic_splits(directory: Path, n: int = 800, options=("yes", "no"), seed: int = 0) -> Schema:
    """Write features.json + train/val/test Parquet files the way the split stage does with no
    split.holdouts (a holdout would add one more file, <name>.parquet)."""
    schema, frame = synthetic_policy_frame(n, options, seed)
    directory.mkdir(parents=True, exist_ok=True)
    schema.save(directory / "features.json")
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    write_parquet(frame.iloc[:n_train], directory / "train.parquet")
    write_parquet(frame.iloc[n_train : n_train + n_val], directory / "val.parquet")
    write_parquet(frame.iloc[n_train + n_val :], directory / "test.parquet")
    return schema
