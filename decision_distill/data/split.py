"""The split stage: train / validation / test by state, and the named held-out splits
(split.holdouts) of whole feature combinations no student trains on; and reading a split
back, without the states whose teacher answer could not be read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..core.atomic import atomic_dir, write_parquet
from ..core.errors import UserError
from ..core.params import REGULAR_SPLITS, Split
from .schema import Schema


def _state_keys(frame: pd.DataFrame, schema: Schema) -> pd.Series:
    """Identical states (possible in imported data) must land in the same split."""
    def key(row) -> str:
        return json.dumps([sorted(v) if isinstance(v, (list, np.ndarray)) else v
                           for v in (row[f] for f in schema.feature_names)], default=list)
    return frame.apply(lambda row: key(row), axis=1)


def _values_of(row, schema: Schema) -> set[str]:
    values: set[str] = set()
    for f in schema.features:
        if f.kind == "set":
            values.update(row[f.name])
        elif f.kind == "choice":
            values.add(row[f.name])
    return values


def _holdout_masks(frame: pd.DataFrame, schema: Schema, holdouts: dict[str, list[list[str]]]) -> dict[str, np.ndarray]:
    """Per holdout, which rows contain every value of one of its combinations; holdouts may overlap."""
    known = {v for f in schema.features for v in f.values}
    for name, combos in holdouts.items():
        for i, combo in enumerate(combos):
            unknown = [v for v in combo if v not in known]
            if unknown or not combo:
                raise UserError(f"split.holdouts.{name}[{i}]: unknown or empty value list {unknown or combo}; "
                                "use value ids from features.json")
    values = [_values_of(row, schema) for _, row in frame.iterrows()] if holdouts else []
    return {name: np.array([any(set(c) <= v for c in combos) for v in values], dtype=bool)
            for name, combos in holdouts.items()}


def split_decisions(dataset: str | Path, schema_path: str | Path, spec: Split, out_dir: str | Path) -> dict:
    """Write train/val/test and one `<name>.parquet` per holdout (empty ones too, so the
    outputs never change shape) to `out_dir`; return the row count per split."""
    if spec.val + spec.test >= 1.0:
        raise UserError(f"split.val + split.test is {spec.val + spec.test:g}; it must stay below 1 to leave training data")
    schema = Schema.load(schema_path)
    frame = pd.read_parquet(dataset)
    usable = frame[frame["ok"]].reset_index(drop=True)
    masks = _holdout_masks(usable, schema, spec.holdouts)
    held_out = np.logical_or.reduce([*masks.values(), np.zeros(len(usable), dtype=bool)])
    in_dist = usable[~held_out]
    keys = _state_keys(in_dist, schema)
    unique = keys.unique()
    rng = np.random.default_rng(spec.seed)
    if "reserved_test" in in_dist.columns:  # actively sampled: test is exactly the reserved random states
        return _write_reserved(in_dist, usable, masks, keys, rng, spec, schema_path, out_dir, frame)
    shuffled = unique[rng.permutation(len(unique))]
    n_test = int(round(spec.test * len(unique)))
    n_val = int(round(spec.val * len(unique)))
    assignment = {k: "test" for k in shuffled[:n_test]}
    assignment |= {k: "val" for k in shuffled[n_test : n_test + n_val]}
    return _write(in_dist, usable, masks, keys.map(lambda k: assignment.get(k, "train")), schema_path, out_dir, frame)


def _write_reserved(in_dist, usable, masks, keys, rng, spec: Split, schema_path, out_dir, frame) -> dict:
    """generate.strategy active: the dataset is biased towards where students disagreed, so
    evaluating on a random share of it would be biased too. Test is the reserved random
    sample (decision_distill.teacher.active); val, used only to stop training, is drawn from the rest."""
    reserved = in_dist["reserved_test"].fillna(False).astype(bool).to_numpy()
    if not reserved.any():
        raise UserError("split: the dataset marks no reserved_test states; raise generate.active.reserve above 0")
    rest = keys[~reserved].unique()
    shuffled = rest[rng.permutation(len(rest))]
    val = set(shuffled[: int(round(spec.val * len(rest)))])
    which = pd.Series(np.where(reserved, "test", ["val" if k in val else "train" for k in keys]), index=keys.index)
    return _write(in_dist, usable, masks, which, schema_path, out_dir, frame)


def _write(in_dist, usable, masks, which: pd.Series, schema_path, out_dir, frame) -> dict:
    parts = {name: in_dist[which == name] for name in REGULAR_SPLITS}
    parts |= {name: usable[mask] for name, mask in masks.items()}  # a state in two holdouts is in both
    if len(parts["train"]) == 0:
        raise UserError("split: no training states left; lower split.test / split.val or generate more states")
    with atomic_dir(out_dir) as tmp:
        for name, part in parts.items():
            write_parquet(part.reset_index(drop=True), tmp / f"{name}.parquet")
        shutil.copyfile(schema_path, tmp / "features.json")
    counts = {name: int(len(part)) for name, part in parts.items()}
    counts["dropped_failures"] = int((~frame["ok"]).sum())
    return counts


def usable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose teacher answer could be read (all of them when there is no `ok` column)."""
    if "ok" in frame.columns:
        frame = frame[frame["ok"].fillna(False).astype(bool)]
    return frame


def read_split(path: Path) -> pd.DataFrame:
    """A split's rows whose teacher answer could be read."""
    if not path.exists():
        raise UserError(f"{path}: not found; run the split stage first")
    return usable_rows(pd.read_parquet(path))


def read_held_out(splits_dir: Path, schema: Schema, holdouts: Iterable[str] = ()) -> dict[str, pd.DataFrame]:
    """The test split and each named holdout split (split.holdouts), without failed readouts;
    holdouts with no usable rows are left out."""
    splits = {}
    for name in ("test", *holdouts):
        path = splits_dir / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{path}: not found; run the split stage (with the same split.holdouts) first")
        frame = pd.read_parquet(path)
        missing = [c for c in ["state_id", *schema.feature_names, *schema.prob_columns] if c not in frame]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} required by features.json")
        frame = usable_rows(frame)
        if len(frame):
            splits[name] = frame.reset_index(drop=True)
    if "test" not in splits:
        raise UserError(f"{splits_dir / 'test.parquet'}: no states with a readable teacher answer; rerun the split stage")
    return splits
