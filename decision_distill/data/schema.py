"""The dataset contract shared by every stage after `generate`.

A decisions dataset is a Parquet file plus a `features.json` beside it that says
what the columns mean. Students, splits and evaluation read only these two, so
they work the same on teacher-generated and imported decisions.

Columns of the Parquet file:
  state_id      int64, unique per state
  <feature>     one column per feature: list<str> for kind "set",
                str for kind "choice", float64 for kind "number"
  p_<option>    float64 per answer option, the teacher's distribution over the
                options (sums to 1); null where the readout failed
  ok            bool, False where the teacher's answer could not be read
  option_mass   float64, raw probability mass the options received (token readout)
  logodds       float64, log(p_action / (1 - p_action)), p_action = first option
  question      str, the state's question text (absent for imported data)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import write_json
from ..core.errors import UserError


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "set": any subset of values; "choice": exactly one value; "number": a float
    values: tuple[str, ...] = ()  # for set / choice
    low: float | None = None  # for number
    high: float | None = None

    def scale(self) -> tuple[float, float]:
        """A number feature's (centre, half-width), mapping [low, high] onto [-1, 1]: how the
        students' encoding and the effects' design read it; identity when no range is known."""
        if self.low is None or self.high is None or self.high == self.low:
            return (self.low or 0.0), 1.0
        return (self.low + self.high) / 2, (self.high - self.low) / 2


@dataclass(frozen=True)
class Schema:
    features: tuple[Feature, ...]
    options: tuple[str, ...]  # answer option ids; the first one is "the action"
    action: str = "action"
    extra: dict = field(default_factory=dict)

    @property
    def prob_columns(self) -> list[str]:
        return [f"p_{o}" for o in self.options]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict:
        return {
            "action": self.action,
            "options": list(self.options),
            "features": [
                {k: v for k, v in asdict(f).items() if v not in (None, ())} for f in self.features
            ],
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Schema":
        features = tuple(
            Feature(
                name=f["name"],
                kind=f["kind"],
                values=tuple(f.get("values", ())),
                low=f.get("low"),
                high=f.get("high"),
            )
            for f in data["features"]
        )
        return cls(
            features=features,
            options=tuple(data["options"]),
            action=data.get("action", "action"),
            extra=data.get("extra", {}),
        )

    def save(self, path: str | os.PathLike) -> None:
        write_json(self.to_json(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Schema":
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: feature schema not found; run the generate stage first")
        return cls.from_json(json.loads(path.read_text()))


def teacher_probs(frame: pd.DataFrame, options: list[str]) -> np.ndarray:
    """The teacher's P(option | state), [N, K], from a decisions frame's p_<option> columns."""
    return frame[[f"p_{o}" for o in options]].to_numpy(dtype=np.float64)
