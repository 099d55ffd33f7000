"""The wheel ships the whole package and a student loads from it with only its runtime needs.

The wheel is built (what `pip install .` does) from a copy of the sources, so no stale
build/ directory in the checkout can add or hide a module, and installed with pip into a
fresh venv. That venv reaches third-party packages through a .pth file naming directories:
a directory named in a .pth line is only appended to sys.path, the .pth files inside it are
not run, so the test interpreter's editable install of this project never activates (each
check asserts decision_distill comes from the fresh venv). The subprocesses run isolated
(-I: no PYTHON* variables, no user site, no current directory on sys.path) in tmp_path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.students.encoding import FeatureEncoder
from decision_distill.students.models import ARCHES, build_student, predict, save_student

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "decision_distill"
# Policy's docstring: "A student needs only its two files ... and torch, safetensors, numpy
# and pandas at run time". The restricted environment holds these and what they declare.
STUDENT_RUNTIME = ("torch", "safetensors", "numpy", "pandas")
ICE = ROOT / "scenarios/ice_cream.yaml"


def repo_modules() -> set[str]:
    """Every module of the package in the checkout, by dotted name."""
    names = set()
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run_python(python: Path, code: str, cwd: Path) -> str:
    result = subprocess.run([str(python), "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, python, site-packages) of a fresh venv holding only the wheel, with pip's help."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(tmp / "dist"), str(src)], check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("decision_distill-*.whl")

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    # the test interpreter's pip installs into the fresh venv (--python), from the wheel alone
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, cwd=tmp)
    site = Path(run_python(python, "import sysconfig; print(sysconfig.get_path('purelib'))", tmp).strip())
    return wheel, python, site


def test_wheel_holds_every_module(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
                    for n in zf.namelist() if n.startswith(f"{PACKAGE}/") and n.endswith(".py")}
    missing = sorted(repo_modules() - in_wheel)
    assert not missing, f"modules not in the wheel: {missing}"
    assert {f"{PACKAGE}.personas", f"{PACKAGE}.simulation"} <= in_wheel


def test_every_module_imports_from_the_installed_wheel(installed, tmp_path):
    _, python, site = installed
    # every site-packages the test runs with (torch, transformers, dvc, ...), but not this checkout
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "_test_deps.pth").write_text("\n".join(deps) + "\n")
    try:
        out = run_python(python, f"""
import importlib, json, pkgutil, traceback
import {PACKAGE}
found, files, errors = [], {{}}, {{}}
for info in pkgutil.walk_packages({PACKAGE}.__path__, "{PACKAGE}."):
    found.append(info.name)
for name in ["{PACKAGE}", *found]:
    try:
        files[name] = importlib.import_module(name).__file__
    except Exception:
        errors[name] = traceback.format_exc(limit=-3)
print(json.dumps({{"found": found, "files": files, "errors": errors}}))
""", tmp_path)
    finally:
        (site / "_test_deps.pth").unlink()
    report = json.loads(out.strip().splitlines()[-1])
    assert not report["errors"], "\n".join(f"{n}:\n{e}" for n, e in report["errors"].items())
    installed_modules = {PACKAGE, *report["found"]}
    assert installed_modules == repo_modules(), (
        f"not installed: {sorted(repo_modules() - installed_modules)}; "
        f"not in the checkout: {sorted(installed_modules - repo_modules())}")
    elsewhere = {n: f for n, f in report["files"].items() if not Path(f).is_relative_to(site)}
    assert not elsewhere, f"imported from outside the fresh venv: {elsewhere}"


def runtime_closure(names) -> set[str]:
    """The distributions `names` need: themselves and, recursively, what they declare (no extras)."""
    todo, seen = list(names), set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def link_distributions(names: set[str], directory: Path) -> None:
    """A directory of links to just these distributions' top-level files (packages, modules,
    .libs and their .dist-info), taken from each one's RECORD."""
    directory.mkdir()
    for name in names:
        dist = metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or (directory / top).exists():
                continue
            source = Path(dist.locate_file(top))
            if source.exists():
                (directory / top).symlink_to(source)


def test_policy_load_from_the_wheel_needs_only_the_student_runtime(installed, tmp_path):
    _, python, site = installed
    allowed = runtime_closure(STUDENT_RUNTIME)
    libs = tmp_path / "student_libs"
    link_distributions(allowed, libs)
    # the project's other dependencies, by import name: none may be reachable in there
    declared = {canonicalize_name(Requirement(r).name) for r in metadata.requires("decision-distill") or []}
    banned = sorted({module for module, dists in metadata.packages_distributions().items()
                     if not module.startswith("_") and not module.endswith(".pth")
                     and {canonicalize_name(d) for d in dists} & (declared - allowed)
                     and not {canonicalize_name(d) for d in dists} & allowed})
    assert {"transformers", "pydantic", "dvc", "scipy", "ruamel"} <= set(banned)

    scenario = load_scenario(ICE)
    encoder = FeatureEncoder(scenario.schema())
    states = [dict(s) for s in scenario.sample_states(12, 3)]
    expected = {}
    for i, arch in enumerate(ARCHES):
        torch.manual_seed(i)
        hparams = parse_params({}).student.hparams(arch)  # the width resolved from student.hidden
        model = build_student(arch, hparams, encoder)
        save_student(tmp_path / "students" / arch, arch, hparams, model, encoder)
        expected[arch] = predict(model, encoder, pd.DataFrame(states))

    (site / "_student_libs.pth").write_text(f"{libs}\n")
    try:
        out = run_python(python, f"""
import importlib.util, json, sys
banned = {banned!r}
reachable = [m for m in banned if importlib.util.find_spec(m) is not None]
assert not reachable, f"the restricted environment reaches {{reachable}}"
from {PACKAGE}.simulation.policy import Policy
states = json.loads({json.dumps(json.dumps(states))})
probs = {{arch: Policy.load({str(tmp_path / "students")!r} + "/" + arch).probs(states).tolist()
         for arch in {list(ARCHES)!r}}}
print(json.dumps({{"probs": probs, "file": sys.modules["{PACKAGE}"].__file__}}))
""", tmp_path)
    finally:
        (site / "_student_libs.pth").unlink()
    report = json.loads(out.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(site)
    for arch in ARCHES:
        got = np.array(report["probs"][arch])
        assert got.shape == (len(states), len(scenario.options))
        np.testing.assert_allclose(got, expected[arch], rtol=0, atol=1e-12, err_msg=arch)
        assert np.ptp(got[:, 0]) > 1e-4, f"{arch}: every state gets the same answer, the check shows nothing"
