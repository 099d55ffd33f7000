"""Strict YAML settings files read through pydantic, each mistake a one-line error naming the key.

The helpers params.yaml (core.params) and personas/params.yaml (personas.params) share: the
`Section` base that refuses unknown keys, reading YAML 1.2, refusing NaN and infinities, and
turning pydantic's first validation error into one line with a did-you-mean hint.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML, YAMLError

from .errors import UserError


class Section(BaseModel):
    # Unknown keys are errors: a mistyped key must never be silently ignored.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names (aliases included) valid at `loc`, for did-you-mean hints."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None or not isinstance(field.annotation, type) or not issubclass(
            field.annotation, BaseModel
        ):
            return []
        model = field.annotation
    return [f.alias or name for name, f in model.model_fields.items()]


def one_line_error(err: ValidationError, source: str, root: type[BaseModel]) -> str:
    """The first validation error of `root` (a settings file's model), naming the key: a
    did-you-mean hint for an unknown key."""
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    key = ".".join(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        known = _known_keys(root, loc)
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        if hint:
            fix = f"did you mean '{hint[0]}'?"
        elif known:
            fix = f"valid keys here: {', '.join(known)}"
        else:
            fix = "remove it"
        return f"{source}: unknown key '{key}'; {fix}"
    if first["type"] == "params":  # our own rules' messages (core.params._params_error) name the keys and the value
        return f"{source}: {first['msg']}"
    got = first.get("input")
    return f"{source}: {key}: {first['msg']} (got {got!r})"


def reject_nan(node, path: str, source: str) -> None:
    if isinstance(node, float) and (math.isnan(node) or math.isinf(node)):
        raise UserError(f"{source}: {path}: must be a finite number (got {node})")
    if isinstance(node, dict):
        for k, v in node.items():
            reject_nan(v, f"{path}.{k}" if path else str(k), source)
    if isinstance(node, list):
        for i, v in enumerate(node):
            reject_nan(v, f"{path}[{i}]", source)


def read_yaml(path: str | Path) -> object:
    """A params file's contents; one-line errors for a missing file or bad YAML."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; run the stage from the project root")
    try:
        # YAML 1.2, as DVC writes it: `dvc exp run -S` leaves `yes` unquoted, which a
        # YAML 1.1 reader would turn into True.
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise UserError(f"{path}:{where} is not valid YAML; fix the syntax there") from None
    return raw
