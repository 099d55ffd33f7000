"""Every stage writes its outputs only through decision_distill.core.atomic: under a temporary
name first, then renamed into place.

The test runs each stage with the atomic module's rename turned into a no-op, as if
the process died just before each rename. A stage that wrote anything any other
way would leave that file behind under its final name, where a later stage could
read it half-written.
"""

import os
import types
from pathlib import Path

import pytest
import yaml

import decision_distill.core.atomic

REPO = Path(__file__).resolve().parents[1]

ARCHES = ("logreg", "mlp", "encoder", "decoder")
TINY = {"train": {"epochs": 2, "patience": 1, "batch_size": 64},
        "student": {"mlp": {"hidden": 8}, "encoder": {"d_model": 8, "heads": 2, "layers": 1},
                    "decoder": {"d_model": 8, "heads": 2, "layers": 1}},
        "slm": {"enabled": False}}
SLM_TINY = {"lora": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 1},
            "perplexity": {"max_states": 4},
            "stability": {"states": 3, "repeats": 2, "paraphrases": 2, "shot_orders": 1, "batch_sizes": [2]}}


def weights(teacher_dir: Path) -> str:
    return yaml.safe_load((teacher_dir / "model.json").read_text())["path"]


@pytest.fixture
def renames_never_happen(monkeypatch):
    lost = []
    no_rename = types.ModuleType("os_without_rename")
    no_rename.__dict__.update(vars(os))
    no_rename.replace = lambda src, dst: lost.append(Path(dst).name)
    monkeypatch.setattr(decision_distill.core.atomic, "os", no_rename)
    return lost


