"""Scenario files (scenarios/*.yaml): read, validated against their format
(decision_distill.data.scenario_schema) and built into a Scenario, each mistake a one-line
error naming the key and the fix; and the stability params that are only checked against a
scenario.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from pydantic import ValidationError

from ..core.config import did_you_mean, one_line_error, read_yaml
from ..core.errors import UserError
from ..core.params import Stability
from .scenario import Example, FeatureSpec, Option, SAMPLED_KINDS, Scenario
from .scenario_schema import ExampleEntry, LookupFeature, NumberFeature, ScenarioFile, Wording


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    if not path.exists():
        known = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.exists() else []
        hint = f" (known: {', '.join(known)})" if known else ""
        raise UserError(f"scenario: {path} not found{hint}; set `scenario` in params.yaml")
    return parse_scenario(read_yaml(path), str(path))


def parse_scenario(raw: object, source: str) -> Scenario:
    """The Scenario a scenario file's contents (`raw`, as YAML reads it) define; `source` names
    the file in errors and anchors its `zero_shot` paths."""
    try:
        file = ScenarioFile.model_validate(raw)
    except ValidationError as err:
        raise UserError(one_line_error(err, source, ScenarioFile)) from None
    features = _with_lookup_ranges(tuple(_feature(name, f) for name, f in file.features.items()), source)
    all_values = [v for f in features for v in f.texts]
    dupes = {v for v in all_values if all_values.count(v) > 1}
    if dupes:
        raise UserError(f"{source}: features: value ids must be unique across features ({sorted(dupes)})")
    options = tuple(Option(o.id, o.text) for o in file.options)
    prompt, where = file.prompt, f"{source}: prompt"
    scenario = Scenario(
        name=Path(source).stem if file.name is None else file.name,
        action=options[0].id if file.action is None else file.action,
        features=features,
        conflicts=_conflicts(file.conflicts or [], all_values, source),
        options=options,
        intro=prompt.intro,
        case=prompt.case,
        joiner=prompt.joiner,
        examples=tuple(_example(e, i, features, options, where) for i, e in enumerate(prompt.examples or [])),
        verbalized_key=prompt.verbalized_key,
        paraphrases=tuple(_paraphrase(p, i, features, where) for i, p in enumerate(prompt.paraphrases or [])),
        cells=_cells(file.cells or [], features, source),
        zero_shot=tuple(_zero_shot(file.zero_shot or [], source)),
    )
    _check_renders(scenario, where)
    _check_feasible(scenario, source)
    return scenario


def _feature(name: str, f) -> FeatureSpec:
    if isinstance(f, LookupFeature):  # its [low, high] comes from the tables: _with_lookup_ranges
        tables = tuple((feature, tuple(table.items())) for feature, table in f.factors.items())
        return FeatureSpec(name, f.kind, {}, factors=tables, format=f.format)
    if isinstance(f, NumberFeature):
        return FeatureSpec(name, f.kind, {}, low=f.low, high=f.high, step=f.step, format=f.format)
    low, high = (1, 1) if f.kind == "choice" else (f.min, f.max)
    return FeatureSpec(name, f.kind, dict(f.values), min=low, max=high)


def _conflicts(pairs: list[list[str]], all_values: list[str], source: str) -> tuple[frozenset[str], ...]:
    for i, pair in enumerate(pairs):
        where = f"{source}: conflicts[{i}]"
        if len(pair) != 2:
            raise UserError(f"{where}: must be a pair of value ids, e.g. [a, b] (got {pair!r})")
        for value in pair:
            if value not in all_values:
                hint = did_you_mean(value, all_values) or "name values of the features"
                raise UserError(f"{where}: must be a pair of known value ids; '{value}' is no feature's value; {hint}")
    return tuple(frozenset(pair) for pair in pairs)


def _cells(cells: list[str], features: tuple[FeatureSpec, ...], source: str) -> tuple[str, ...]:
    choices = [f.name for f in features if f.kind == "choice"]
    if any(c not in choices for c in cells) or len(set(cells)) != len(cells):
        raise UserError(f"{source}: cells: must list distinct choice features (of {', '.join(choices) or 'none'}); "
                        f"got {cells!r}")
    return tuple(cells)


def _zero_shot(files: list[str], source: str) -> list[str]:
    if not all(files):
        raise UserError(f"{source}: zero_shot: must be a list of scenario files (got {files!r})")
    return [str(Path(source).parent / f) for f in files]


def _with_lookup_ranges(features: tuple[FeatureSpec, ...], source: str) -> tuple[FeatureSpec, ...]:
    """Check each lookup's tables against the choice features they name (every value gets
    exactly one factor) and give it the [low, high] range students scale it by."""
    choices = {f.name: f for f in features if f.kind == "choice"}
    out = []
    for f in features:
        if f.kind == "lookup":
            low = high = 1.0
            for feature, table in f.factors:
                where = f"{source}: features.{f.name}.factors.{feature}"
                if feature not in choices:
                    raise UserError(f"{where}: '{feature}' is not a choice feature of this scenario; "
                                    f"name one of {', '.join(choices) or '(none)'}")
                keys, values = {v for v, _ in table}, set(choices[feature].texts)
                if keys != values:
                    raise UserError(f"{where}: needs exactly one factor per value of {feature}; "
                                    f"missing {sorted(values - keys)}, unknown {sorted(keys - values)}")
                products = [x * y for x in (low, high) for _, y in table]
                low, high = min(products), max(products)
            f = FeatureSpec(f.name, f.kind, {}, low=low, high=high, format=f.format, factors=f.factors)
        out.append(f)
    return tuple(out)


def _as_id(value: object) -> object:
    """A value id as the features' `values` read it (an unquoted 2 is the id '2')."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _example(raw: ExampleEntry, i: int, features: tuple[FeatureSpec, ...], options, where: str) -> Example:
    where = f"{where}.examples[{i}]"
    if raw.answer not in {o.id for o in options}:
        raise UserError(f"{where}.answer: {raw.answer!r} is not an option id; use one of "
                        f"{', '.join(o.id for o in options)}")
    names = [f.name for f in features]
    for key in raw.state:
        if key not in names:
            raise UserError(f"{where}.state.{key}: not a feature of this scenario; "
                            f"{did_you_mean(key, names) or 'features: ' + ', '.join(names)}")
    state = {}
    for f in features:
        if f.kind == "lookup":
            continue  # derived from the state's other values below
        if f.name not in raw.state:
            raise UserError(f"{where}.state.{f.name}: missing; add it")
        state[f.name] = _example_value(raw.state[f.name], f, f"{where}.state.{f.name}")
    state = {f.name: f.look_up(state) if f.kind == "lookup" else state[f.name] for f in features}
    return Example(state, raw.answer, raw.probability, raw.explanation)


