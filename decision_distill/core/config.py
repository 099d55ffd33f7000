"""Strict YAML files read through pydantic, each mistake a one-line error naming the key.

The helpers the settings files (params.yaml: core.params; personas/params.yaml:
personas.params) and the data files (scenarios: data.scenario_schema; simulations:
simulation.config) share: the `Section` base that refuses unknown keys, the format
`version` of the data files, reading YAML 1.2, refusing NaN and infinities, and turning
pydantic's first validation error into one line with a did-you-mean hint.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML, YAMLError

from .errors import UserError


class Section(BaseModel):
    # Unknown keys are errors: a mistyped key must never be silently ignored.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


FILE_VERSIONS = (1,)  # the data-file format versions this release reads


class VersionedFile(Section):
    """A data file (a scenario, a simulation) that states its format version, so that a file
    written for a later format is refused by name instead of misread. A file without
    `version` is version 1: the format as it was before the key existed."""

    # The first field, so its error comes before any other the file has.
    version: int = 1

    @field_validator("version", mode="before")
    @classmethod
    def _supported(cls, version):
        problem = version_problem(version)
        if problem:
            raise rule_error(problem)
        return version


def version_problem(version: object) -> str | None:
    """What is wrong with a data file's `version` (the fix included), or None when this release reads it."""
    if type(version) is int and version in FILE_VERSIONS:
        return None
    return (f"must be {' or '.join(map(str, FILE_VERSIONS))}, the file format this release reads (got {version!r}); "
            "a file written for a later format needs the release it was written for")


def check_version(raw: dict, source: str) -> None:
    """The version alone, for a loader that must read it before anything else in the file."""
    problem = version_problem(raw.get("version", 1))
    if problem:
        raise UserError(f"{source}: version: {problem}")


def rule_error(message: str) -> PydanticCustomError:
    """A validator's own message, printed after the dotted key it was raised at (pydantic would
    read braces in it as placeholders, hence the indirection)."""
    return PydanticCustomError("rule", "{message}", {"message": message})


def did_you_mean(word: str, known) -> str | None:
    """"did you mean 'x'?" for the closest of `known` to a mistyped `word`, or None."""
    hint = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f"did you mean '{hint[0]}'?" if hint else None


# ---- naming the key of a validation error --------------------------------------------

def _strip(tp):
    """Annotated[X, ...] -> X, and X | None -> X."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif _is_union(tp) and type(None) in typing.get_args(tp):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
        else:
            return tp


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field(model: type[BaseModel], part: str):
    return model.model_fields.get(part) or next(
        (f for f in model.model_fields.values() if f.alias == part), None)


def _member_tags(member) -> list[str]:
    """The tag values that pick `member` of a tagged union: those of its first Literal field."""
    if not _is_model(member):
        return []
    return next(([str(t) for t in typing.get_args(f.annotation)] for f in member.model_fields.values()
                 if typing.get_origin(f.annotation) is typing.Literal), [])


def _walk(root: type[BaseModel], loc: tuple) -> tuple[str, object]:
    """The key `loc` points at as the file spells it (list items as [i], aliases for field
    names; the member tags pydantic adds for a union left out), and the type found there
    (None once it cannot be followed)."""
    key, tp = "", root
    for part in loc:
        tp = _strip(tp)
        origin = typing.get_origin(tp)
        if isinstance(part, int):
            key += f"[{part}]"
            args = typing.get_args(tp)
            tp = args[0] if origin in (list, tuple, set, frozenset) and args else None
        elif part == "[key]":  # pydantic's marker for an error in a mapping's key, not its value
            tp = None
        elif _is_model(tp):
            field = _field(tp, part)
            key = f"{key}.{(field.alias if field else None) or part}".lstrip(".")
            tp = field.annotation if field else None
        elif origin is dict:
            key = f"{key}.{part}".lstrip(".")
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else None
        elif _is_union(tp):  # the member pydantic tried: a tag ('set') or a type name ('list[str]')
            tp = next((m for m in typing.get_args(tp) if part in _member_tags(m)), None)
        else:
            key, tp = f"{key}.{part}".lstrip("."), None
    return key, tp


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_KIND_OF_VALUE = {"model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
                  "list_type": "a list", "string_type": "a string", "bool_type": "true or false",
                  "int_type": "an integer", "float_type": "a number", "tuple_type": "a list"}


def _tag_error(error: dict, key: str, union) -> str:
    """A tagged union's tag (a feature's `kind`, a simulation's `model`) missing or unknown."""
    tag_key, got = error["ctx"]["discriminator"].strip("'"), error.get("input")
    tags = [t for m in typing.get_args(_strip(union)) for t in _member_tags(m)]
    where = f"{key}.{tag_key}".lstrip(".")
    if not isinstance(got, dict):
        return f"{key or '(top level)'}: must be a mapping whose `{tag_key}` is {_or_list(tags)} (got {_short(got)})"
    if tag_key not in got:
        members = typing.get_args(_strip(union))
        unknown = [str(k) for k in got if not any(_is_model(m) and _field(m, k) for m in members)]
        typo = difflib.get_close_matches(tag_key, unknown, n=1)  # pydantic stops at the tag: look for it here
        if typo:
            return f"unknown key '{f'{key}.{typo[0]}'.lstrip('.')}'; did you mean '{tag_key}'?"
        return f"{where}: missing; set it to {_or_list(tags)}"
    hint = did_you_mean(got[tag_key], tags) if isinstance(got[tag_key], str) else None
    return f"{where}: must be {_or_list(tags)} (got {_short(got[tag_key])})" + (f"; {hint}" if hint else "")


def one_line_error(err: ValidationError, source: str, root) -> str:
    """The first validation error of `root` (a file's model, or a tagged union of models),
    naming the key: a did-you-mean hint for an unknown key."""
    errors = err.errors()
    first = errors[0]
    if first["type"] == "missing":  # a required key misspelt is also an unknown key beside it: name the typo
        first = next((e for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == first["loc"][:-1]),
                     first)
    loc = tuple(first["loc"])
    key, tp = _walk(root, loc)
    where = f"{key}: " if key else ""
    kind, got = first["type"], first.get("input")
    if kind == "extra_forbidden":
        _, parent = _walk(root, loc[:-1])
        parent = _strip(parent)
        known = [f.alias or name for name, f in parent.model_fields.items()] if _is_model(parent) else []
        fix = did_you_mean(loc[-1], known) or (f"valid keys here: {', '.join(known)}" if known else "remove it")
        return f"{source}: unknown key '{key or '(top level)'}'; {fix}"
    if kind == "params":  # our own rules' messages (core.params._params_error) name the keys and the value
        return f"{source}: {first['msg']}"
    if kind == "rule":
        return f"{source}: {where}{first['msg']}"
    if kind == "missing":
        return f"{source}: {where}missing; add it"
    if kind in ("union_tag_invalid", "union_tag_not_found"):  # the key that picks the kind of a mapping
        return f"{source}: {_tag_error(first, key, tp)}"
    if kind == "literal_error":
        return f"{source}: {where}must be {first['ctx']['expected']} (got {_short(got)})"
    if kind in _KIND_OF_VALUE:
        return f"{source}: {where}must be {_KIND_OF_VALUE[kind]} (got {_short(got)})"
    return f"{source}: {where}{first['msg']} (got {_short(got)})"


# ---- reading ------------------------------------------------------------------------

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
    """A YAML file's contents; one-line errors for a missing file or bad YAML."""
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
