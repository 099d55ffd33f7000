"""The scenario file format (scenarios/*.yaml) as pydantic models: its keys, their types, and
the rules that stay inside one feature, one option list or one example. Unknown keys are
refused everywhere, with a did-you-mean hint (core.config.one_line_error).

The rules that tie parts of the file together (a lookup naming choice features, conflicts
and examples naming values, the prompt's placeholders) are checked while the validated
file becomes a Scenario, in decision_distill.data.scenario_file.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..core.config import Section, VersionedFile, rule_error

# strict: a number is not a text and a text is not a number, as the hand-written checks
# before these models had it (YAML 1.2 already keeps `yes` a string).
STRICT = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


def _number_as_text(value: object) -> object:
    """YAML reads an unquoted 0 or 2.5 as a number: as a value id or a text it is that word."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _finite_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise rule_error(f"must be a finite number (got {value!r})")
    return float(value)


def _probability(value: object) -> float:
    value = _finite_number(value)
    if not 0 <= value <= 1:
        raise rule_error(f"must be a probability, 0 to 1 (got {value:g})")
    return value


Label = Annotated[str, BeforeValidator(_number_as_text)]  # a value id, or the text shown for it
Number = Annotated[float, BeforeValidator(_finite_number)]
Probability = Annotated[float, BeforeValidator(_probability)]


def _renders_a_number(template: str) -> str:
    try:
        template.format(value=1.5)
    except (KeyError, IndexError, ValueError) as err:
        raise rule_error(f"bad placeholder {err}; use {{value}}, e.g. '{{value:.2f}} EUR'") from None
    return template


class _Strict(Section):
    model_config = STRICT


class _Values(_Strict):
    """A feature drawn from named values: value id -> the text the teacher reads."""
    values: dict[Label, Label]

    @field_validator("values")
    @classmethod
    def _not_empty(cls, values: dict[str, str]) -> dict[str, str]:
        if not values:
            raise rule_error("empty; list at least one value")
        return values


class SetFeature(_Values):
    kind: Literal["set"]
    min: int
    max: int

    @model_validator(mode="after")
    def _sizes(self):
        if not 0 <= self.min <= self.max <= len(self.values):
            raise rule_error(f"needs 0 <= min <= max <= {len(self.values)} values (got {self.min}, {self.max})")
        return self


class ChoiceFeature(_Values):
    kind: Literal["choice"]


class NumberFeature(_Strict):
    kind: Literal["number"]
    low: Number
    high: Number
    step: Number = 1.0
    format: str = "{value:g}"

    _format = field_validator("format")(_renders_a_number)

    @model_validator(mode="after")
    def _range(self):
        if not (self.low <= self.high and self.step > 0):
            raise rule_error(f"needs low <= high and step > 0 (got low {self.low:g}, high {self.high:g}, "
                             f"step {self.step:g})")
        return self


class LookupFeature(_Strict):
    """A number derived from choice features: the product of one factor per named feature."""
    kind: Literal["lookup"]
    factors: dict[Label, dict[Label, Number]]  # choice feature -> its value -> factor
    format: str = "{value:g}"

    _format = field_validator("format")(_renders_a_number)

    @field_validator("factors")
    @classmethod
    def _tables(cls, factors: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if not factors:
            raise rule_error("empty; name at least one choice feature and its value -> number table")
        for feature, table in factors.items():
            if not table:
                raise rule_error(f"{feature} is empty; map each value of {feature} to a number")
        return factors


Feature = Annotated[Union[SetFeature, ChoiceFeature, NumberFeature, LookupFeature], Field(discriminator="kind")]


class OptionEntry(_Strict):
    id: str
    text: str  # what follows the prompt: one token for the token readout


class ExampleEntry(_Strict):
    state: dict[str, Any]  # checked against the features by scenario_file
    answer: str
    probability: Probability | None = None
    explanation: str | None = None


class Wording(_Strict):
    intro: str
    case: str


class PromptSection(_Strict):
    intro: str
    case: str
    joiner: Label = ", "
    examples: list[ExampleEntry] | None = None
    verbalized_key: Label = "p"
    paraphrases: list[Wording] | None = None


class ScenarioFile(VersionedFile):
    model_config = STRICT

    name: Label | None = None    # default: the file's name
    action: Label | None = None  # default: the first option's id
    features: dict[str, Feature]
    conflicts: list[list[Label]] | None = None  # pairs of value ids
    options: list[OptionEntry]
    prompt: PromptSection
    cells: list[str] | None = None
    zero_shot: list[str] | None = None

    @field_validator("features")
    @classmethod
    def _some_features(cls, features: dict) -> dict:
        if not features:
            raise rule_error("empty; define at least one feature")
        return features

    @field_validator("options")
    @classmethod
    def _options(cls, options: list[OptionEntry]) -> list[OptionEntry]:
        if len(options) < 2:
            raise rule_error("needs at least two answer options")
        ids = [o.id for o in options]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise rule_error(f"ids must be unique; {', '.join(map(repr, twice))} is listed more than once")
        return options
