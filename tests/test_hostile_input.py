"""Hostile input, property-based: malformed params, scenario, simulation and import files
thrown at the stages. Every case must end in exit 2 with one line on stderr that names the
field, no traceback (an exception escaping main() fails the test), and no output written.

Each test prints how many cases of each kind it ran (`pytest -s` shows them).
"""

from __future__ import annotations

import difflib
import json
import math
import shutil
import string
import tempfile
import types
import typing
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import annotated_types
import pandas as pd
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from decision_distill.core.params import Params, parse_params
from decision_distill.data.scenario_schema import ScenarioFile
from decision_distill.simulation.config import SimulationFile

REPO = Path(__file__).resolve().parents[1]

CASES_PER_PROPERTY = 100
# derandomize: the same cases on every run and machine (a failure reproduces in CI).
SETTINGS = settings(max_examples=CASES_PER_PROPERTY, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def one_line_error(result, field: str) -> None:
    assert result.code == 2, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert field in result.stderr, f"{field!r} not named in {result.stderr!r}"


def written(out: Path, inputs: set[str]) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name not in inputs)


# ---- malformed params ---------------------------------------------------------------

class Leaf(NamedTuple):
    path: tuple[str, ...]  # keys as params.yaml spells them ("import", not "import_")
    value: object  # its value in the committed params.yaml
    metadata: tuple  # pydantic constraints (annotated_types.Ge, MinLen, ...)


def _leaves(model: type[BaseModel], raw: dict, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    found = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += _leaves(field.annotation, raw.get(key, {}), prefix + (key,))
        elif key in raw:
            found.append(Leaf(prefix + (key,), raw[key], tuple(field.metadata)))
    return found


BASE = yaml.safe_load((REPO / "params.yaml").read_text())
LEAVES = _leaves(Params, BASE)
SECTIONS = [(k,) for k, v in BASE.items() if isinstance(v, dict)] + [
    ("student", arch) for arch, v in BASE["student"].items() if isinstance(v, dict)]


def _is_lower_bounded(leaf: Leaf) -> bool:
    bounds = [m.ge for m in leaf.metadata if isinstance(m, annotated_types.Ge)]
    bounds += [m.gt for m in leaf.metadata if isinstance(m, annotated_types.Gt)]
    return any(bound >= 0 for bound in bounds)


def _needs_items(leaf: Leaf) -> bool:
    return any(isinstance(m, annotated_types.MinLen) and m.min_length >= 1 for m in leaf.metadata)


NOT_A_NUMBER = st.text(string.ascii_letters, min_size=1, max_size=8).map(lambda s: s + "?")  # never parses
MAPPING = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), min_size=1)


def _wrong_type(value: object) -> st.SearchStrategy:
    if value is None:  # a width left null (student.hidden fills it): a number or null is right, nothing else
        return st.one_of(NOT_A_NUMBER, MAPPING, st.lists(st.integers(), min_size=1))
    if isinstance(value, bool):
        return st.one_of(NOT_A_NUMBER, MAPPING, st.lists(st.booleans(), min_size=1))
    if isinstance(value, (int, float)):
        return st.one_of(NOT_A_NUMBER, MAPPING, st.lists(st.integers(), min_size=1))
    if isinstance(value, str):
        return st.one_of(st.integers(), MAPPING, st.lists(st.integers(), min_size=1))
    return st.one_of(st.integers(), MAPPING)  # lists


