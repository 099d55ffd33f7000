"""Scenario states back from a table: the rows of a decisions frame (a split, set features
come back from Parquet as arrays) or a simulation's states frame, as validated state dicts."""

from __future__ import annotations

import pandas as pd

from ..core.errors import UserError
from .scenario import Scenario, State


def states_from_frame(frame: pd.DataFrame, scenario: Scenario) -> list[State]:
    """The scenario state of each row, in the scenario's feature order, lookups derived from the
    row's own values; a one-line error naming the feature when a column is missing or holds a
    value the scenario does not describe (the data was not drawn from this scenario)."""
    drawn = [f for f in scenario.features if f.kind != "lookup"]
    for f in drawn:
        if f.name not in frame.columns:
            raise UserError(f"scenario: the states have no '{f.name}' column that {scenario.name} describes; "
                            "set `scenario` to the file the data was generated from")
    columns = {}
    for f in drawn:
        values = frame[f.name].tolist()
        if f.kind == "set":
            values = [[str(v) for v in row] for row in values]
        elif f.kind == "choice":
            values = [str(v) for v in values]
        else:
            values = [float(v) for v in values]
        if f.kind in ("set", "choice"):
            unknown = next((v for row in values for v in (row if f.kind == "set" else [row]) if v not in f.texts),
                           None)
            if unknown is not None:
                raise UserError(f"scenario {scenario.name}: feature '{f.name}': unknown value {unknown!r} (it allows "
                                f"{', '.join(f.texts)}); set `scenario` to the file the data was generated from")
        columns[f.name] = values
    return [scenario.with_lookups(dict(zip(columns, row))) for row in zip(*columns.values())]
