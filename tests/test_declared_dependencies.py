"""Every third-party package the code imports is declared in pyproject.toml.

`make setup` installs requirements.txt and then the project with `--no-deps`, so a
package imported by decision_distill/ or stages/ but missing from pyproject's
`[project] dependencies` still works here and breaks `pip install decision-distill`
elsewhere. These tests read the imports with ast (nothing is executed), map each
top-level module to its distribution with importlib.metadata, and check it is
declared: in `dependencies`, or, for a module imported only on an optional path
(bitsandbytes for QLoRA), in an `[project.optional-dependencies]` extra.
They also check that requirements.txt, which the Makefile installs, covers every
declared runtime dependency with the same version specifier.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, vendored by pip (in every venv make setup builds)
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("decision_distill", "stages")
FIRST_PARTY = {"decision_distill", "stages", "tests", "bench", "tools"}


def _normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of '-', '_', '.' become one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(line: str) -> tuple[str, str] | None:
    """(normalised name, version specifier) of one requirement line; None for blanks and comments."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)", line)
    assert match, f"cannot read requirement {line!r}"
    return _normalise(match.group(1)), match.group(3).replace(" ", "")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared_runtime() -> dict[str, str]:
    return dict(filter(None, map(_requirement, _pyproject()["project"].get("dependencies", []))))


def declared_optional() -> dict[str, str]:
    extras = _pyproject()["project"].get("optional-dependencies", {})
    return dict(filter(None, (_requirement(r) for reqs in extras.values() for r in reqs)))


def imported_modules() -> dict[str, list[str]]:
    """Top-level module name -> files importing it, for absolute imports in the scanned packages."""
    found: dict[str, list[str]] = {}
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def third_party(modules: dict[str, list[str]]) -> dict[str, list[str]]:
    local = FIRST_PARTY | {p.stem for package in SCANNED for p in (ROOT / package).glob("*.py")}
    return {m: files for m, files in modules.items()
            if m not in sys.stdlib_module_names and m not in local}


def test_the_scan_finds_third_party_imports():
    modules = third_party(imported_modules())
    assert {"torch", "pandas", "transformers"} <= modules.keys()


def test_every_third_party_import_is_a_declared_dependency():
    runtime, optional = declared_runtime(), declared_optional()
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(third_party(imported_modules()).items()):
        # A module that is not installed (an optional one such as bitsandbytes) cannot be
        # mapped; its distribution is then taken to carry the module's own name.
        candidates = {_normalise(d) for d in distributions.get(module, [module])}
        if candidates & runtime.keys():
            continue
        if candidates & optional.keys() and module not in distributions:
            continue  # optional and not installed here: the code imports it on an optional path
        missing.append(f"{module} (distribution {' or '.join(sorted(candidates))}; "
                       f"imported in {', '.join(sorted(set(files))[:3])})")
    assert not missing, "imported but not declared in pyproject.toml [project] dependencies:\n  " + \
        "\n  ".join(missing)


def test_requirements_txt_installs_every_declared_dependency():
    """The Makefile installs requirements.txt, then the project with --no-deps."""
    requirements = dict(filter(None, map(_requirement, (ROOT / "requirements.txt").read_text().splitlines())))
    declared = declared_runtime()
    missing = sorted(set(declared) - set(requirements))
    assert not missing, f"declared in pyproject.toml but not in requirements.txt: {missing}"
    differ = {name: (spec, requirements[name]) for name, spec in declared.items()
              if spec and requirements[name] != spec}
    assert not differ, f"pyproject.toml and requirements.txt pin differently (pyproject, requirements): {differ}"