@st.composite
def malformed_params(draw) -> tuple[str, dict, str]:
    """(kind, params, the dotted field the error must name)."""
    kinds = ["wrong_type", "unknown_key", "negative_size", "empty_list", "nan", "section_not_a_mapping"]
    kind = draw(st.sampled_from(kinds))
    raw = json.loads(json.dumps(BASE))
    if kind == "unknown_key":
        section = draw(st.sampled_from([(), *SECTIONS]))
        node = raw
        for key in section:
            node = node[key]
        name = draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda k: k not in node))
        node[name] = draw(st.one_of(st.integers(), st.text(max_size=5)))
        return kind, raw, ".".join(section + (name,))
    if kind == "section_not_a_mapping":
        section = draw(st.sampled_from(SECTIONS))
        value = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers())))
        path = section
    else:
        candidates = {
            "wrong_type": LEAVES,
            "negative_size": [leaf for leaf in LEAVES if _is_lower_bounded(leaf)],
            "empty_list": [leaf for leaf in LEAVES if _needs_items(leaf)],
            "nan": [leaf for leaf in LEAVES if isinstance(leaf.value, (int, float)) and not isinstance(leaf.value, bool)],
        }[kind]
        leaf = draw(st.sampled_from(candidates))
        path = leaf.path
        value = {
            "wrong_type": lambda: draw(_wrong_type(leaf.value)),
            "negative_size": lambda: draw(st.integers(max_value=-1)) if isinstance(leaf.value, int) or leaf.value is None
            else draw(st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False)),
            "empty_list": lambda: [],
            "nan": lambda: draw(st.sampled_from([math.nan, math.inf, -math.inf])),
        }[kind]()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return kind, raw, ".".join(path)


def _stage_for(field: str, out: Path, params: Path) -> tuple[str, ...]:
    """The stage that reads `field`'s section (every stage validates the whole file)."""
    section = field.split(".")[0]
    if section in ("split",):
        return ("stages/split.py", "--dataset", str(out / "d.parquet"), "--schema", str(out / "f.json"),
                "--out", str(out / "splits"), "--params", str(params))
    if section in ("train", "student"):
        return ("stages/train.py", "mlp", "--splits", str(out / "splits"), "--out", str(out / "mlp"),
                "--live", str(out / "live"), "--params", str(params))
    if section == "evaluate":
        return ("stages/evaluate.py", "--splits", str(out / "splits"), "--students", str(out / "students"),
                "--metrics", str(out / "m.json"), "--predictions", str(out / "p.parquet"), "--params", str(params))
    if section == "slm":
        return ("stages/download.py", "--role", "slm", "--out", str(out / "slm"), "--params", str(params))
    return ("stages/generate.py", "--teacher", str(out / "teacher"), "--dataset", str(out / "d.parquet"),
            "--schema", str(out / "f.json"), "--metrics", str(out / "m.json"), "--params", str(params))


def test_the_committed_params_are_valid():
    parse_params(BASE)  # so every failure below comes from the mutation alone


def test_malformed_params_end_in_one_line_naming_the_field(call_stage):
    counts = Counter()

    @SETTINGS
    @given(case=malformed_params())
    def check(case):
        kind, raw, field = case
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            script, *args = _stage_for(field, out, out / "params.yaml")
            one_line_error(call_stage(script, *args), field)
            assert written(out, {"params.yaml"}) == []
        counts[kind] += 1

    check()
    print(f"\nmalformed params: {sum(counts.values())} cases {dict(counts)}")
    assert len(counts) == 6  # every kind of damage was tried


# ---- malformed scenario and simulation files ---------------------------------------

DATA_FILES = {"scenarios/ice_cream.yaml": ScenarioFile, "scenarios/games.yaml": ScenarioFile,
              "scenarios/public_goods.yaml": ScenarioFile, "simulations/christmas_market.yaml": SimulationFile,
              "simulations/repeated_dilemma.yaml": SimulationFile}


