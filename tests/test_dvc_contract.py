"""The DVC side of the reproducibility contract, checked on the repository's own dvc.yaml and
dvc.lock through DVC's own parser (foreach stages come out expanded, as `name@key`)."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml
from dvc.repo import Repo

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "decision_distill"


@pytest.fixture(scope="module")
def stages():
    with Repo(str(REPO)) as repo:
        return list(repo.index.stages)


def _module_file(dotted: str) -> Path | None:
    """decision_distill.x -> decision_distill/x.py (or x/__init__.py); None outside the package."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(REPO).parent.parts)


def imported_modules(path: Path) -> set[Path]:
    """Package modules `path` imports anywhere (function-level imports included), with the
    __init__.py of every package they pass through."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                anchor = _package_of(path).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import x` may name a submodule x or an attribute of pkg: try both
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                module = _module_file(".".join(parts[:i]))
                if module is not None:
                    found.add(module)
    return found


def import_closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in imported_modules(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def _trivial(module: Path) -> bool:
    """An __init__.py with nothing but a docstring and constants: changing it cannot change a result."""
    if module.name != "__init__.py":
        return False
    body = ast.parse(module.read_text()).body
    return all(isinstance(n, (ast.Expr, ast.Assign)) for n in body)


def stage_script(stage) -> Path:
    scripts = [a for a in shlex.split(stage.cmd) if a.startswith("stages/") and a.endswith(".py")]
    assert len(scripts) == 1, f"{stage.name}: expected one stages/*.py script in its cmd, got {scripts}"
    return REPO / scripts[0]


def covered(module: str, deps: set[str]) -> bool:
    """`module` (repo-relative) is a listed dep, or inside a listed folder."""
    path = PurePosixPath(module)
    return any(path == PurePosixPath(d) or PurePosixPath(d) in path.parents for d in deps)


def test_every_stage_depends_on_the_package_modules_its_script_imports(stages):
    missing = []
    for stage in stages:
        script = stage_script(stage)
        deps = {d.def_path for d in stage.deps}
        for module in sorted(import_closure(script) | {script}):
            rel = module.relative_to(REPO).as_posix()
            if not _trivial(module) and not covered(rel, deps):
                missing.append(f"{stage.name}: {rel}")
    assert not missing, "dvc.yaml deps miss modules the stage imports:\n  " + "\n  ".join(missing)


def package_deps(stage) -> set[str]:
    return {d.def_path for d in stage.deps if PurePosixPath(d.def_path).parts[0] == PACKAGE}


def test_deps_name_package_folders_not_modules(stages):
    """A stage depends on whole parts of the package (decision_distill/<part>), never on one
    module: listing modules one by one is what grew to 400 dep lines (issue 24)."""
    files = [f"{stage.name}: {dep}" for stage in stages for dep in sorted(package_deps(stage))
             if dep.endswith(".py") or not (REPO / dep).is_dir()]
    assert not files, "dvc.yaml deps that are not a folder of decision_distill:\n  " + "\n  ".join(files)


def test_every_listed_package_folder_is_imported_by_the_stage(stages):
    """A folder dep no import of the stage's script reaches only reruns the stage for nothing
    (a stale dep, e.g. left behind when a helper moved)."""
    stale = []
    for stage in stages:
        script = stage_script(stage)
        used = {PurePosixPath(m.relative_to(REPO).as_posix()) for m in import_closure(script) if not _trivial(m)}
        for dep in sorted(package_deps(stage)):
            if not any(PurePosixPath(dep) in module.parents for module in used):
                stale.append(f"{stage.name}: {dep}")
    assert not stale, "dvc.yaml deps that no import of the stage reaches:\n  " + "\n  ".join(stale)


def test_import_closure_follows_relative_and_function_level_imports():
    # stages/games.py imports answer_cache and games inside main(), and params.py imports
    # errors.py relatively: a walker that missed either would pass the test above vacuously.
    closure = {m.relative_to(REPO).as_posix() for m in import_closure(REPO / "stages/games.py")}
    assert {"decision_distill/lm/answer_cache.py", "decision_distill/core/errors.py",
            "decision_distill/core/params.py"} <= closure


def test_every_lock_entry_is_a_stage_of_dvc_yaml(stages):
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    orphans = set(lock["stages"]) - {s.name for s in stages}
    assert not orphans, f"dvc.lock entries with no dvc.yaml stage: {sorted(orphans)}; remove them from dvc.lock"


@pytest.mark.parametrize("key, value, named", [
    ("student.mlp.hidden", -5, "student.mlp.hidden"),
    ("stability.repeats", 1, "stability.repeats"),  # a rule across params, checked only by stability.py
    ("scenario", "scenarios/nope.yaml", "scenario"),
])
def test_check_stage_rejects_before_any_other_stage_runs(tmp_path, key, value, named, call_stage):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "params_checked.json"
    result = call_stage("stages/check_params.py", "--params", str(tmp_path / "params.yaml"), "--out", str(out))
    assert result.code == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
