"""`dvc repro personas/dvc.yaml` end to end on a tiny model in a temporary copy: the
persona stages and the two download stages they need run, and nothing else of the
ice-cream pipeline does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from test_pipeline import PROJECT_FILES, REPO, sh

TWO = ["Margaret_Okafor", "Walter_Henning"]


def test_the_persona_pipeline_runs_alone_with_one_command(tmp_path, persona_weights):
    root = tmp_path / "project"
    root.mkdir()
    for name in [*PROJECT_FILES, "personas"]:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "corpus").mkdir()
    for person in TWO:
        shutil.copy(REPO / "examples/board" / f"{person}.txt", root / "corpus" / f"{person}.txt")
    weights = persona_weights
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["teacher"].update(model=str(weights), device="cpu")
    params["slm"].update(model=str(weights), device="cpu")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    personas = yaml.safe_load((root / "personas/params.yaml").read_text())
    personas["corpus"] = {"path": "corpus", "personas": TWO}
    personas["chunks"]["words"] = 60
    personas["lora"].update(rank=4, alpha=8, lr=0.02, epochs=2, max_tokens=96, checkpoint_every=2)
    personas["perplexity"]["bootstrap"] = 200
    personas["extract"].update(cap=2, max_new_tokens=4)
    (root / "personas/params.yaml").write_text(yaml.safe_dump(personas, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        sh(*cmd, cwd=root)
    log = sh("dvc", "repro", "personas/dvc.yaml", cwd=root)
    ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}
    expected = {"check", "download@teacher", "download@slm", "persona-split", "persona-perplexity", "persona-extract",
                *(f"persona-{s}@{p}" for s in ("train", "merge") for p in TWO)}
    assert {r.rsplit(":", 1)[-1] for r in ran} == expected
    report = json.loads((root / "metrics/personas/perplexity.json").read_text())
    assert set(report["own_text"]) == set(TWO)
    questions = json.loads((root / "data/personas/questions.json").read_text())
    assert all(sum(q["persona"] == p and q["category"] == c for q in questions) <= 2
               for p in TWO for c in personas["extract"]["categories"])
    assert "up to date" in sh("dvc", "repro", "personas/dvc.yaml", cwd=root)
    # One person's text changes: after the split reruns, only that person's training is stale.
    changed = root / "corpus" / f"{TWO[1]}.txt"
    changed.write_text(changed.read_text() + "\n\nOne more thing about the bus routes before we vote tonight.\n")
    sh("dvc", "repro", "--single-item", "personas/dvc.yaml:persona-split", cwd=root)
    stale = {line.rstrip(":") for line in sh("dvc", "status", "personas/dvc.yaml", cwd=root).splitlines()
             if line.endswith(":") and not line[:1].isspace()}  # stage names; their changes are indented
    assert {s.rsplit(":", 1)[-1] for s in stale} == {f"persona-train@{TWO[1]}", "persona-perplexity", "persona-extract"}
