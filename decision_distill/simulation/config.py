"""Simulation files (simulations/*.yaml) are data: validated here, each error one line
naming the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML, YAMLError

from ..core.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Clock(_Strict):
    open: float = Field(ge=0, le=24)
    close: float = Field(ge=0, le=24)
    tick_minutes: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.close <= self.open:
            raise ValueError("close must be after open")
        return self

    @property
    def ticks(self) -> int:
        return int(round((self.close - self.open) * 60 / self.tick_minutes))


class Persona(_Strict):
    traits: list[str] = Field(min_length=1)
    share: float = Field(gt=0)


class Visitors(_Strict):
    # until_bought: a visitor who bought decides no more (one ice cream an evening at most);
    # every_tick: every present visitor decides every tick, buying again as often as the decider says
    decide: Literal["until_bought", "every_tick"] = "until_bought"
    stay_ticks: tuple[int, int]
    workers: float = Field(ge=0, le=1)
    workers_from: float = Field(ge=0, le=24)   # hour from which the workers arrive
    after_work_hours: float = Field(gt=0)
    personas: list[Persona] = Field(min_length=1)


class Stall(_Strict):
    sells: Literal["ice_cream", "food", "drinks", "gifts"]


class Meals(_Strict):
    lunch: tuple[float, float]
    after_lunch_hours: float = Field(gt=0)
    hungry_after_hours: float = Field(gt=0)
    eat_probability: float = Field(ge=0, le=1)


class MarketConfig(_Strict):
    name: str
    model: Literal["market"]
    scenario: str
    clock: Clock
    visitors: Visitors
    stalls: dict[str, Stall]
    meals: Meals
    weather: dict[str, float]
    discount: tuple[float, float]
    price: float = Field(gt=0)
    gamma: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _one_ice_cream_stall(self):
        if sum(s.sells == "ice_cream" for s in self.stalls.values()) != 1:
            raise ValueError("stalls: exactly one stall must sell ice_cream")
        return self

    @model_validator(mode="after")
    def _workers_while_open(self):
        w, c = self.visitors.workers_from, self.clock
        if not c.open <= w < c.close:
            raise ValueError(f"visitors.workers_from: {w:g} is outside the opening hours {c.open:g}-{c.close:g}; "
                             "set an hour from clock.open to before clock.close")
        return self


class DilemmaConfig(_Strict):
    name: str
    model: Literal["dilemma"]
    scenario: str
    rounds: int = Field(ge=1)
    game: str
    stakes: str
    contexts: dict[str, float]   # a pair's framing, drawn per pair: value -> probability
    partners: dict[str, float]   # the relation of a pair, drawn per pair


def load_simulation(path: str | Path) -> MarketConfig | DilemmaConfig:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: simulation file not found; list files under simulations/ in simulate.simulations")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except YAMLError:
        raise UserError(f"{path}: not valid YAML; fix the syntax") from None
    if not isinstance(raw, dict) or raw.get("model") not in ("market", "dilemma"):
        raise UserError(f"{path}: model: must be market or dilemma")
    cls = MarketConfig if raw["model"] == "market" else DilemmaConfig
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        # a check across keys (a model validator) has no location: its message names the key itself
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{path}: {key}: {msg}" if key else f"{path}: {msg}") from None


def check_against_scenario(config, scenario, path) -> None:
    """Every feature value the simulation names must exist in the scenario."""
    texts = {f.name: f.texts for f in scenario.features if f.kind in ("set", "choice")}
    if isinstance(config, MarketConfig):
        for i, persona in enumerate(config.visitors.personas):
            clash = [(a, b) for a in persona.traits for b in persona.traits if a < b and scenario.in_conflict(a, b)]
            if clash:
                raise UserError(f"{path}: visitors.personas[{i}]: {clash[0][0]} and {clash[0][1]} conflict in "
                                f"scenario '{scenario.name}'; drop one")
        from .market import CONTEXT_BITS  # the context ids the market's clock and stalls produce

        named = {"traits": [t for p in config.visitors.personas for t in p.traits],
                 "contexts": [b for b in CONTEXT_BITS if b != "weather"] + [w for w in config.weather if w != "none"]}
    else:
        named = {"game": [config.game], "stakes": [config.stakes], "context": list(config.contexts),
                 "partner": list(config.partners)}
    for feature, values in named.items():
        if feature not in texts:
            raise UserError(f"{path}: scenario '{scenario.name}' has no feature '{feature}'; "
                            f"set `scenario` to the one this simulation is written for")
        for v in values:
            if v not in texts[feature]:
                raise UserError(f"{path}: '{v}' is not a value of {scenario.name}'s feature '{feature}'; "
                                f"use one of {', '.join(texts[feature])}")
    if isinstance(config, MarketConfig):  # a persona the scenario cannot describe would never be asked about
        traits = next(f for f in scenario.features if f.name == "traits")
        for i, persona in enumerate(config.visitors.personas):
            if not traits.min <= len(set(persona.traits)) <= traits.max:
                raise UserError(f"{path}: visitors.personas[{i}]: {len(set(persona.traits))} traits, but scenario "
                                f"'{scenario.name}' describes a person by {traits.min} to {traits.max}; "
                                "change the persona's traits")