def _example_value(value, f: FeatureSpec, where: str):
    if f.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where}: must be a finite number (got {value!r})")
        return value
    if f.kind == "set" and not isinstance(value, list):
        raise UserError(f"{where}: must be a list of {f.name} values, e.g. [{next(iter(f.texts))}] (got {value!r})")
    if f.kind == "choice" and isinstance(value, (list, dict)):
        raise UserError(f"{where}: must be one value of {f.name}, e.g. {next(iter(f.texts))} (got {value!r})")
    value = [_as_id(v) for v in value] if f.kind == "set" else _as_id(value)
    unknown = [v for v in (value if f.kind == "set" else [value]) if v not in f.texts]
    if unknown:
        hint = did_you_mean(unknown[0], f.texts) or f"values of {f.name}: {', '.join(f.texts)}"
        raise UserError(f"{where}: unknown value(s) {unknown}; {hint}")
    return value


def _paraphrase(raw: Wording, i: int, features: tuple[FeatureSpec, ...], where: str) -> tuple[str, str]:
    """Another wording: its own intro and case, describing every feature, as the canonical case does."""
    where = f"{where}.paraphrases[{i}]"
    try:
        raw.case.format(**{f.name: "x" for f in features})
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"{where}.case: bad placeholder {err}; use {{feature_name}} only") from None
    shown = {f.name for f in features if "{" + f.name + "}" in raw.case}
    # A shown lookup (e.g. a payoff) describes the choice features it is derived from.
    shown |= {name for f in features if f.kind == "lookup" and f.name in shown for name, _ in f.factors}
    missing = [f.name for f in features if f.name not in shown]
    if missing:
        raise UserError(f"{where}.case: never shows {', '.join(missing)}; add "
                        + ", ".join("{" + m + "}" for m in missing) + " so it describes the whole state")
    return raw.intro, raw.case


def _check_renders(s: Scenario, where: str) -> None:
    placeholders = {f.name: "x" for f in s.features}
    try:
        s.case.format(**placeholders)
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"{where}.case: bad placeholder {err}; use {{feature_name}} only") from None


def _check_feasible(s: Scenario, source: str) -> None:
    """Fail early when a feature's `min` can never be met under the conflicts."""
    for f in s.features:
        if f.kind not in SAMPLED_KINDS or len(f.texts) > 16:
            continue  # brute force is cheap only for small groups
        best = max(
            (len(c) for r in range(len(f.texts), -1, -1)
             for c in itertools.combinations(f.texts, r)
             if not any(s.in_conflict(a, b) for a, b in itertools.combinations(c, 2))),
            default=0,
        )
        if best < f.min:
            raise UserError(
                f"{source}: features.{f.name}.min is {f.min} but its conflicts allow at most "
                f"{best} values together; lower `min` or relax `conflicts`"
            )


def check_stability_settings(s: Stability, scenario: Scenario) -> None:
    """The stability params that only make sense together or against the scenario, each a
    one-line error naming the param."""
    if s.repeats < 2:
        raise UserError(f"stability.repeats: {s.repeats} repeat(s) cannot show any spread; set it to 2 or more")
    if s.temperature == 0:
        raise UserError(f"stability.temperature: 0 decodes greedily, so the {s.repeats} repeats would be "
                        "identical and measure nothing; set it above 0 (e.g. 0.7)")
    if s.paraphrases < 2:
        raise UserError(f"stability.paraphrases: {s.paraphrases} wording(s) cannot vary the prompt; "
                        "set it to 2 or more (the canonical prompt counts as one)")
    if s.paraphrases > scenario.wordings:
        raise UserError(f"stability.paraphrases: {s.paraphrases} but scenario '{scenario.name}' has "
                        f"{scenario.wordings} wordings (its prompt plus prompt.paraphrases); lower it or add "
                        "paraphrases to the scenario file")
    orders = math.factorial(len(scenario.examples)) - 1
    if s.shot_orders > orders:
        raise UserError(f"stability.shot_orders: {s.shot_orders} but the scenario's "
                        f"{len(scenario.examples)} worked examples have only {orders} other orders; lower it")
