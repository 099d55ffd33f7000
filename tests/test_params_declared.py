"""Params are declared like modules: a stage that reads a params key its dvc.yaml entry does not
list under `params:` would not rerun when that key changes. Every stage DVC runs in a test
records the keys it actually reads (tests/params_reads/), and the check compares them with
the declarations DVC parses (tests/support/params_declared.py). The pipeline tests call it on their
projects: the tiny default pipeline here, the games scenario (tests/test_games.py), the
persona pipeline (tests/test_persona_pipeline.py) and `dvc exp run -S student.hidden` below."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECORDER = REPO / "tests/params_reads"


def test_recorder_follows_reads_through_sections_copies_and_dumps(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    reads = tmp_path / "reads"
    code = """
from decision_distill.core.params import load_params
p = load_params("params.yaml")
p.slm.quantize                                     # a leaf
getattr(p.student, "mlp").layers                   # through getattr
p.import_.path                                     # an aliased section: its key is `import`
reader = p.model_copy(update={"teacher": p.teacher.model_copy(update={"dtype": "float32"})})
reader.teacher.dtype, reader.teacher.device, reader.generate.seed   # dtype was replaced: not a read
p.lora.model_dump()                                # every key of the section
p.student.hparams("decoder")                       # the section and the shared width it falls back on
"""
    env = {**os.environ, "DVC_STAGE": "probe", "DVC_ROOT": str(tmp_path), "DECISION_DISTILL_PARAMS_READS": str(reads),
           "PYTHONPATH": os.pathsep.join([str(RECORDER), str(REPO)])}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)
    [record] = [json.loads(p.read_text()) for p in reads.glob("*.json")]
    assert record["stage"] == "probe" and list(record["reads"]) == ["params.yaml"]
    lora = {f"lora.{k}" for k in yaml.safe_load((REPO / "params.yaml").read_text())["lora"]}
    # a dump counts every key of the section, seeds too though hparams leaves it out: over, never under
    decoder = {f"student.decoder.{k}" for k in ("lr", "d_model", "heads", "layers", "dropout", "seeds")}
    assert set(record["reads"]["params.yaml"]) == {"slm.quantize", "student.mlp.layers", "import.path", "teacher.device",
                                                   "generate.seed", "student.hidden"} | lora | decoder


def _project(root: Path, stages: dict, params: dict, sh) -> None:
    """A git+dvc project at `root` with the package, the scenario and simulation files and these stages and params."""
    for name in ("stages", "decision_distill", "scenarios", "simulations", ".dvcignore"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "project", cwd=root)


def _real_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_a_key_read_but_not_declared_is_named(tmp_path, sh, params_declared):
    # The real check stage, declaring only `scenario`, `simulate.simulations` and
    # `generate.rollouts` (the files it validates) instead of the whole file: the stability
    # settings it checks are then read undeclared, and exactly those are named.
    check = _real_stages()["check"]
    check["params"] = ["scenario", "simulate.simulations", "generate.rollouts"]
    _project(tmp_path, {"check": check}, yaml.safe_load((REPO / "params.yaml").read_text()), sh)
    sh("dvc", "repro", cwd=tmp_path)
    with pytest.raises(AssertionError) as failure:
        params_declared.assert_params_declared(tmp_path)
    named = {line.strip() for line in str(failure.value).splitlines()[1:]}
    stability = {f"check: params.yaml: stability.{k}" for k in ("repeats", "temperature", "paraphrases")}
    assert stability <= named and all(line.startswith("check: params.yaml: stability.") for line in named)
    # declared as in the real dvc.yaml (the whole file), nothing is missing
    assert not params_declared.undeclared(params_declared.recorded_reads(tmp_path), {"check": {"params.yaml": None}})


@pytest.mark.slow
def test_every_stage_of_the_tiny_pipeline_declares_the_params_it_reads(tiny_pipeline, params_declared):
    root, _ = tiny_pipeline
    reads = params_declared.assert_params_declared(root)
    declared = params_declared.declared_params(root)
    assert set(reads) == set(declared)  # every stage ran with the recorder: none passed unseen
    # The check has teeth: without its slm.quantize, evaluate (which loads both small LMs) is named.
    assert "slm.quantize" in declared["evaluate"]["params.yaml"]
    declared["evaluate"]["params.yaml"].remove("slm.quantize")
    assert params_declared.undeclared(reads, declared) == ["evaluate: params.yaml: slm.quantize"]


def _widths(root: Path) -> dict[str, int]:
    """Each trained student's width as built: the MLP's hidden layer, the transformers' d_model."""
    from decision_distill.students.models import load_student

    widths = {}
    for arch in ("mlp", "encoder", "decoder"):
        model, _ = load_student(root / "models/students" / arch)
        config = json.loads((root / "models/students" / arch / "config.json").read_text())["hparams"]
        built = model.net[0].out_features if arch == "mlp" else model.head.in_features
        assert built == config["hidden" if arch == "mlp" else "d_model"]  # config.json records the resolved width
        widths[arch] = built
    return widths


@pytest.mark.slow
def test_exp_run_sets_every_students_width_with_student_hidden(tmp_path, sh, run_cmd, write_synthetic_splits,
                                                              assert_params_declared):
    """The design's example command: `dvc exp run -S student.hidden=N` sets the width of the MLP
    and both transformers; a per-architecture key overrides it for its architecture."""
    real = _real_stages()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=2, patience=2, batch_size=64, seeds=1)
    for arch in ("encoder", "decoder"):
        params["student"][arch].update(heads=2, layers=1)
    _project(tmp_path, {"check": real["check"], "train": real["train"]}, params, sh)
    write_synthetic_splits(tmp_path / "data/splits", n=200)
    sh("git", "add", "-A", cwd=tmp_path)
    sh("git", "commit", "-qm", "splits", cwd=tmp_path)

    sh("dvc", "exp", "run", "-S", "student.hidden=24", "-S", "student.encoder.d_model=16", cwd=tmp_path)
    assert _widths(tmp_path) == {"mlp": 24, "encoder": 16, "decoder": 24}
    logreg = (tmp_path / "models/students/logreg/model.safetensors").read_bytes()
    log = sh("dvc", "exp", "run", "-S", "student.hidden=32", cwd=tmp_path)
    assert _widths(tmp_path) == {"mlp": 32, "encoder": 16, "decoder": 32}
    # Every train@ARCH depends on student.hidden (one foreach shares the params list), so all four
    # rerun; logreg has no width and comes out the same.
    assert all(f"Running stage 'train@{a}'" in log for a in ("logreg", "mlp", "encoder", "decoder"))
    assert (tmp_path / "models/students/logreg/model.safetensors").read_bytes() == logreg
    assert_params_declared(tmp_path)
    # a width the heads do not divide stops at the check stage, naming the key to change
    failed = run_cmd("dvc", "exp", "run", "-S", "student.hidden=33", cwd=tmp_path)
    assert failed.returncode != 0 and "Running stage 'train@" not in failed.stdout
    errors = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "set student.hidden to a multiple of 2" in errors[0], errors