def _bare(tp):
    """Annotated[X, ...] -> X; X | None -> X."""
    if typing.get_origin(tp) is typing.Annotated:
        return _bare(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        return _bare(next(a for a in typing.get_args(tp) if a is not type(None)))
    return tp


def _keyed(tp, raw, path: str = ""):
    """(dotted path, mapping, its model) for every mapping in `raw` whose keys the file format
    names (a feature, a prompt, a clock; not `values` or a state): where a key can be misspelt,
    dropped or given a wrong value. A tagged union's member is the one the mapping's tag picks."""
    tp = _bare(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(raw, dict):
        yield path, raw, tp
        for key, value in raw.items():
            if key in tp.model_fields:
                yield from _keyed(tp.model_fields[key].annotation, value, f"{path}.{key}".lstrip("."))
    elif typing.get_origin(tp) is dict and isinstance(raw, dict):
        for key, value in raw.items():
            yield from _keyed(args[1], value, f"{path}.{key}".lstrip("."))
    elif typing.get_origin(tp) is list and isinstance(raw, list):
        for i, value in enumerate(raw):
            yield from _keyed(args[0], value, f"{path}[{i}]")
    elif typing.get_origin(tp) in (typing.Union, types.UnionType) and isinstance(raw, dict):
        for member in args:
            tags = {name: typing.get_args(f.annotation) for name, f in member.model_fields.items()
                    if typing.get_origin(f.annotation) is typing.Literal}
            if any(raw.get(name) in values for name, values in tags.items()):
                yield from _keyed(member, raw, path)


def _at(path: str, key: str) -> str:
    return f"{path}.{key}".lstrip(".")


@st.composite
def misspelt(draw, key: str) -> str:
    """`key` with one letter dropped, doubled or swapped with the next."""
    i = draw(st.integers(0, len(key) - 1))
    return draw(st.sampled_from([key[:i] + key[i + 1:], key[:i] + key[i] + key[i:],
                                 key[:i] + key[i + 1:i + 2] + key[i:i + 1] + key[i + 2:]]))


@st.composite
def malformed_data_file(draw) -> tuple[str, str, dict, str, str]:
    """(kind, committed file, its damaged contents, the field the error must name, a hint it must give)."""
    kinds = ["misspelt_key", "unknown_key", "missing_key", "wrong_type", "not_a_number", "unknown_version"]
    kind = draw(st.sampled_from(kinds))
    file = draw(st.sampled_from(sorted(DATA_FILES)))
    raw = yaml.safe_load((REPO / file).read_text())
    if kind == "unknown_version":
        raw["version"] = draw(st.integers().filter(lambda v: v != 1))
        return kind, file, raw, "version", "must be 1"
    nodes = list(_keyed(DATA_FILES[file], raw))
    if kind == "unknown_key":
        path, node, model = draw(st.sampled_from(nodes))
        name = draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
            lambda k: k not in model.model_fields and k not in node))
        node[name] = draw(st.one_of(st.integers(), st.text(max_size=5)))
        return kind, file, raw, _at(path, name), "unknown key"
    keys = [(path, node, model, key) for path, node, model in nodes for key in node if key in model.model_fields]
    if kind == "missing_key":
        keys = [k for k in keys if k[2].model_fields[k[3]].is_required()]
    if kind == "not_a_number":
        keys = [k for k in keys if type(k[1][k[3]]) in (int, float) and k[3] != "version"]
    assume(keys)  # public_goods.yaml has no number to spoil
    path, node, model, key = draw(st.sampled_from(keys))
    if kind == "misspelt_key":
        typo = draw(misspelt(key).filter(lambda t: t and t not in node and t not in model.model_fields))
        # only typos whose closest valid key is the one misspelt: the hint must name it
        assume(difflib.get_close_matches(typo, list(model.model_fields), n=1) == [key])
        node[typo] = node.pop(key)
        return kind, file, raw, _at(path, typo), f"did you mean '{key}'?"
    if kind == "missing_key":
        del node[key]
        return kind, file, raw, _at(path, key), "missing"
    if kind == "not_a_number":
        node[key] = draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), NOT_A_NUMBER))
        return kind, file, raw, _at(path, key), ""
    # wrong_type: a mapping where a list or a single value belongs, a list where a mapping or a value does
    node[key] = draw(st.lists(st.integers(), min_size=1) if isinstance(node[key], dict) else MAPPING)
    return kind, file, raw, _at(path, key), "must be"


def _read_by(file: str) -> str:
    """The scenario the pipeline is run with to read scenario `file`: one that names it under
    zero_shot (public_goods.yaml is no pipeline's own scenario), else the file itself."""
    named_by = [f"scenarios/{p.name}" for p in sorted((REPO / "scenarios").glob("*.yaml"))
                if Path(file).name in (yaml.safe_load(p.read_text()).get("zero_shot") or [])]
    return named_by[0] if named_by else file


