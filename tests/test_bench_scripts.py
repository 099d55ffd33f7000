"""Every committed benchmark still imports: a benchmark nobody runs in CI must not rot when a
name it uses moves (bench/*.py run their work only under __main__)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


@pytest.mark.parametrize("script", BENCH, ids=[p.stem for p in BENCH])
def test_benchmark_imports(script):
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # ImportError here names the moved or missing name
    assert callable(getattr(module, "main", None)), f"{script.name}: no main()"
