"""`dvc repro personas/dvc.yaml` end to end on a tiny model in a temporary copy: the
persona stages and the two download stages they need run, and nothing else of the
ice-cream pipeline does; the judge stages wait for a review with a one-line message, and a
changed review reruns exactly that person's answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from test_pipeline import PROJECT_FILES, REPO, project_env, run, sh

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
    lines = (REPO / "examples/board/votes.csv").read_text().splitlines()
    (root / "corpus/votes.csv").write_text("\n".join(lines[:1] + [r for r in lines[1:] if r.split(",")[-2] in TWO
                                                                   and not ("bond" in r and TWO[0] in r)]) + "\n")
    profiles = yaml.safe_load((REPO / "examples/board/profiles.yaml").read_text())
    (root / "corpus/profiles.yaml").write_text(yaml.safe_dump({p: profiles[p] for p in TWO}))
    weights = persona_weights
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
        sh(*cmd, cwd=root)
    log = sh("dvc", "repro", "personas/dvc.yaml:persona-perplexity", "personas/dvc.yaml:persona-extract",
             "personas/dvc.yaml:persona-votes", cwd=root)
    # runtime: every model-loading persona stage depends on data/runtime.json (dvc.yaml's runtime stage)
    expected = {"check", "runtime", "download@teacher", "download@slm", "persona-split", "persona-perplexity",
                "persona-extract", "persona-votes", *(f"persona-{s}@{p}" for s in ("train", "merge") for p in TWO)}
    assert _ran(log) == expected
    votes = json.loads((root / "metrics/personas/votes.json").read_text())
    assert (votes["pooled"]["known"], votes["pooled"]["unknown"]) == (59, 1) and set(votes["pooled"]["models"]) == {"teacher+profile",
                                                                                    "base+profile", "tuned"}
    report = json.loads((root / "metrics/personas/perplexity.json").read_text())
    assert set(report["own_text"]) == set(TWO)
    questions = json.loads((root / "data/personas/questions.json").read_text())
    assert all(sum(q["persona"] == p and q["category"] == c for q in questions) <= 2
               for p in TWO for c in personas["extract"]["categories"])
    # No review yet for the second person: one line naming the command, nothing judged.
    _review(root, TWO[0], "a\n" * 20)
    failed = run("dvc", "repro", "personas/dvc.yaml", cwd=root)
    assert failed.returncode != 0 and f"python stages/review.py --persona {TWO[1]}" in failed.stdout + failed.stderr
    assert not (root / "metrics/personas/judge.json").exists()
    _review(root, TWO[1], "a\n" * 20)
    log = sh("dvc", "repro", "personas/dvc.yaml", cwd=root)
    assert {s.split("@")[0] for s in _ran(log)} >= {"persona-reviewed", "persona-respond", "persona-judge"}
    judge = json.loads((root / "metrics/personas/judge.json").read_text())
    assert set(judge["per_person"]) == set(TWO)
    assert set(judge["overall"]["pairwise"]) == {"tuned vs base+profile", "tuned vs base+chunks"}
    assert _ran(sh("dvc", "repro", "personas/dvc.yaml", cwd=root)) == {"runtime"}  # always re-resolved, same bytes
    # Dropping one of the second person's questions reruns their answers and the judge only (a model
    # samples all of a person's questions in one seeded batch, so that person's answers are sampled again).
    _review(root, TWO[1], "d\n", redo=True)
    log = sh("dvc", "repro", "personas/dvc.yaml", cwd=root)
    assert _ran(log) - {f"persona-reviewed@{p}" for p in TWO} - {"runtime"} == {f"persona-respond@{TWO[1]}",
                                                                               "persona-judge"}

    # One person's text changes: after the split reruns, only that person's training and answers
    # are stale, beside the stages that read every person (and votes, which reads the corpus).
    changed = root / "corpus" / f"{TWO[1]}.txt"
    changed.write_text(changed.read_text() + "\n\nOne more thing about the bus routes before we vote tonight.\n")
    sh("dvc", "repro", "--single-item", "personas/dvc.yaml:persona-split", cwd=root)
    stale = {line.rstrip(":") for line in sh("dvc", "status", "personas/dvc.yaml", cwd=root).splitlines()
             if line.endswith(":") and not line[:1].isspace()}  # stage names; their changes are indented
    assert {s.rsplit(":", 1)[-1] for s in stale} == {f"persona-train@{TWO[1]}", f"persona-respond@{TWO[1]}",
                                                  "persona-perplexity", "persona-extract", "persona-votes"}


def _ran(log: str) -> set[str]:
    return {line.split("'")[1].rsplit(":", 1)[-1] for line in log.splitlines() if line.startswith("Running stage '")}


def _review(root: Path, persona: str, script: str, redo: bool = False) -> None:
    """The review CLI with scripted answers (one decision a line; input ending quits and keeps what was decided)."""
    result = subprocess.run([sys.executable, "stages/review.py", "--persona", persona, *(["--redo"] if redo else [])],
                            cwd=root, input=script, capture_output=True, text=True, env=project_env(root))
    assert result.returncode == 0, result.stderr
