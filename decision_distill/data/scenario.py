"""Scenarios are data: a YAML file defines the state features, conflicts, answer
options and prompt. This module holds a loaded scenario, samples valid states from
it, and renders prompts (the file itself is read by decision_distill.data.scenario_file).
Nothing here knows about ice cream or assumes two options.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass

import numpy as np

from ..core.errors import UserError
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
            state = self.sample_one(rng)
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

    def sample_one(self, rng: np.random.Generator) -> State:
        """One valid state drawn from `rng` (duplicates of earlier draws included)."""
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

    def state_problem(self, state: State) -> str | None:
        """Why `state` is not one this scenario can produce (None: it can): a missing feature, an
        unknown or repeated value, a set outside its min..max, a number outside its range, a
        conflict. What sample_one draws always passes; a simulation building its own states
        checks them here."""
        for f in self.features:
            if f.kind == "lookup":
                continue  # derived from the choice features, never drawn
            if f.name not in state:
                return f"no '{f.name}'"
            value = state[f.name]
            if f.kind == "number":
                if not f.low <= float(value) <= f.high:
                    return f"{f.name}: {value} outside {f.low:g}..{f.high:g}"
                continue
            values = list(value) if f.kind == "set" else [value]
            unknown = [v for v in values if v not in f.texts]
            if unknown:
                return f"{f.name}: unknown value {unknown[0]!r}"
            if f.kind == "set" and not (f.min <= len(set(values)) == len(values) <= f.max):
                return f"{f.name}: {len(values)} value(s) {values}, the scenario draws {f.min}..{f.max} distinct ones"
        return "values in conflict" if self.violates_conflicts(state) else None

    def violates_conflicts(self, state: State) -> bool:
        values = [v for f in self.features if f.kind in SAMPLED_KINDS
                  for v in ([state[f.name]] if f.kind == "choice" else state[f.name])]
        return any(self.in_conflict(a, b) for a, b in itertools.combinations(values, 2))


def state_key(state: State) -> str:
    return json.dumps(state, sort_keys=True)
