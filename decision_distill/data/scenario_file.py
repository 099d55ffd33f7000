"""Scenario files (scenarios/*.yaml): read and validated into a Scenario, each mistake a
one-line error naming the key and the fix; and the stability params that are only
checked against a scenario.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from ..core.errors import UserError
from ..core.params import Stability
from .scenario import Example, FeatureSpec, Option, SAMPLED_KINDS, Scenario


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    if not path.exists():
        known = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.exists() else []
        hint = f" (known: {', '.join(known)})" if known else ""
        raise UserError(f"scenario: {path} not found{hint}; set `scenario` in params.yaml")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text())  # YAML 1.2: `yes` stays a string
    except YAMLError:
        raise UserError(f"scenario: {path} is not valid YAML; fix its syntax") from None
    return parse_scenario(raw, str(path))


def _need(raw: dict, key: str, kind: type | tuple, where: str):
    if not isinstance(raw, dict) or key not in raw:
        raise UserError(f"{where}.{key}: missing; add it to the scenario file")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}.{key}: must be {names} (got {value!r})")
    return value


def _parse_feature(name: str, raw: dict, where: str) -> FeatureSpec:
    kind = _need(raw, "kind", str, where)
    if kind == "lookup":
        factors = _need(raw, "factors", dict, where)
        if not factors:
            raise UserError(f"{where}.factors: empty; name at least one choice feature and its value -> number table")
        tables = []
        for feature, table in factors.items():
            if not isinstance(table, dict) or not table:
                raise UserError(f"{where}.factors.{feature}: must map each value of {feature} to a number")
            for value, factor in table.items():
                if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
                    raise UserError(f"{where}.factors.{feature}.{value}: must be a finite number (got {factor!r})")
            tables.append((str(feature), tuple((str(v), float(x)) for v, x in table.items())))
        return FeatureSpec(name, kind, {}, factors=tuple(tables), format=str(raw.get("format", "{value:g}")))
    if kind == "number":
        low = float(_need(raw, "low", (int, float), where))
        high = float(_need(raw, "high", (int, float), where))
        step = float(raw.get("step", 1.0))
        if not (math.isfinite(low) and math.isfinite(high) and low <= high and step > 0):
            raise UserError(f"{where}: needs finite low <= high and step > 0")
        return FeatureSpec(name, kind, {}, low=low, high=high, step=step,
                           format=str(raw.get("format", "{value:g}")))
    if kind not in SAMPLED_KINDS:
        raise UserError(f"{where}.kind: must be set, choice, number or lookup (got {kind!r})")
    texts = _need(raw, "values", dict, where)
    if not texts:
        raise UserError(f"{where}.values: empty; list at least one value")
    texts = {str(k): str(v) for k, v in texts.items()}
    lo, hi = (1, 1) if kind == "choice" else (
        int(_need(raw, "min", int, where)), int(_need(raw, "max", int, where)))
    if not 0 <= lo <= hi <= len(texts):
        raise UserError(f"{where}: needs 0 <= min <= max <= {len(texts)} values (got {lo}, {hi})")
    return FeatureSpec(name, kind, texts, min=lo, max=hi)


def parse_scenario(raw: object, source: str) -> Scenario:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: must be a mapping")
    name = str(raw.get("name", Path(source).stem))
    feats_raw = _need(raw, "features", dict, source)
    features = _with_lookup_ranges(tuple(_parse_feature(k, v, f"{source}: features.{k}")
                                         for k, v in feats_raw.items()), source)
    all_values = [v for f in features for v in f.texts]
    dupes = {v for v in all_values if all_values.count(v) > 1}
    if dupes:
        raise UserError(f"{source}: features: value ids must be unique across features ({sorted(dupes)})")

    conflicts = []
    for i, pair in enumerate(raw.get("conflicts") or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in all_values for p in pair)):
            raise UserError(f"{source}: conflicts[{i}]: must be a pair of known value ids (got {pair!r})")
        conflicts.append(frozenset(map(str, pair)))

    opts_raw = _need(raw, "options", list, source)
    if len(opts_raw) < 2:
        raise UserError(f"{source}: options: needs at least two answer options")
    options = tuple(
        Option(str(_need(o, "id", str, f"{source}: options[{i}]")),
               str(_need(o, "text", str, f"{source}: options[{i}]")))
        for i, o in enumerate(opts_raw)
    )
    if len({o.id for o in options}) != len(options):
        raise UserError(f"{source}: options: ids must be unique")

    prompt = _need(raw, "prompt", dict, source)
    where = f"{source}: prompt"
    scenario = Scenario(
        name=name,
        action=str(raw.get("action", options[0].id)),
        features=features,
        conflicts=tuple(conflicts),
        options=options,
        intro=str(_need(prompt, "intro", str, where)),
        case=str(_need(prompt, "case", str, where)),
        joiner=str(prompt.get("joiner", ", ")),
        examples=tuple(_parse_example(e, i, features, options, where)
                       for i, e in enumerate(prompt.get("examples") or [])),
        verbalized_key=str(prompt.get("verbalized_key", "p")),
        paraphrases=tuple(_parse_paraphrase(p, i, features, where)
                          for i, p in enumerate(prompt.get("paraphrases") or [])),
    )
    _check_renders(scenario, where)
    _check_feasible(scenario, source)
    return dataclasses.replace(scenario, cells=_parse_cells(raw, features, source),
                               zero_shot=_parse_zero_shot(raw, source))


def _parse_cells(raw: dict, features: tuple[FeatureSpec, ...], source: str) -> tuple[str, ...]:
    cells = raw.get("cells") or []
    choices = [f.name for f in features if f.kind == "choice"]
    if not isinstance(cells, list) or any(c not in choices for c in cells) or len(set(cells)) != len(cells):
        raise UserError(f"{source}: cells: must list distinct choice features (of {', '.join(choices) or 'none'}); "
                        f"got {cells!r}")
    return tuple(cells)


def _parse_zero_shot(raw: dict, source: str) -> tuple[str, ...]:
    files = raw.get("zero_shot") or []
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise UserError(f"{source}: zero_shot: must be a list of scenario files (got {files!r})")
    return tuple(str(Path(source).parent / f) for f in files)


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


def _parse_example(raw, i, features, options, where) -> Example:
    where = f"{where}.examples[{i}]"
    state = _need(raw, "state", dict, where)
    answer = str(_need(raw, "answer", str, where))
    if answer not in {o.id for o in options}:
        raise UserError(f"{where}.answer: {answer!r} is not an option id")
    for f in features:
        if f.kind == "lookup":
            continue  # derived from the state's other values below
        if f.name not in state:
            raise UserError(f"{where}.state.{f.name}: missing")
        values = state[f.name] if f.kind == "set" else [state[f.name]] if f.kind == "choice" else []
        unknown = [v for v in values if v not in f.texts]
        if unknown:
            raise UserError(f"{where}.state.{f.name}: unknown value(s) {unknown}")
    prob = raw.get("probability")
    state = {f.name: f.look_up(state) if f.kind == "lookup" else state[f.name] for f in features}
    return Example(state, answer, None if prob is None else float(prob), raw.get("explanation"))


def _parse_paraphrase(raw, i, features, where) -> tuple[str, str]:
    """Another wording: its own intro and case, describing every feature, as the canonical case does."""
    where = f"{where}.paraphrases[{i}]"
    intro, case = str(_need(raw, "intro", str, where)), str(_need(raw, "case", str, where))
    try:
        case.format(**{f.name: "x" for f in features})
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"{where}.case: bad placeholder {err}; use {{feature_name}} only") from None
    shown = {f.name for f in features if "{" + f.name + "}" in case}
    # A shown lookup (e.g. a payoff) describes the choice features it is derived from.
    shown |= {name for f in features if f.kind == "lookup" and f.name in shown for name, _ in f.factors}
    missing = [f.name for f in features if f.name not in shown]
    if missing:
        raise UserError(f"{where}.case: never shows {', '.join(missing)}; add "
                        + ", ".join("{" + m + "}" for m in missing) + " so it describes the whole state")
    return intro, case


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
