"""Every committed benchmark still imports: a benchmark nobody runs in CI must not rot when a
name it uses moves (bench/*.py run their work only under __main__)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH, ids=[p.stem for p in BENCH])
def test_benchmark_imports(script):
    environ, modules = dict(os.environ), set(sys.modules)
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # ImportError here names the moved or missing name
    assert callable(getattr(module, "main", None)), f"{script.name}: no main()"
    # A benchmark imports no test fixture module: conftest.py run a second time would start
    # the rest of the session on a fresh cache and params-reads folder.
    assert not {m for m in set(sys.modules) - modules if m.split(".")[-1] == "conftest"}
    assert dict(os.environ) == environ