def _check_stage_on(file: str, raw: dict, out: Path) -> tuple[str, ...]:
    """The check stage run on `raw` standing in for `file`: as the pipeline's scenario (or one of
    its zero-shot scenarios), or as the one simulation of simulate.simulations, run against the
    scenario it is written for."""
    if file.startswith("scenarios/"):
        shutil.copytree(REPO / "scenarios", out / "scenarios")  # the scenario, with the zero-shot ones it names
        params = {"scenario": str(out / _read_by(file))}
    else:
        written_for = yaml.safe_load((REPO / file).read_text())["scenario"]  # as committed: `raw` may lack it
        params = {"scenario": f"scenarios/{written_for}.yaml", "simulate": {"simulations": [str(out / file)]}}
    (out / file).parent.mkdir(parents=True, exist_ok=True)
    (out / file).write_text(yaml.safe_dump(raw, sort_keys=False))
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    return ("stages/check_params.py", "--params", str(out / "params.yaml"), "--out", str(out / "checked.json"))


def test_the_committed_data_files_pass_the_check_stage(tmp_path, call_stage):
    for i, file in enumerate(DATA_FILES):  # so every failure below comes from the damage alone
        raw = yaml.safe_load((REPO / file).read_text())
        result = call_stage(*_check_stage_on(file, raw, tmp_path / str(i)))
        assert result.code == 0, result
        assert (tmp_path / str(i) / "checked.json").exists()


def test_malformed_scenario_and_simulation_files_end_in_one_line_naming_the_field(call_stage):
    counts = Counter()

    @SETTINGS
    @given(case=malformed_data_file())
    def check(case):
        kind, file, raw, field, hint = case
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            result = call_stage(*_check_stage_on(file, raw, out))
            one_line_error(result, field)
            assert hint in result.stderr, f"{hint!r} not in {result.stderr!r}"
            assert not (out / "checked.json").exists()
        counts[kind] += 1

    check()
    print(f"\nmalformed scenario and simulation files: {sum(counts.values())} cases {dict(counts)}")
    assert len(counts) == 6  # every kind of damage was tried


# ---- malformed import files ---------------------------------------------------------

GOOD_ROWS = pd.read_csv(REPO / "examples/imported_decisions.csv").head(12)
FEATURES, PROBABILITY = ["traits", "contexts"], "p_buy"


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


@st.composite
def malformed_import(draw) -> tuple[str, str, bytes, str]:
    """(kind, file suffix, file bytes, the field the error must name)."""
    kinds = ["missing_column", "text_probability", "probability_out_of_range", "empty_file",
             "header_only", "not_utf8", "broken_list_cell", "garbage_parquet", "jsonl_wrong_types"]
    kind = draw(st.sampled_from(kinds))
    frame = GOOD_ROWS.copy()
    row = draw(st.one_of(st.just(0), st.integers(0, len(frame) - 1)))  # row 0 decides a column's kind
    if kind == "missing_column":
        column = draw(st.sampled_from(FEATURES + [PROBABILITY]))
        field = "import.probability" if column == PROBABILITY else "import.features"
        return kind, ".csv", _csv(frame.drop(columns=[column])), field
    if kind == "text_probability":
        frame[PROBABILITY] = frame[PROBABILITY].astype(object)
        frame.loc[row, PROBABILITY] = draw(NOT_A_NUMBER)
        return kind, ".csv", _csv(frame), "import.probability"
    if kind == "probability_out_of_range":
        frame.loc[row, PROBABILITY] = draw(st.one_of(
            st.floats(min_value=1.0, exclude_min=True), st.floats(max_value=0.0, exclude_max=True),
            st.sampled_from([math.nan, math.inf, -math.inf])))
        return kind, ".csv", _csv(frame), "import.probability"
    if kind == "empty_file":
        return kind, draw(st.sampled_from([".csv", ".jsonl", ".parquet"])), b"", "import.path"
    if kind == "header_only":
        return kind, ".csv", _csv(frame.iloc[0:0]), "import.path"
    if kind == "not_utf8":
        text = _csv(frame).decode()
        at = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xe9t\xe9", b"\xc3\x28", b"\x80"]))
        return kind, ".csv", text[:at].encode() + bad + text[at:].encode(), "import.path"
    if kind == "broken_list_cell":
        column = draw(st.sampled_from(FEATURES))
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = draw(st.one_of(NOT_A_NUMBER, st.just("[1, 2]"), st.just('["a", '),
                                                st.just('{"a": 1}')))
        return kind, ".csv", _csv(frame), column
    if kind == "garbage_parquet":
        return kind, ".parquet", draw(st.binary(min_size=1, max_size=64)), "import.path"
    # JSON lines whose probability is a string, a list or an object instead of a number
    records = json.loads(frame.to_json(orient="records"))
    records[row][PROBABILITY] = draw(st.one_of(NOT_A_NUMBER, st.just([0.5]), st.just({"p": 0.5})))
    return kind, ".jsonl", "\n".join(map(json.dumps, records)).encode(), "import.probability"


