"""Scenarios are data: a YAML file defines the state features, conflicts, answer
options and prompt. This module loads one, samples valid states from it, and
renders prompts. Nothing here knows about ice cream or assumes two options.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML, YAMLError

from .errors import UserError
from .schema import Feature, Schema

State = dict  # feature name -> list[str] (set) | str (choice) | float (number, lookup)
SAMPLED_KINDS = ("set", "choice")  # features whose values are ids with prompt texts


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str
    texts: dict[str, str]  # value id -> prompt text (set / choice)
    min: int = 1
    max: int = 1
    low: float = 0.0
    high: float = 0.0
    step: float = 1.0
    format: str = "{value}"
    factors: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()  # lookup: (choice feature, value -> factor)

    def to_schema(self) -> Feature:
        if self.kind in ("number", "lookup"):  # students see a derived number like any other number
            return Feature(self.name, "number", low=self.low, high=self.high)
        return Feature(self.name, self.kind, tuple(self.texts))

    def look_up(self, state: State) -> float:
        """A lookup feature's value: the product of one factor per named choice feature."""
        value = 1.0
        for feature, table in self.factors:
            value *= dict(table)[state[feature]]
        return float(round(value, 10))


@dataclass(frozen=True)
class Option:
    id: str
    text: str


@dataclass(frozen=True)
class Example:
    state: State
    answer: str
    probability: float | None
    explanation: str | None


