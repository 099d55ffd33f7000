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


def test_scripts_import_the_installed_package():
    """Stages and benchmarks import decision_distill as an installed package (make setup's
    editable install), never through a sys.path entry of their own (issue 24)."""
    root = Path(__file__).resolve().parents[1]
    scripts = sorted((root / "stages").glob("*.py")) + BENCH
    hacks = [f"{p.relative_to(root)}:{n}" for p in scripts
             for n, line in enumerate(p.read_text().splitlines(), 1) if "sys.path" in line or "noqa: E402" in line]
    assert not hacks, "scripts that edit sys.path or import late:\n  " + "\n  ".join(hacks)
