"""Simulation files (simulations/*.yaml) are data: validated here, each error one line
naming the key and the fix (unknown keys with a did-you-mean hint, core.config)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from ..core.config import (Section, VersionedFile, check_version, one_line_error, read_yaml, reject_nan,
                           rule_error)
from ..core.errors import UserError

# The context bits of a market visitor at a tick, as the market's clock and stalls produce them;
# their ids are the scenario's (ice_cream.yaml), "weather" standing for the day's weather.
CONTEXT_BITS = ("hungry", "after_lunch", "after_work", "weather", "discount", "truck_nearby")


class Clock(Section):
    open: float = Field(ge=0, le=24)
    close: float = Field(ge=0, le=24)
    tick_minutes: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.close <= self.open:
            raise rule_error(f"close ({self.close:g}) must be after open ({self.open:g}); swap them or fix one")
        return self

    @property
    def ticks(self) -> int:
        return int(round((self.close - self.open) * 60 / self.tick_minutes))


class Persona(Section):
    traits: list[str] = Field(min_length=1)
    share: float = Field(gt=0)


class Visitors(Section):
    # until_bought: a visitor who bought decides no more (one ice cream an evening at most);
    # every_tick: every present visitor decides every tick, buying again as often as the decider says
    decide: Literal["until_bought", "every_tick"] = "until_bought"
    stay_ticks: tuple[int, int]
    workers: float = Field(ge=0, le=1)
    workers_from: float = Field(ge=0, le=24)   # hour from which the workers arrive
    after_work_hours: float = Field(gt=0)
    personas: list[Persona] = Field(min_length=1)


class Stall(Section):
    sells: Literal["ice_cream", "food", "drinks", "gifts"]


class Meals(Section):
    lunch: tuple[float, float]
    after_lunch_hours: float = Field(gt=0)
    hungry_after_hours: float = Field(gt=0)
    eat_probability: float = Field(ge=0, le=1)


class Temperature(Section):
    at_open: tuple[float, float]   # the day's temperature at opening, uniform in this range (degrees C)
    per_hour: float                # its change per hour after opening (negative: the evening cools)


class Price(Section):
    base: tuple[float, float]   # the day's price of an ice cream, uniform in this range
    discount: float = Field(gt=0, le=1)                 # the price's factor while the discount holds


class Numbers(Section):
    """Number features of the scenario the market fills in at every decision (each needs a
    number feature of that name in the scenario, and the scenario's number features all need
    one here): values are rounded to the feature's step and clipped to its range."""
    temperature: Temperature | None = None
    minutes_since_meal: bool = False   # minutes since the visitor last ate (lunch, food or an ice cream)
    price: Price | None = None

    def names(self) -> list[str]:
        return [n for n in ("temperature", "minutes_since_meal", "price") if getattr(self, n)]


class MarketConfig(VersionedFile):
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
    numbers: Numbers = Numbers()   # none by default: the states repeat (christmas_market.yaml)

    @field_validator("stalls")
    @classmethod
    def _one_ice_cream_stall(cls, stalls: dict[str, Stall]) -> dict[str, Stall]:
        sellers = [name for name, s in stalls.items() if s.sells == "ice_cream"]
        if len(sellers) != 1:
            raise rule_error(f"exactly one stall must sell ice_cream (got {len(sellers)}: {', '.join(sellers) or 'none'})")
        return stalls

    @model_validator(mode="after")
    def _workers_while_open(self):
        w, c = self.visitors.workers_from, self.clock
        if not c.open <= w < c.close:
            raise rule_error(f"visitors.workers_from: {w:g} is outside the opening hours {c.open:g}-{c.close:g}; "
                             "set an hour from clock.open to before clock.close")
        return self


class DilemmaConfig(VersionedFile):
    name: str
    model: Literal["dilemma"]
    scenario: str
    rounds: int = Field(ge=1)
    game: str
    stakes: str
    contexts: dict[str, float]   # a pair's framing, drawn per pair: value -> probability
    partners: dict[str, float]   # the relation of a pair, drawn per pair


# A simulation file: its `model` picks the kind.
SimulationFile = Annotated[Union[MarketConfig, DilemmaConfig], Field(discriminator="model")]
_SIMULATION_FILE = TypeAdapter(SimulationFile)


def load_simulation(path: str | Path) -> MarketConfig | DilemmaConfig:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: simulation file not found; list files under simulations/ in simulate.simulations")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: must be a mapping of keys (name, model, scenario, ...)")
    check_version(raw, str(path))  # before `model`: a later format may know models this one does not
    reject_nan(raw, "", str(path))
    try:
        return _SIMULATION_FILE.validate_python(raw)
    except ValidationError as err:
        raise UserError(one_line_error(err, str(path), SimulationFile)) from None


def check_against_scenario(config, scenario, path) -> None:
    """Every feature value the simulation names must exist in the scenario."""
    texts = {f.name: f.texts for f in scenario.features if f.kind in ("set", "choice")}
    if isinstance(config, MarketConfig):
        for i, persona in enumerate(config.visitors.personas):
            clash = [(a, b) for a in persona.traits for b in persona.traits if a < b and scenario.in_conflict(a, b)]
            if clash:
                raise UserError(f"{path}: visitors.personas[{i}]: {clash[0][0]} and {clash[0][1]} conflict in "
                                f"scenario '{scenario.name}'; drop one")

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
    if isinstance(config, MarketConfig):
        _check_numbers(config, scenario, path)
    if isinstance(config, MarketConfig):  # a persona the scenario cannot describe would never be asked about
        traits = next(f for f in scenario.features if f.name == "traits")
        for i, persona in enumerate(config.visitors.personas):
            if not traits.min <= len(set(persona.traits)) <= traits.max:
                raise UserError(f"{path}: visitors.personas[{i}]: {len(set(persona.traits))} traits, but scenario "
                                f"'{scenario.name}' describes a person by {traits.min} to {traits.max}; "
                                "change the persona's traits")


def _check_numbers(config: MarketConfig, scenario, path) -> None:
    """The market fills in exactly the scenario's number features."""
    numbers = {f.name for f in scenario.features if f.kind == "number"}
    filled = config.numbers.names()
    for name in filled:
        if name not in numbers:
            raise UserError(f"{path}: numbers.{name}: scenario '{scenario.name}' has no number feature '{name}'; "
                            f"drop it or set `scenario` to one that has it")
    for name in sorted(numbers - set(filled)):
        raise UserError(f"{path}: scenario '{scenario.name}' has a number feature '{name}' the market does not fill; "
                        f"add numbers.{name} (the market fills {', '.join(Numbers.model_fields)})")


def rollout_config(path: str, scenario) -> MarketConfig:
    """generate.rollouts.simulation, checked: a market written for the pipeline's scenario."""
    config = load_simulation(path)
    where = f"generate.rollouts.simulation: {path}"
    if not isinstance(config, MarketConfig):
        raise UserError(f"{where} is a {config.model}; rollouts run a market (model: market)")
    if config.scenario != scenario.name:
        raise UserError(f"{where} is written for scenario '{config.scenario}', the pipeline's is "
                        f"'{scenario.name}'; name a simulation of this scenario")
    check_against_scenario(config, scenario, path)
    return config