@dataclass(frozen=True)
class Scenario:
    name: str
    action: str
    features: tuple[FeatureSpec, ...]
    conflicts: tuple[frozenset[str], ...]
    options: tuple[Option, ...]
    intro: str
    case: str
    joiner: str
    examples: tuple[Example, ...]
    verbalized_key: str
    # Other wordings of the same question, (intro, case) each; the canonical
    # intro and case above are wording 0. The stability stage reads them.
    paraphrases: tuple[tuple[str, str], ...] = ()
    # The choice features whose value combinations the games stage reports on, one
    # cell each (e.g. game x context); empty: the scenario has no per-cell report.
    cells: tuple[str, ...] = ()
    # Scenario files no student trains on, scored zero-shot by the teacher and the
    # small LMs in the games stage (paths relative to this scenario's file).
    zero_shot: tuple[str, ...] = ()

    # ---- the dataset contract -------------------------------------------------
    def schema(self) -> Schema:
        return Schema(
            features=tuple(f.to_schema() for f in self.features),
            options=tuple(o.id for o in self.options),
            action=self.action,
            extra={"scenario": self.name},
        )

    # ---- prompts --------------------------------------------------------------
    def describe(self, state: State) -> str:
        """The state's case text, ending where the answer begins."""
        return "".join(self.describe_parts(state))

    def describe_parts(self, state: State) -> tuple[str, str]:
        """The case text as (head, tail), split before the last feature's value.

        States that differ only in that feature share the head, so the scorer
        runs each distinct head through the teacher once. The split is part of
        the prompt's definition: both halves are tokenized separately, always.
        """
        head_template, tail_template = self._split_case()
        fields = self._fields(state)
        head = head_template.format(**fields)
        stripped = head.rstrip()  # whitespace belongs to the next word's token
        return stripped, head[len(stripped):] + tail_template.format(**fields)

    def _split_case(self) -> tuple[str, str]:
        cut = max(self.case.rfind("{" + f.name + "}") for f in self.features)
        return (self.case[:cut], self.case[cut:]) if cut > 0 else ("", self.case)

    def _fields(self, state: State) -> dict[str, str]:
        fields = {}
        for f in self.features:
            value = state[f.name]
            if f.kind == "set":
                fields[f.name] = self.joiner.join(f.texts[v] for v in value)
            elif f.kind == "choice":
                fields[f.name] = f.texts[value]
            else:
                fields[f.name] = f.format.format(value=value)
        return fields

    def token_prefix(self) -> str:
        """Intro plus worked examples answered with the option text: shared by every state."""
        shots = [
            self.describe(ex.state) + self.option(ex.answer).text for ex in self.examples
        ]
        return "\n\n".join([self.intro, *shots]) + "\n\n"

    def short_prefix(self) -> str:
        """The intro alone, no worked examples: the plain prompt the small LM student
        learns to answer like the teacher does after its examples."""
        return self.intro + "\n\n"

    def verbalized_prefix(self) -> str:
        """Intro plus worked examples answered with the JSON the verbalized readout parses."""
        shots = [
            self.describe(ex.state) + " " + self.verbalized_answer(ex) for ex in self.examples
        ]
        return "\n\n".join([self.intro, *shots]) + "\n\n"

    def verbalized_answer(self, ex: Example) -> str:
        return json.dumps({self.verbalized_key: ex.probability, "explanation": ex.explanation})

    def option(self, option_id: str) -> Option:
        return next(o for o in self.options if o.id == option_id)

    @property
    def wordings(self) -> int:
        """How many wordings of the prompt the scenario has, the canonical one included."""
        return 1 + len(self.paraphrases)

    def reworded(self, wording: int, example_order: tuple[int, ...] | None = None) -> "Scenario":
        """The same scenario asked in wording `wording` (0 = canonical), with its worked
        examples in `example_order` (default: as written)."""
        intro, case = ((self.intro, self.case), *self.paraphrases)[wording]
        order = range(len(self.examples)) if example_order is None else example_order
        return dataclasses.replace(self, intro=intro, case=case,
                                   examples=tuple(self.examples[i] for i in order))

    # ---- sampling -------------------------------------------------------------
    def sample_states(self, n: int, seed: int) -> list[State]:
        """`n` distinct valid states, reproducible from `seed`.

        States come from one seeded stream and duplicates are skipped, so the
        first n states are the same whatever n is: asking for more states later
        extends the dataset instead of replacing it.
        """
        rng = np.random.default_rng(seed)
        seen: set[str] = set()
        states: list[State] = []
        misses_in_a_row = 0
        while len(states) < n:
            state = self._sample_one(rng)
            key = state_key(state)
            if key in seen:
                misses_in_a_row += 1
                if misses_in_a_row > 5000:  # the state space is (nearly) exhausted
                    raise UserError(
                        f"generate.states: asked for {n} distinct states but scenario "
                        f"'{self.name}' yielded only {len(states)}; lower generate.states"
                    )
                continue
            misses_in_a_row = 0
            seen.add(key)
            states.append(state)
        return states

    def _sample_one(self, rng: np.random.Generator) -> State:
        state: State = {}
        chosen: set[str] = set()
        for f in self.features:
            if f.kind == "number":
                steps = int(round((f.high - f.low) / f.step))
                state[f.name] = float(round(f.low + f.step * rng.integers(0, steps + 1), 10))
            elif f.kind in SAMPLED_KINDS:
                state[f.name] = self._draw_values(f, rng, chosen)
                chosen.update([state[f.name]] if f.kind == "choice" else state[f.name])
        return self.with_lookups(state)

    def with_lookups(self, state: State) -> State:
        """`state` with its lookup features computed from the values it drew; feature order kept."""
        return {f.name: f.look_up(state) if f.kind == "lookup" else state[f.name] for f in self.features}

    def _draw_values(self, f: FeatureSpec, rng: np.random.Generator, chosen: set[str]):
        """Draw a size, then add values in random order, skipping any that conflict."""
        values = list(f.texts)
        for _ in range(1000):
            size = int(rng.integers(f.min, f.max + 1))
            picked: list[str] = []
            for idx in rng.permutation(len(values)):
                v = values[idx]
                if not any(self.in_conflict(v, other) for other in [*chosen, *picked]):
                    picked.append(v)
                if len(picked) == size:
                    break
            if len(picked) == size:
                return picked[0] if f.kind == "choice" else sorted(picked, key=values.index)
        raise UserError(
            f"scenario '{self.name}': features.{f.name} cannot be sampled under its conflicts; "
            "relax `conflicts` or lower its `min`"
        )

    def all_states(self) -> list[State]:
        """Every valid state, in a fixed order: the product of the choice features' values
        (lookups derived), without conflicting ones. For scenarios scored exhaustively."""
        free = [f for f in self.features if f.kind not in ("choice", "lookup")]
        if free:
            raise UserError(f"scenario '{self.name}': features.{free[0].name} is a {free[0].kind} feature; "
                            "only choice and lookup features can be enumerated")
        choices = [f for f in self.features if f.kind == "choice"]
        states = []
        for values in itertools.product(*(list(f.texts) for f in choices)):
            state = self.with_lookups(dict(zip((f.name for f in choices), values)))
            if not self.violates_conflicts(state):
                states.append(state)
        return states

    def in_conflict(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.conflicts

    def violates_conflicts(self, state: State) -> bool:
        values = [v for f in self.features if f.kind in SAMPLED_KINDS
                  for v in ([state[f.name]] if f.kind == "choice" else state[f.name])]
        return any(self.in_conflict(a, b) for a, b in itertools.combinations(values, 2))


def state_key(state: State) -> str:
    return json.dumps(state, sort_keys=True)


# ---- loading and validation ---------------------------------------------------

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
