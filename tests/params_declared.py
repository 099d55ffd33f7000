"""The params keys each DVC stage read in a test project (recorded by tests/params_reads/ as the
stage ran) against the keys its dvc.yaml entry declares, read through DVC's own parser
(foreach stages expanded as name@key, personas/dvc.yaml stages as personas/dvc.yaml:name)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

Reads = dict[str, dict[str, set[str]]]          # stage -> params file -> keys read
Declared = dict[str, dict[str, list[str] | None]]  # stage -> params file -> keys declared (None: the whole file)


def recorded_reads(root: Path) -> Reads:
    """Every key each stage read in the project at `root`, over all its runs so far."""
    reads: Reads = {}
    root = str(Path(root).resolve())
    for path in sorted(Path(os.environ["DECISION_DISTILL_PARAMS_READS"]).glob("*.json")):
        record = json.loads(path.read_text())
        if record["root"] != root:
            continue
        stage = reads.setdefault(record["stage"], {})
        for file, keys in record["reads"].items():
            stage.setdefault(file, set()).update(keys)
    return reads


def declared_params(root: Path) -> Declared:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    declared: Declared = {}
    # stage.addressing is relative to the working directory, as DVC_STAGE is to the project's root
    with contextlib.chdir(root), Repo(str(root)) as repo:
        for stage in repo.index.stages:
            files = declared.setdefault(stage.addressing, {})
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    file = Path(dep.fs_path).resolve().relative_to(Path(root).resolve()).as_posix()
                    files[file] = list(dep.params) or None  # `params.yaml:` with no keys: all of it
    return declared


def covered(key: str, declared: list[str] | None) -> bool:
    """`key` is declared itself, or inside a declared section (`slm` covers `slm.quantize`)."""
    return declared is None or any(key == d or key.startswith(f"{d}.") for d in declared)


def undeclared(reads: Reads, declared: Declared) -> list[str]:
    missing = []
    for stage, files in sorted(reads.items()):
        for file, keys in sorted(files.items()):
            if file not in declared.get(stage, {}):
                missing += [f"{stage}: {file}: {key}" for key in sorted(keys)]
                continue
            missing += [f"{stage}: {file}: {key}" for key in sorted(keys) if not covered(key, declared[stage][file])]
    return missing


def assert_params_declared(root: Path) -> Reads:
    """Fail naming every key a stage of the project at `root` read but does not declare."""
    reads = recorded_reads(root)
    missing = undeclared(reads, declared_params(root))
    assert not missing, "stages read params their dvc.yaml entry does not list under `params:`:\n  " + "\n  ".join(missing)
    return reads
