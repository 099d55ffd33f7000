"""Shared fixtures: a synthetic decisions dataset with a known policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atexit
import os
import shutil
import sys
import tempfile

from decision_distill.core.atomic import write_parquet
from decision_distill.data.schema import Feature, Schema

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers such as tiny_teacher

# Tests never read or write the user's real cache directory (the default answer cache,
# the memo of model-file hashes): it is a fresh one per test session.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="decision-distill-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

# Every stage DVC runs in a test records the params keys it reads (tests/params_reads/: a
# sitecustomize that is inert outside DVC stages), so tests/test_params_declared.py can check
# them against the stage's `params:` in dvc.yaml.
os.environ["DECISION_DISTILL_PARAMS_READS"] = tempfile.mkdtemp(prefix="decision-distill-params-reads-")
atexit.register(shutil.rmtree, os.environ["DECISION_DISTILL_PARAMS_READS"], ignore_errors=True)
os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent / "params_reads"),
                                            *filter(None, [os.environ.get("PYTHONPATH")])])

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


@pytest.fixture
def synthetic_splits(tmp_path) -> Path:
    directory = tmp_path / "splits"
    write_synthetic_splits(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A teacher directory made by the real download code from a tiny in-process model."""
    from tiny_teacher import build_tiny_teacher

    from decision_distill.lm.source import download

    root = tmp_path_factory.mktemp("tiny_teacher")
    weights = build_tiny_teacher(root / "weights")
    download(str(weights), "main", root / "teacher")
    return root / "teacher"


@pytest.fixture(scope="session")
def persona_weights(tmp_path_factory) -> Path:
    """The one tiny persona model (tests/persona_tiny.py) every persona test loads, built once:
    its tokenizer knows the whole example board and the extraction prompts."""
    from persona_tiny import board_texts, build_tiny_persona_model

    return build_tiny_persona_model(tmp_path_factory.mktemp("persona_weights") / "weights", board_texts())


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_teacher) -> tuple[Path, str]:
    """The whole default pipeline run once on the tiny model in a temporary git+dvc project
    (tests/test_pipeline.py: tiny_project), with the answer cache at its default location
    (under this session's XDG_CACHE_HOME). Shared by the pipeline-level tests: building it is
    the costliest step of the suite. Tests that change it must leave it committed and clean."""
    import yaml

    from test_pipeline import tiny_project

    root = tmp_path_factory.mktemp("tiny_pipeline")
    weights = yaml.safe_load((tiny_teacher / "model.json").read_text())["path"]
    return root, tiny_project(root, weights, generate={"cache": "~/.cache/decision-distill/answers.sqlite"})
