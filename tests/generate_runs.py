"""Running the generate stage as a subprocess, killing it at a chosen moment, and reading what
its answer cache holds: shared by the kill-and-resume tests of test_generate.py and test_active.py."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import yaml


def run_generate_stage(tmp_path, params_raw, out_dir, teacher_dir):
    params_file = out_dir / "params.yaml"
    out_dir.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(params_raw))
    with (out_dir / "stderr.log").open("a") as log:  # a file, not a pipe: a pipe nobody reads can block
        return subprocess.Popen(
            [sys.executable, "stages/generate.py", "--params", str(params_file), "--teacher", str(teacher_dir),
             "--dataset", str(out_dir / "d.parquet"), "--schema", str(out_dir / "f.json"),
             "--metrics", str(out_dir / "m.json")],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})


def cached_answers(path) -> int:
    """Answers in the cache; also proves the file is a sound SQLite database of JSON values."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'answers'").fetchone():
            return 0  # killed before the table was created
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM answers")]
    assert all(v["ok"] and len(v["probs"]) == 2 for v in values)
    return len(values)


def answer_count(path) -> int:
    if not path.exists():  # connecting would create it
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet
        return 0


def kill_when(proc, cache, answers: int, delay: float, limit: float = 60.0) -> bool:
    """SIGKILL `proc` `delay` seconds after the cache holds `answers` answers; False if it finished first."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and answer_count(cache) < answers and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        code = proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    assert code == 0, "generate failed on its own"
    return False
