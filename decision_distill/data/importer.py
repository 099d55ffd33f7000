"""Import mode of the generate stage: decisions someone already has.

Rows hold the state (categorical, list-of-categories or numeric columns) and the
teacher's probability of the action (or one column per option). No teacher is
loaded. The output follows the same dataset contract as teacher-generated data,
so the same students train and evaluate on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import write_json, write_parquet
from ..core.errors import UserError
from ..core.params import Import
from .schema import Feature, Schema

READERS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def read_table(path: Path) -> pd.DataFrame:
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"import.path: {path.name} has an unknown extension; use .csv, .jsonl or .parquet")
    if not path.exists():
        raise UserError(f"import.path: {path} not found; point it at your decisions file")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, encoding="utf-8")
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError:
        raise UserError(f"import.path: {path} is not UTF-8 text; re-save it as UTF-8") from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"import.path: cannot read {path} as {kind} ({reason})") from None
    if frame.empty:
        raise UserError(f"import.path: {path} holds no rows")
    return frame


def _as_list(value, column: str, row: int) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise UserError(f"import: column '{column}' row {row}: {value!r} is not a JSON list") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"import: column '{column}' row {row}: expected a list of strings, got {value!r}")
    return value


def _looks_like_list(value) -> bool:
    return isinstance(value, (list, np.ndarray)) or (isinstance(value, str) and value.lstrip().startswith("["))


def _feature(frame: pd.DataFrame, column: str) -> tuple[Feature, pd.Series]:
    values = frame[column]
    if values.isna().any():
        row = int(values.isna().to_numpy().argmax())
        raise UserError(f"import: column '{column}' row {row} is empty; fill it or drop the row")
    # One list cell makes it a list column, wherever it is: a cell that is not a list is then
    # an error naming its row, never a silent switch of the whole column to a choice.
    if any(_looks_like_list(v) for v in values):
        lists = pd.Series([_as_list(v, column, i) for i, v in enumerate(values)], index=values.index)
        vocab = sorted({v for items in lists for v in items})
        return Feature(column, "set", tuple(vocab)), lists.map(sorted)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        if not np.isfinite(numbers).all():
            raise UserError(f"import: column '{column}' holds NaN or infinite numbers")
        return Feature(column, "number", low=float(numbers.min()), high=float(numbers.max())), numbers
    as_text = values.astype(str)
    return Feature(column, "choice", tuple(sorted(as_text.unique()))), as_text


def _probabilities(frame: pd.DataFrame, spec: Import) -> np.ndarray:
    columns = [spec.probability] if isinstance(spec.probability, str) else list(spec.probability)
    if len(columns) == 1 and len(spec.options) != 2:
        raise UserError("import.options: a single probability column means two options (action, not); "
                        "list one probability column per option otherwise")
    if len(columns) > 1 and len(columns) != len(spec.options):
        raise UserError(f"import.probability: {len(columns)} columns but {len(spec.options)} options; "
                        "give one column per option")
    for col in columns:
        if col not in frame.columns:
            raise UserError(f"import.probability: column '{col}' not in the file (columns: {', '.join(map(str, frame.columns))})")
    try:
        probs = frame[columns].apply(pd.to_numeric, errors="raise").to_numpy(dtype="float64")
    except (ValueError, TypeError):
        raise UserError(f"import.probability: column(s) {columns} hold non-numbers; use numbers in [0, 1]") from None
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"import.probability: column '{columns[col]}' row {row} is {probs[row, col]}; "
                        "probabilities must lie in [0, 1]")
    if len(columns) == 1:
        return np.column_stack([probs[:, 0], 1.0 - probs[:, 0]])
    sums = probs.sum(1)
    if not np.allclose(sums, 1.0, atol=1e-4):
        row = int(np.argmax(np.abs(sums - 1.0)))
        raise UserError(f"import.probability: row {row} sums to {sums[row]:.4f}; the option columns must sum to 1")
    return probs


def import_decisions(spec: Import, out_dataset: str | Path, out_schema: str | Path, out_metrics: str | Path) -> dict:
    frame = read_table(Path(spec.path))
    missing = [c for c in spec.features if c not in frame.columns]
    if missing:
        raise UserError(f"import.features: column(s) {missing} not in {spec.path} "
                        f"(columns: {', '.join(map(str, frame.columns))})")
    probs = _probabilities(frame, spec)
    features, columns = zip(*(_feature(frame, c) for c in spec.features))
    out = pd.DataFrame({"state_id": np.arange(len(frame), dtype="int64")})
    for feature, values in zip(features, columns):
        out[feature.name] = values.to_numpy()
    for j, option in enumerate(spec.options):
        out[f"p_{option}"] = probs[:, j]
    out["ok"] = True
    out["option_mass"] = np.nan
    with np.errstate(divide="ignore"):
        out["logodds"] = np.log(probs[:, 0]) - np.log1p(-probs[:, 0])
    schema = Schema(tuple(features), tuple(spec.options), action=spec.options[0],
                    extra={"imported_from": Path(spec.path).name})
    metrics = {"states": len(out), "readout": "import", "p_std": float(probs[:, 0].std()),
               "p_mean": float(probs[:, 0].mean()), "option_mass_mean": None, "parse_failures": 0}
    write_parquet(out, out_dataset)
    schema.save(out_schema)
    write_json(metrics, out_metrics)
    return metrics