def visible_files(root: Path) -> list[str]:
    """Files under `root` whose path has no hidden (temporary) part."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


@pytest.fixture
def run(call_stage):
    """(script, *args): call a stage script in-process; it must succeed."""
    def run_ok(script: str, *args: str) -> None:
        result = call_stage(script, *args)
        assert result.code == 0, result
    return run_ok


def test_no_stage_writes_an_output_except_by_rename(tmp_path, tiny_teacher, monkeypatch, renames_never_happen, write_synthetic_splits,
                                                    run):
    inputs = tmp_path / "inputs"
    with monkeypatch.context() as undo:  # inputs for the later stages, written the normal way
        undo.setattr(decision_distill.core.atomic, "os", os)
        write_synthetic_splits(inputs / "splits", n=200)
        (inputs / "params.yaml").write_text(yaml.safe_dump(TINY))
        for arch in ARCHES:
            run("stages/train.py", arch, "--splits", str(inputs / "splits"), "--out", str(inputs / "students" / arch),
                "--live", str(inputs / "live" / arch), "--params", str(inputs / "params.yaml"))
        run("stages/evaluate.py", "--splits", str(inputs / "splits"), "--students", str(inputs / "students"),
            "--metrics", str(inputs / "students.json"), "--predictions", str(inputs / "predictions.parquet"),
            "--params", str(inputs / "params.yaml"))

        # The small-LM stages need states the scenario describes: a tiny generated dataset,
        # split, and an adapter to merge.
        slm_params = inputs / "slm.yaml"
        slm_params.write_text(yaml.safe_dump({**SLM_TINY, "slm": {"model": weights(tiny_teacher), "device": "cpu",
                                                                  "batch_size": 4},
                                              "teacher": {"model": weights(tiny_teacher), "device": "cpu",
                                                          "batch_size": 4, "max_new_tokens": 8},
                                              "generate": {"states": 24, "cache": str(tmp_path / "cache.sqlite")}}))
        run("stages/generate.py", "--teacher", str(tiny_teacher), "--dataset", str(inputs / "g.parquet"), "--schema",
            str(inputs / "g.json"), "--metrics", str(inputs / "gm.json"), "--params", str(slm_params))
        run("stages/split.py", "--dataset", str(inputs / "g.parquet"), "--schema", str(inputs / "g.json"),
            "--out", str(inputs / "gsplits"), "--params", str(slm_params))
        run("stages/lora_train.py", "--splits", str(inputs / "gsplits"), "--slm", str(tiny_teacher), "--out",
            str(inputs / "adapter"), "--checkpoints", str(inputs / "ckpt"), "--live", str(inputs / "lora_live"),
            "--params", str(slm_params))

    out = tmp_path / "out"
    out.mkdir()
    teacher_params, import_params = out / ".teacher.yaml", out / ".import.yaml"
    teacher_params.write_text(yaml.safe_dump({**TINY, "teacher": {"model": weights(tiny_teacher), "device": "cpu",
                                                                  "batch_size": 4},
                                              "generate": {"states": 8, "cache": str(tmp_path / "cache.sqlite")}}))
    import_params.write_text(yaml.safe_dump({**TINY, "generate": {"source": "import"},
                                             "import": {"path": str(REPO / "examples/imported_decisions.csv")}}))
    stages = {
        "check": ["stages/check_params.py", "--params", str(teacher_params), "--out", str(out / "checked.json")],
        "download": ["stages/download.py", "--role", "teacher", "--out", str(out / "teacher"),
                     "--params", str(teacher_params)],
        "download (not needed)": ["stages/download.py", "--role", "slm", "--out", str(out / "slm"),
                                  "--params", str(teacher_params)],
        "generate": ["stages/generate.py", "--teacher", str(tiny_teacher), "--dataset", str(out / "d.parquet"),
                     "--schema", str(out / "f.json"), "--metrics", str(out / "m.json"), "--params", str(teacher_params)],
        "generate (import)": ["stages/generate.py", "--dataset", str(out / "i.parquet"), "--schema",
                              str(out / "i.json"), "--metrics", str(out / "im.json"), "--params", str(import_params)],
        "split": ["stages/split.py", "--dataset", str(inputs / "splits/train.parquet"), "--schema",
                  str(inputs / "splits/features.json"), "--out", str(out / "splits"), "--params", str(import_params)],
        "train": ["stages/train.py", "mlp", "--splits", str(inputs / "splits"), "--out", str(out / "mlp"),
                  "--live", str(out / "live"), "--params", str(import_params)],
        "evaluate": ["stages/evaluate.py", "--splits", str(inputs / "splits"), "--students", str(inputs / "students"),
                     "--metrics", str(out / "students.json"), "--predictions", str(out / "predictions.parquet"),
                     "--params", str(import_params)],
        "lora-train": ["stages/lora_train.py", "--splits", str(inputs / "gsplits"), "--slm", str(tiny_teacher),
                       "--out", str(out / "adapter"), "--checkpoints", str(out / "ckpt"), "--live",
                       str(out / "lora_live"), "--params", str(slm_params)],
        "merge": ["stages/merge.py", "--base", str(tiny_teacher), "--adapter", str(inputs / "adapter"),
                  "--out", str(out / "merged"), "--params", str(slm_params)],
        "perplexity": ["stages/perplexity.py", "--splits", str(inputs / "gsplits"), "--base", str(tiny_teacher),
                       "--merged", str(tiny_teacher), "--metrics", str(out / "ppl.json"), "--params", str(slm_params)],
        "stability": ["stages/stability.py", "--teacher", str(tiny_teacher), "--test", str(inputs / "gsplits/test.parquet"),
                      "--metrics", str(out / "stab.json"), "--readings", str(out / "stab.parquet"),
                      "--floor", str(out / "floor.parquet"), "--params", str(slm_params)],
        "games (no cells)": ["stages/games.py", "--metrics", str(out / "games.json"), "--params", str(import_params)],
        "plot": ["stages/plot.py", "--predictions", str(inputs / "predictions.parquet"), "--metrics",
                 str(inputs / "students.json"), "--splits", str(inputs / "splits"), "--live", str(inputs / "live"),
                 "--out", str(out / "plots")],
    }
    for name, (script, *args) in stages.items():
        before = len(renames_never_happen)
        run(script, *args)
        assert len(renames_never_happen) > before, f"{name} wrote nothing through decision_distill.core.atomic"
        assert visible_files(out) == [], f"{name} wrote these without a rename: {visible_files(out)}"
