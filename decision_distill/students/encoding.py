"""States -> student inputs: one token per present feature value.

Every student reads the same encoding. A state becomes a row of token ids (one per
set member, one for the chosen value of each choice, one per number feature) with
a value per token: 1.0 for a categorical token, the standardised number for a
numeric one. Rows are right-padded with id 0 to one fixed width, so train, val and
test tensors line up. Within a row tokens are sorted by id, which makes the
encoding independent of the order a set's members were listed in.

The vocabulary depends on the schema alone, so `from_json(to_json())` rebuilds an
identical encoder for a saved student without the rest of the pipeline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.errors import UserError
from ..data.schema import Feature, Schema

PAD = 0


def densify(ids: torch.Tensor, values: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token rows -> one column per vocabulary id (multi-hot for categories, the
    standardised value for numbers). Padding carries value 0, so column PAD stays 0."""
    dense = torch.zeros(ids.shape[0], vocab_size, dtype=values.dtype, device=values.device)
    return dense.scatter_add_(1, ids, values)


class FeatureEncoder:
    def __init__(self, schema: Schema):
        self.schema = schema
        self.options = schema.options
        self.token_names = ["<pad>"]  # index = token id
        self._value_ids: dict[str, dict[str, int]] = {}  # set/choice feature -> value -> id
        self._number_ids: dict[str, int] = {}  # number feature -> id
        for feature in schema.features:
            if feature.kind == "number":
                self._number_ids[feature.name] = len(self.token_names)
                self.token_names.append(feature.name)
            else:
                # Namespaced by feature: "a" in two features gets two ids.
                self._value_ids[feature.name] = {
                    value: len(self.token_names) + i for i, value in enumerate(feature.values)
                }
                self.token_names += [f"{feature.name}={value}" for value in feature.values]
        self.vocab_size = len(self.token_names)
        # The most tokens any state can have, so every split is encoded to the same width.
        self.width = sum(len(f.values) if f.kind == "set" else 1 for f in schema.features)

    def encode(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """DataFrame of states -> (ids LongTensor[N, width], values FloatTensor[N, width])."""
        blocks = [self._encode_feature(feature, frame) for feature in self.schema.features]
        ids = torch.from_numpy(np.concatenate([b[0] for b in blocks], axis=1))
        values = torch.from_numpy(np.concatenate([b[1] for b in blocks], axis=1))
        # Sort by id with padding last: canonical order, real tokens first.
        order = torch.where(ids == PAD, self.vocab_size, ids).argsort(dim=1, stable=True)
        return ids.gather(1, order), values.gather(1, order)

    def dense(self, frame: pd.DataFrame) -> torch.Tensor:
        """DataFrame of states -> FloatTensor[N, vocab_size], for the logreg and MLP students."""
        return densify(*self.encode(frame), self.vocab_size)

    def targets(self, frame: pd.DataFrame) -> torch.Tensor:
        """The teacher's distribution, FloatTensor[N, K] in the schema's option order."""
        missing = [c for c in self.schema.prob_columns if c not in frame.columns]
        if missing:
            raise UserError(f"decisions have no column {missing[0]}; the schema's options need it")
        probs = frame[self.schema.prob_columns].to_numpy(dtype=np.float32, copy=True)
        bad = ~np.isfinite(probs).all(axis=1)
        if bad.any():
            row = frame["state_id"].iloc[int(bad.argmax())] if "state_id" in frame else int(bad.argmax())
            raise UserError(
                f"decisions: state {row} has a missing or non-finite teacher probability in "
                f"{', '.join(self.schema.prob_columns)} but is not marked ok=False"
            )
        return torch.from_numpy(probs)

    def to_json(self) -> dict:
        return {"schema": self.schema.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "FeatureEncoder":
        return cls(Schema.from_json(data["schema"]))

    def _encode_feature(self, feature: Feature, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """One feature's tokens as fixed-width blocks (ids int64[N, w], values float32[N, w])."""
        if feature.name not in frame.columns:
            raise UserError(f"decisions have no column for feature '{feature.name}'")
        column = frame[feature.name]
        if feature.kind == "set":
            return self._encode_set(feature, column)
        if feature.kind == "choice":
            ids = self._lookup(feature, column.tolist())[:, None]
            return ids, np.ones(ids.shape, dtype=np.float32)
        return self._encode_number(feature, column)

    def _encode_number(self, feature: Feature, column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(numbers).all():
            bad = column[~np.isfinite(numbers)].iloc[0]
            raise UserError(f"feature '{feature.name}': value {bad!r} is not a finite number")
        centre, half_width = feature.scale()
        ids = np.full((len(column), 1), self._number_ids[feature.name], dtype=np.int64)
        return ids, ((numbers - centre) / half_width).astype(np.float32)[:, None]

    def _encode_set(self, feature: Feature, column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        members = column.tolist()
        try:
            lengths = [len(row) for row in members]
        except TypeError:  # e.g. a missing (None) set
            bad = next(m for m in members if not hasattr(m, "__len__"))
            raise UserError(f"feature '{feature.name}': expected a list of values, got {bad!r}") from None
        flat = [value for row in members for value in row]
        rows = np.repeat(np.arange(len(members)), lengths)
        first_id = self._value_ids[feature.name][feature.values[0]] if feature.values else 0
        present = np.zeros((len(members), len(feature.values)), dtype=bool)
        # A value listed twice in one set is still one token.
        present[rows, self._lookup(feature, flat) - first_id] = True
        ids = np.where(present, first_id + np.arange(len(feature.values)), PAD)
        return ids.astype(np.int64), present.astype(np.float32)

    def _lookup(self, feature: Feature, values: list) -> np.ndarray:
        known = self._value_ids[feature.name]
        try:
            return np.array([known[v] for v in values], dtype=np.int64)
        except (KeyError, TypeError):
            bad = next(v for v in values if not isinstance(v, str) or v not in known)
            raise UserError(
                f"feature '{feature.name}': unknown value {bad!r}; the schema allows "
                f"{', '.join(feature.values)}"
            ) from None