def test_malformed_import_files_end_in_one_line_naming_the_field(call_stage):
    counts = Counter()

    @SETTINGS
    @given(case=malformed_import())
    def check(case):
        kind, suffix, data, field = case
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / f"decisions{suffix}").write_bytes(data)
            params = {"generate": {"source": "import"},
                      "import": {"path": str(out / f"decisions{suffix}"), "features": FEATURES,
                                 "probability": PROBABILITY, "options": ["yes", "no"]}}
            (out / "params.yaml").write_text(yaml.safe_dump(params))
            script, *args = _stage_for("import", out, out / "params.yaml")
            one_line_error(call_stage(script, *args), field)
            assert written(out, {"params.yaml", f"decisions{suffix}"}) == []
        counts[kind] += 1

    check()
    print(f"\nmalformed import files: {sum(counts.values())} cases {dict(counts)}")
    assert len(counts) == 9


def test_the_unharmed_import_file_goes_through(tmp_path, call_stage):
    """The control: the same call on the good rows writes the dataset."""
    GOOD_ROWS.to_csv(tmp_path / "decisions.csv", index=False)
    params = {"generate": {"source": "import"},
              "import": {"path": str(tmp_path / "decisions.csv"), "features": FEATURES,
                         "probability": PROBABILITY, "options": ["yes", "no"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    script, *args = _stage_for("import", tmp_path, tmp_path / "params.yaml")
    assert call_stage(script, *args).code == 0
    assert len(pd.read_parquet(tmp_path / "d.parquet")) == len(GOOD_ROWS)


# ---- verbalized teacher output ------------------------------------------------------

ANSWER_VALUES = st.one_of(st.floats(), st.integers(), st.booleans(), st.none(), st.text(max_size=6),
                          st.lists(st.floats(allow_nan=False), max_size=2))


@st.composite
def teacher_text(draw) -> str:
    """Whatever a teacher might write: near-misses of the JSON answer, or anything at all."""
    def mostly(likely, otherwise):  # three times in four
        return draw(likely) if draw(st.integers(0, 3)) else draw(otherwise)

    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=40))
    answer = {"buy": mostly(st.floats(0, 1), ANSWER_VALUES),
              "explanation": mostly(st.text(string.ascii_letters, min_size=1, max_size=10), ANSWER_VALUES)}
    if draw(st.integers(0, 3)) == 0:
        answer[draw(st.sampled_from(["extra", "p", "Buy"]))] = draw(ANSWER_VALUES)
    if draw(st.integers(0, 3)) == 0:
        del answer[draw(st.sampled_from(sorted(answer)))]
    tail = mostly(st.sampled_from(["", "\n", "\nmore words"]), st.just(" trailing"))
    return json.dumps(answer) + tail


def test_verbalized_output_is_a_probability_or_a_failure_with_the_raw_text():
    from decision_distill.lm.verbalized import parse_verbalized

    outcomes = Counter()

    @SETTINGS
    @given(text=teacher_text())
    def check(text):
        parsed = parse_verbalized(text, "buy")
        assert parsed["raw"] == text
        if parsed["ok"]:  # exactly the number the teacher wrote, never a coerced one
            value = json.loads(text.strip().split("\n")[0])["buy"]
            assert type(value) in (int, float) and 0 <= value <= 1 and parsed["probability"] == value
        else:
            assert parsed["probability"] is None and parsed["error"]
        outcomes["ok" if parsed["ok"] else "failure"] += 1

    check()
    print(f"\nverbalized outputs: {sum(outcomes.values())} cases {dict(outcomes)}")
    assert outcomes["ok"] and outcomes["failure"]
