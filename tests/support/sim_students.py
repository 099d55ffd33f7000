"""Students trained (through the real train_student) on synthetic decisions over a real
scenario's states, so simulations built on that scenario can run them. The synthetic
teacher is a known logistic policy: P(action) = sigmoid(sum of per-value weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from decision_distill.core.atomic import write_parquet
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.students.train import train_student


def synthetic_weights(scenario, seed: int = 0) -> dict[tuple[str, str], float]:
    """(feature, value) -> the known policy's weight on the logit of the action."""
    rng = np.random.default_rng(seed + 1)
    values = [(f.name, v) for f in scenario.features if f.kind in ("set", "choice") for v in f.texts]
    return {key: float(w) for key, w in zip(values, rng.normal(0.0, 1.0, len(values)))}


def synthetic_decisions(scenario_path: str, n: int, seed: int = 0) -> tuple[object, pd.DataFrame]:
    scenario = load_scenario(scenario_path)
    weight = synthetic_weights(scenario, seed)
    rows = []
    for i, state in enumerate(scenario.sample_states(n, seed)):
        logit = sum(weight[(f.name, v)] for f in scenario.features if f.kind in ("set", "choice")
                    for v in (state[f.name] if f.kind == "set" else [state[f.name]]))
        p = 1.0 / (1.0 + np.exp(-logit))
        rows.append({"state_id": i, **state, f"p_{scenario.options[0].id}": p,
                     f"p_{scenario.options[1].id}": 1.0 - p, "ok": True, "option_mass": 1.0,
                     "logodds": float(logit)})
    return scenario, pd.DataFrame(rows)


def write_splits(scenario_path: str, directory: Path, n: int = 600, seed: int = 0) -> Path:
    scenario, frame = synthetic_decisions(scenario_path, n, seed)
    directory.mkdir(parents=True, exist_ok=True)
    scenario.schema().save(directory / "features.json")
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    write_parquet(frame.iloc[:n_train], directory / "train.parquet")
    write_parquet(frame.iloc[n_train : n_train + n_val], directory / "val.parquet")
    write_parquet(frame.iloc[n_train + n_val :], directory / "test.parquet")
    return directory


def train_students(splits: Path, out: Path, archs=("logreg", "mlp"), epochs: int = 15, seeds: int = 2) -> Path:
    """out/<arch> for each arch, trained for a few epochs, with `seeds` training seeds."""
    params = parse_params({"train": {"epochs": epochs, "patience": 5, "seeds": seeds}})
    for arch in archs:
        train_student(arch, params, splits, out / arch, out.parent / "live" / arch)
    return out
