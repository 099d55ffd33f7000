"""bench/reproduce.py against a tiny git repository: a committed baseline, then edited runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "reproduce.py"

DVC_YAML = """
stages:
  generate:
    cmd: python generate.py
    metrics:
      - metrics/teacher.json:
          cache: false
  train:
    foreach: [mlp]
    do:
      cmd: python train.py ${item}
      metrics:
        - dvclive/${item}/metrics.json:
            cache: false
  evaluate:
    cmd: python evaluate.py
    metrics:
      - metrics/students.json:
          cache: false
  simulate:
    cmd: python simulate.py
    metrics:
      - metrics/simulate.json:
          cache: false
"""
BASELINE = {
    "metrics/teacher.json": {"states": 2000, "p_mean": 0.3816, "p_std": 0.0795, "dtype": "float32"},
    "dvclive/mlp/metrics.json": {"val": {"loss": 0.6493, "kl": 0.00169}, "best_epoch": 67, "parameters": 5442},
    "metrics/students.json": {"mlp": {"kl": 0.0017258, "kl_vs_noise_floor_ci": [0.0476, 0.0790],
                                      "ce": 0.65467, "pearson": 0.9368}},
    "metrics/simulate.json": {"market": {"teacher": {"total": 1107.75, "seconds": 0.6}}, "seconds": 19.9},
    "data/runtime.json": {"teacher": {"dtype": "float32", "device": "cpu"}, "slm": {"dtype": "float32", "device": "cpu"},
                          "software": {"torch": "2.13.0+cpu", "tokenizers": "0.23.3"}},
}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    for path, data in BASELINE.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(data, indent=2))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    return tmp_path


def edit(repo: Path, path: str, change) -> None:
    data = json.loads((repo / path).read_text())
    change(data)
    (repo / path).write_text(json.dumps(data))


def reproduce(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT)], cwd=repo, capture_output=True, text=True, timeout=60)


def lines_with(out: str, word: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(word)]


def test_identical_run_passes_every_number_exactly_equal(repo):
    done = reproduce(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dvclive/mlp/metrics.json:val.kl" in done.stdout  # foreach expanded
    assert "0 failed" in done.stdout and "PASS" in done.stdout
    assert "22 values: 20 of 20 compared exactly equal" in done.stdout  # 2 timings not compared
    assert not lines_with(done.stdout, "FAIL")


def test_change_within_tolerance_passes(repo):
    edit(repo, "metrics/students.json", lambda d: d["mlp"].update(kl=0.0017258 * 1.05))  # student: 10%
    edit(repo, "metrics/teacher.json", lambda d: d.update(p_mean=0.3816 + 3e-6))  # teacher: 1e-5 abs
    done = reproduce(repo)
    assert done.returncode == 0, done.stdout
    assert len(lines_with(done.stdout, "WITHIN")) == 2


def test_student_kl_beyond_tolerance_fails_and_names_the_key(repo):
    edit(repo, "metrics/students.json", lambda d: d["mlp"].update(kl=0.0017258 * 1.5))
    done = reproduce(repo)
    assert done.returncode == 1
    (line,) = lines_with(done.stdout, "FAIL ")
    assert line.endswith("metrics/students.json:mlp.kl")
    assert "FAIL: metrics/students.json:mlp.kl" in done.stdout


def test_timings_are_not_compared(repo):
    edit(repo, "metrics/simulate.json", lambda d: d.update(seconds=5000.0))
    done = reproduce(repo)
    assert done.returncode == 0, done.stdout
    assert any(line.endswith("metrics/simulate.json:seconds  timing, not compared")
               for line in lines_with(done.stdout, "SKIP"))


def test_a_missing_metric_fails(repo):
    edit(repo, "metrics/students.json", lambda d: d["mlp"].pop("pearson"))
    done = reproduce(repo)
    assert done.returncode == 1
    assert "metrics/students.json:mlp.pearson: only in the baseline: metric removed" in done.stdout


def test_another_teacher_dtype_is_a_different_runtime(repo):
    edit(repo, "metrics/teacher.json", lambda d: d.update(dtype="bfloat16"))
    done = reproduce(repo)
    assert done.returncode == 1
    assert "DIFFERENT RUNTIME: metrics/teacher.json:dtype: 'bfloat16' in the run, 'float32' in the baseline" \
        in done.stdout
    assert "not expected to match" in done.stdout


def test_another_library_release_is_a_different_runtime(repo):
    edit(repo, "data/runtime.json", lambda d: d["software"].update(tokenizers="0.24.0"))
    done = reproduce(repo)
    assert done.returncode == 1
    assert "DIFFERENT RUNTIME: data/runtime.json:software.tokenizers: '0.24.0' in the run" in done.stdout


def test_help_states_the_tolerances():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "student-ce" in done.stdout and "not compared: measured by a clock" in done.stdout
