"""The same stage run from two checkouts in different folders, under different
PYTHONHASHSEED, writes byte-identical outputs: dvc.lock must not change when a
project is cloned elsewhere (an absolute path or a set's iteration order in an
output would change it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from decision_distill.core.atomic import write_parquet
from decision_distill.data.scenario_file import load_scenario

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["params.yaml", "stages", "decision_distill", "scenarios"]
# lora-train and merge outputs, as dvc.yaml declares them
OUTPUTS = ["models/lora/adapter", "models/lora/checkpoints", "dvclive/lora", "models/slm_merged"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _checkout(root: Path, weights: Path, splits: Path) -> Path:
    """A project copy with splits and models/slm holding the weights themselves (as the packaged
    and hub models do, so the model's path is inside the checkout), tiny LoRA settings."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name,
                                                            **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                               if src.is_dir() else {}))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["slm"].update(device="cpu", batch_size=16)
    params["lora"].update(rank=4, alpha=8, batch_size=8, max_steps=4, checkpoint_every=2, target_modules=TARGETS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(splits, root / "data/splits")
    shutil.copytree(weights, root / "models/slm")
    (root / "models/slm/model.json").write_text(json.dumps(
        {"source": "hub", "path": ".", "repo_id": "tiny", "revision": "0", "fingerprint": "hub:tiny@0"}))
    return root


def _set_order(hashseed: str) -> str:
    code = f"print(list(set({TARGETS!r})))"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": hashseed},
                          capture_output=True, text=True, check=True).stdout


def _run(root: Path, hashseed: str, *cmd: str) -> None:
    # the checkout's own package first on the import path: the stages import it from there
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": hashseed, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *cmd], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def _contents(root: Path) -> dict[str, str]:
    """sha256 of every file under the outputs, by path relative to the checkout."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((root / out).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_lora_train_and_merge_outputs_do_not_depend_on_the_checkout_path_or_hash_seed(tmp_path, tiny_teacher):
    weights = Path(yaml.safe_load((tiny_teacher / "model.json").read_text())["path"])
    seeds = ["0", next(s for s in map(str, range(1, 50)) if _set_order(s) != _set_order("0"))]
    states = load_scenario(REPO / "scenarios/ice_cream.yaml").sample_states(48, seed=3)
    frame = pd.DataFrame([{"state_id": i, **s, "p_yes": 0.2 + 0.6 * (i % 2), "p_no": 0.8 - 0.6 * (i % 2), "ok": True}
                          for i, s in enumerate(states)])
    splits = tmp_path / "splits"
    write_parquet(frame.iloc[:40], splits / "train.parquet")
    write_parquet(frame.iloc[40:], splits / "val.parquet")
    contents = []
    for name, hashseed in zip(("first/clone", "second_checkout_elsewhere"), seeds):
        root = _checkout(tmp_path / name, weights, splits)
        _run(root, hashseed, "stages/lora_train.py")
        _run(root, hashseed, "stages/merge.py")
        contents.append(_contents(root))
    assert any(p.endswith("adapter_config.json") for p in contents[0])
    assert contents[0].keys() == contents[1].keys()
    differing = sorted(p for p in contents[0] if contents[0][p] != contents[1][p])
    assert differing == []
