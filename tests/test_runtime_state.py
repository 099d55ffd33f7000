"""What a machine resolves is part of the DVC state: data/runtime.json (the runtime stage)
is a dep of every stage that loads a model, so a machine that would compute differently
reruns those stages, and only those."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

# Every stage that loads a causal LM (the teacher or the small LM) and nothing else.
MODEL_STAGES = {"generate", "stability", "lora-train", "merge", "perplexity", "evaluate", "games", "simulate"}

# The runtime stage run as on a machine with another torch release (the tiny project pins the
# device to cpu, so the library versions are what a machine can change there).
WITH_ANOTHER_TORCH = """
import importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: "2.99.0" if name == "torch" else real(name)
sys.argv = ["stages/runtime.py", "--out", "data/runtime.json"]
import runpy
runpy.run_path("stages/runtime.py", run_name="__main__")
"""


@pytest.mark.slow
def test_another_runtime_shows_the_model_stages_as_changed(tiny_pipeline, tmp_path, sh, run_cmd):
    root = tmp_path / "copy"
    shutil.copytree(tiny_pipeline[0], root, symlinks=True)
    recorded = json.loads((root / "data/runtime.json").read_text())
    assert recorded["teacher"] == {"dtype": "float32", "device": "cpu"}  # auto on this CPU
    status = json.loads(sh("dvc", "status", "--json", cwd=root))
    assert status == {"runtime": ["always changed"]}  # resolved on every repro; nothing else to do

    result = subprocess.run([sys.executable, "-c", WITH_ANOTHER_TORCH], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((root / "data/runtime.json").read_text())["software"]["torch"] == "2.99.0"
    status = json.loads(run_cmd("dvc", "status", "--json", cwd=root).stdout)
    changed = {stage for stage, why in status.items()
               if any(isinstance(w, dict) and "data/runtime.json" in w.get("changed deps", {}) for w in why)}
    assert changed == MODEL_STAGES
    # the students, the split and the plots do not depend on how the teacher was loaded
    assert not {"split", "train@mlp", "train@logreg", "plot", "effects"} & set(status)

    sh("dvc", "repro", "runtime", cwd=root)  # back on this machine: the same bytes, nothing to rerun
    assert json.loads(sh("dvc", "status", "--json", cwd=root)) == {"runtime": ["always changed"]}
