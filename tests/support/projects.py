"""Temporary git+dvc copies of the project, and the commands the pipeline tests run in them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "decision_distill", "scenarios", "simulations", "examples", ".dvcignore"]
STAGES = ["check", "download@teacher", "download@slm", "generate", "split", "train@logreg", "train@mlp", "train@encoder", "train@decoder",
          "lora-train", "merge", "perplexity", "stability", "evaluate", "effects", "games", "plot", "simulate"]


def run(*cmd, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def sh(*cmd, cwd) -> str:
    result = run(*cmd, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran(log: str) -> set[str]:
    """The stages of the default pipeline that a `dvc repro` / `dvc exp run` log ran."""
    return {s for s in STAGES if f"Running stage '{s}'" in log}


def copy_project(root: Path, *extra: str) -> Path:
    """The project's pipeline files (and `extra` paths of the repository) copied into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name in [*PROJECT_FILES, *extra]:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    return root


def tiny_project(root: Path, weights: str, **overrides) -> str:
    """Copy the project into `root` with tiny settings (the model at `weights` as teacher and
    SLM; `overrides` replace whole params keys), run `dvc repro`, commit; return the log."""
    copy_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["teacher"].update(model=weights, batch_size=8, device="cpu")
    params["slm"].update(model=weights, batch_size=8, device="cpu")
    params["lora"].update(max_steps=6, checkpoint_every=3, batch_size=4)
    params["generate"].update(states=160, cache=".cache/teacher.sqlite")
    params["train"].update(epochs=4, patience=2, batch_size=32)
    for arch in ("encoder", "decoder"):
        params["student"][arch].update(d_model=16, heads=2, layers=1)
    params["student"]["mlp"]["hidden"] = 16
    params["stability"].update(states=8, repeats=2, batch_sizes=[3])
    params["teacher"]["max_new_tokens"] = 8  # the sampled answers of the stability stage
    params["simulate"].update(population=100, replicates=3)  # tests/test_simulate*.py check the numbers
    for key, value in overrides.items():  # e.g. scenario="...", split={"holdouts": {...}}
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.autostage", "true", cwd=root)
    (root / ".dvc/plots").mkdir()
    for template in (REPO / ".dvc/plots").glob("*.json"):  # the plot templates dvc.yaml names
        shutil.copy(template, root / ".dvc/plots" / template.name)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "project", cwd=root)  # DVCLive refuses a git repo with no commit
    log = sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "baseline", cwd=root)
    return log


def assert_clean(root: Path) -> None:
    """Nothing for `dvc repro` to do and nothing for git to commit."""
    status = run("dvc", "status", "--json", cwd=root)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr
    assert sh("git", "status", "--porcelain", cwd=root) == ""


def plots_json(root: Path, images: Path) -> dict:
    """`dvc plots show --json` (images written under `images`); its stdout only: DVC adds a
    warning line to the output when a plot fails to load."""
    result = run("dvc", "plots", "show", "--json", "-o", str(images), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)
