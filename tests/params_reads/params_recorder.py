"""Record which params keys a pipeline stage reads (tests/test_params_declared.py).

Installed by this folder's sitecustomize.py in every Python process DVC starts for a stage
(DVC sets DVC_STAGE and DVC_ROOT) while DECISION_DISTILL_PARAMS_READS names a folder. When
decision_distill.core.params is imported, every params object that parse_params or
parse_persona_params returns is registered, section by section, under its file and key
path; each read of a registered section's field is recorded:

- `params.slm.quantize`, `getattr(params.student, arch).lr`: a read of that leaf key;
  walking through a section (`params.slm`) reads nothing by itself;
- `section.model_dump()` (and iteration): a read of every leaf under the section;
- `section.model_copy(update={...})`: the copy stays registered under the same key, and
  reads of the keys it was given are not reads of the file (slm_answers reads the SLM
  through a copy of `teacher` whose precision and batch size come from `slm`).

At exit the process writes {root, stage, reads: {file: [key, ...]}} to a new JSON file in
that folder; `file` is the params file's path relative to DVC_ROOT. A params object that
is pickled to another process, or rebuilt from its dump, is not followed there.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import json
import os
import sys
import uuid
from pathlib import Path

TARGETS = {"decision_distill.core.params": "parse_params", "decision_distill.personas.params": "parse_persona_params"}

_objects: dict[int, tuple[object, str, str, frozenset]] = {}  # id -> (object kept alive, file, key path, overridden)
_reads: dict[str, set[str]] = {}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _entry(obj):
    entry = _objects.get(id(obj))
    return entry if entry is not None and entry[0] is obj else None


def _register(obj, file: str, path: str, overridden: frozenset = frozenset()) -> None:
    from pydantic import BaseModel

    _objects[id(obj)] = (obj, file, path, overridden)
    fields = type(obj).model_fields
    for name, value in object.__getattribute__(obj, "__dict__").items():
        if name in fields and name not in overridden and isinstance(value, BaseModel):
            _register(value, file, _join(path, fields[name].alias or name))


def _record_all(obj) -> None:
    """Every leaf under a registered section, as model_dump reads them."""
    from pydantic import BaseModel

    entry = _entry(obj)
    if entry is None:
        return
    _, file, path, overridden = entry
    fields = type(obj).model_fields
    for name, value in object.__getattribute__(obj, "__dict__").items():
        if name not in fields or name in overridden:
            continue
        if isinstance(value, BaseModel):
            _record_all(value)
        else:
            _reads.setdefault(file, set()).add(_join(path, fields[name].alias or name))


def _patch_section(section_class) -> None:
    from pydantic import BaseModel

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        entry = _entry(self)
        if entry is not None:
            fields = type(self).model_fields
            if name in fields and name not in entry[3] and not isinstance(value, BaseModel):
                _reads.setdefault(entry[1], set()).add(_join(entry[2], fields[name].alias or name))
        return value

    def model_copy(self, *, update=None, deep=False):
        copy = BaseModel.model_copy(self, update=update, deep=deep)
        entry = _entry(self)
        if entry is not None:
            _register(copy, entry[1], entry[2], entry[3] | frozenset(update or ()))
        return copy

    def model_dump(self, *args, **kwargs):
        _record_all(self)
        return BaseModel.model_dump(self, *args, **kwargs)

    def model_dump_json(self, *args, **kwargs):
        _record_all(self)
        return BaseModel.model_dump_json(self, *args, **kwargs)

    def __iter__(self):
        _record_all(self)
        return BaseModel.__iter__(self)

    for name, function in (("__getattribute__", __getattribute__), ("model_copy", model_copy),
                           ("model_dump", model_dump), ("model_dump_json", model_dump_json), ("__iter__", __iter__)):
        setattr(section_class, name, function)


def _project_root() -> Path:
    """The checkout the stage runs in: DVC_ROOT, except under `dvc exp run --temp/--queue`,
    where DVC_ROOT names the user's checkout and the stage runs in a copy of it under
    .dvc/tmp/exps/ (the nearest folder above the working directory holding a .dvc folder)."""
    cwd = Path(os.getcwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return Path(os.environ["DVC_ROOT"]).resolve()


def _relative_file(source: str) -> str:
    path = Path(os.getcwd(), source).resolve()
    root = _project_root()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _wrap_parse(module, name: str) -> None:
    import inspect

    parse = getattr(module, name)
    default = inspect.signature(parse).parameters["source"].default

    def recording_parse(raw, source=default, *args, **kwargs):
        params = parse(raw, source, *args, **kwargs)
        _register(params, _relative_file(str(source)), "")
        return params

    setattr(module, name, recording_parse)


def _patch(module) -> None:
    if module.__name__ == "decision_distill.core.params":
        _patch_section(module.Section)
    _wrap_parse(module, TARGETS[module.__name__])


class _Finder:
    """Patches the two params modules right after they run, before any stage imports from them."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _write() -> None:
    out = Path(os.environ["DECISION_DISTILL_PARAMS_READS"])
    out.mkdir(parents=True, exist_ok=True)
    record = {"root": str(Path(os.environ["DVC_ROOT"]).resolve()), "stage": os.environ["DVC_STAGE"],
              "argv": sys.argv, "reads": {file: sorted(keys) for file, keys in _reads.items()}}
    (out / f"{os.getpid()}-{uuid.uuid4().hex}.json").write_text(json.dumps(record))


def install() -> None:
    sys.meta_path.insert(0, _Finder)
    atexit.register(_write)
