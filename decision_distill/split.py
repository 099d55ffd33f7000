"""The split stage: train / validation / test by state, and an optional
out-of-distribution split of whole feature combinations no student trains on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_dir, write_parquet
from .errors import UserError
from .params import Split
from .schema import Schema

SPLITS = ("train", "val", "test", "ood")


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


def _ood_mask(frame: pd.DataFrame, schema: Schema, combos: list[list[str]]) -> np.ndarray:
    known = {v for f in schema.features for v in f.values}
    for i, combo in enumerate(combos):
        unknown = [v for v in combo if v not in known]
        if unknown or not combo:
            raise UserError(f"split.ood_holdout[{i}]: unknown or empty value list {unknown or combo}; "
                            "use value ids from features.json")
    if not combos:
        return np.zeros(len(frame), dtype=bool)
    return np.array([any(set(c) <= _values_of(row, schema) for c in combos)
                     for _, row in frame.iterrows()], dtype=bool)


def split_decisions(dataset: str | Path, schema_path: str | Path, spec: Split, out_dir: str | Path) -> dict:
    if spec.val + spec.test >= 1.0:
        raise UserError(f"split.val + split.test is {spec.val + spec.test:g}; it must stay below 1 to leave training data")
    schema = Schema.load(schema_path)
    frame = pd.read_parquet(dataset)
    usable = frame[frame["ok"]].reset_index(drop=True)
    ood = _ood_mask(usable, schema, spec.ood_holdout)
    in_dist = usable[~ood]
    keys = _state_keys(in_dist, schema)
    unique = keys.unique()
    rng = np.random.default_rng(spec.seed)
    shuffled = unique[rng.permutation(len(unique))]
    n_test = int(round(spec.test * len(unique)))
    n_val = int(round(spec.val * len(unique)))
    assignment = {k: "test" for k in shuffled[:n_test]}
    assignment |= {k: "val" for k in shuffled[n_test : n_test + n_val]}
    which = keys.map(lambda k: assignment.get(k, "train"))
    parts = {name: in_dist[which == name] for name in ("train", "val", "test")}
    parts["ood"] = usable[ood]
    if len(parts["train"]) == 0:
        raise UserError("split: no training states left; lower split.test / split.val or generate more states")
    with atomic_dir(out_dir) as tmp:
        for name, part in parts.items():
            write_parquet(part.reset_index(drop=True), tmp / f"{name}.parquet")
        shutil.copyfile(schema_path, tmp / "features.json")
    counts = {name: int(len(part)) for name, part in parts.items()}
    counts["dropped_failures"] = int((~frame["ok"]).sum())
    return counts
