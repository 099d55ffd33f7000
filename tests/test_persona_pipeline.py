"""`dvc repro personas/dvc.yaml` end to end on a tiny model in a temporary copy: the
persona stages and the two download stages they need run, and nothing else of the
ice-cream pipeline does; the judge stages wait for a review with a one-line message, and a
changed review reruns exactly that person's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TWO = ["Margaret_Okafor", "Walter_Henning"]  # the people of the persona_pipeline fixture (conftest.py)


@pytest.mark.slow
def test_the_persona_pipeline_runs_alone_with_one_command(persona_pipeline, run_cmd, sh, assert_params_declared):
    root, log = persona_pipeline  # the first `dvc repro` of the three persona stages, on two people
    personas = yaml.safe_load((root / "personas/params.yaml").read_text())
    assert personas["corpus"]["personas"] == TWO
    # runtime: every model-loading persona stage depends on data/runtime.json (dvc.yaml's runtime stage)
    expected = {"check", "runtime", "download@teacher", "download@slm", "persona-split", "persona-perplexity",
                "persona-extract", "persona-votes", *(f"persona-{s}@{p}" for s in ("train", "merge") for p in TWO)}
    assert _ran(log) == expected
    votes = json.loads((root / "metrics/personas/votes.json").read_text())
    assert (votes["pooled"]["known"], votes["pooled"]["unknown"]) == (59, 1)
    assert {m.split("|")[0] for m in votes["pooled"]["models"]} == {"teacher+profile", "base+profile", "teacher+name",
                                                                     "base+name", "tuned", "base+retrieval",
                                                                     "tuned+retrieval"}
    report = json.loads((root / "metrics/personas/perplexity.json").read_text())
    assert set(report["own_text"]) == set(TWO)
    questions = json.loads((root / "data/personas/questions.json").read_text())
    assert all(sum(q["persona"] == p and q["category"] == c for q in questions) <= 2
               for p in TWO for c in personas["extract"]["categories"])
    # No review yet for the second person: one line naming the command, nothing judged.
    _review(root, TWO[0], "a\n" * 20)
    failed = run_cmd("dvc", "repro", "personas/dvc.yaml", cwd=root)
    assert failed.returncode != 0 and f"python stages/review.py --persona {TWO[1]}" in failed.stdout + failed.stderr
    assert not (root / "metrics/personas/judge.json").exists()
    _review(root, TWO[1], "a\n" * 20)
    log = sh("dvc", "repro", "personas/dvc.yaml", cwd=root)
    assert {s.split("@")[0] for s in _ran(log)} >= {"persona-reviewed", "persona-respond", "persona-judge"}
    judge = json.loads((root / "metrics/personas/judge.json").read_text())
    assert set(judge["per_person"]) == set(TWO)
    assert set(judge["overall"]["pairwise"]) == {"tuned vs base+profile", "tuned vs base+chunks"}
    # nothing left to do but the runtime stage, which re-resolves the machine on every repro
    assert _ran(sh("dvc", "repro", "personas/dvc.yaml", cwd=root)) == {"runtime"}
    # Dropping one of the second person's questions reruns their answers and the judge only (a model
    # samples all of a person's questions in one seeded batch, so that person's answers are sampled again).
    _review(root, TWO[1], "d\n", redo=True)
    log = sh("dvc", "repro", "personas/dvc.yaml", cwd=root)
    assert _ran(log) - {"runtime", *(f"persona-reviewed@{p}" for p in TWO)} == {f"persona-respond@{TWO[1]}", "persona-judge"}

    # One person's text changes: after the split reruns, only that person's training and answers
    # are stale, beside the stages that read every person's chunks (the judge's check among them)
    # and votes, which reads the corpus.
    changed = root / "corpus" / f"{TWO[1]}.txt"
    changed.write_text(changed.read_text() + "\n\nOne more thing about the bus routes before we vote tonight.\n")
    sh("dvc", "repro", "--single-item", "personas/dvc.yaml:persona-split", cwd=root)
    stale = {line.rstrip(":") for line in sh("dvc", "status", "personas/dvc.yaml", cwd=root).splitlines()
             if line.endswith(":") and not line[:1].isspace()}  # stage names; their changes are indented
    assert {s.rsplit(":", 1)[-1] for s in stale} == {f"persona-train@{TWO[1]}", f"persona-respond@{TWO[1]}",
                                                  "persona-perplexity", "persona-extract", "persona-votes",
                                                  "persona-judge"}
    # every stage that ran read only params keys its entry declares, in either params file
    reads = assert_params_declared(root)
    assert {s.rsplit(":", 1)[-1].split("@")[0] for s in reads} >= {
        f"persona-{s}" for s in ("split", "train", "merge", "perplexity", "extract", "votes", "reviewed", "respond", "judge")}


def _ran(log: str) -> set[str]:
    return {line.split("'")[1].rsplit(":", 1)[-1] for line in log.splitlines() if line.startswith("Running stage '")}


def _review(root: Path, persona: str, script: str, redo: bool = False) -> None:
    """The review CLI with scripted answers (one decision a line; input ending quits and keeps what was decided)."""
    result = subprocess.run([sys.executable, "stages/review.py", "--persona", persona, *(["--redo"] if redo else [])],
                            cwd=root, input=script, capture_output=True, text=True, env=_project_env(root))
    assert result.returncode == 0, result.stderr


def _project_env(root: Path) -> dict[str, str]:
    """The project copy's own package first on the import path (as the fixtures' commands run)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
