"""The default answer cache lives outside the checkout, so experiments run in a copy of
the project (`dvc exp run --temp`, `--queue`) reuse every answer instead of asking again."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

import pytest

from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.core.params import Generate


def _rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def test_cache_paths_expand_home_and_xdg_and_keep_relative_paths_in_the_project(tmp_path, monkeypatch):
    home, xdg, project = tmp_path / "home", tmp_path / "xdg", tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))
    for value, where in ((Generate().cache, xdg / "decision-distill/answers.sqlite"),
                         ("~/shared/answers.sqlite", home / "shared/answers.sqlite"),
                         (".cache/teacher.sqlite", project / ".cache/teacher.sqlite")):
        monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
        AnswerCache(value).close()
        assert where.is_file(), value
    monkeypatch.delenv("XDG_CACHE_HOME")
    AnswerCache(Generate().cache).close()
    assert (home / ".cache/decision-distill/answers.sqlite").is_file()


@pytest.mark.slow
def test_exp_run_temp_reuses_the_default_answer_cache(tiny_pipeline, sh):
    root, log = tiny_pipeline  # built with generate.cache at its default location
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "decision-distill/answers.sqlite"
    assert re.search(r"\b160 answered before|\b160 to ask", log) and cache.is_file()
    before = _rows(cache)
    # import.* feeds generate (it reruns) but not the teacher's answers under generate.source: teacher.
    log = sh("dvc", "exp", "run", "--temp", "-S", "import.probability=p_other", cwd=root)
    assert "Running stage 'generate'" in log
    assert re.search(r"160 answered before .* 0 to ask", log), log[-2000:]
    assert _rows(cache) == before
    assert not (root / ".cache").exists() and not list(root.rglob("*.sqlite"))  # nothing in the checkout
