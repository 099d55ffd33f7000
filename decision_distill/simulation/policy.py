"""One interface for every decider: P(option | state), batched, for use inside a simulation.

    from decision_distill.simulation.policy import Policy
    policy = Policy.load("models/students/mlp")
    p_buy = policy.prob([{"traits": ["likes_sweets"], "contexts": ["hungry", "truck_nearby"]}])
    ensemble = Policy.load("models/students/mlp", ensemble=True)  # the mean of the mlp's seeds

A student needs only its two files (model.safetensors, config.json) and torch, safetensors,
numpy and pandas at run time: no DVC, no params.yaml. The teacher (TeacherPolicy) and the
tuned small LM (SLMPolicy, both in prompt_policy.py) read states through prompts and the
answer cache, so a simulation swaps deciders by one argument. Two reference deciders need no
model: ConstantPolicy (the
training mean P(action), the null model) and LookupPolicy (the teacher's answers by state,
the nearest answered state's for a new one). Every policy answers

    prob(states)   -> float64[N]     P(first option), the scenario's action
    probs(states)  -> float64[N, K]  P(every option)

`states` is a list of state dicts or a DataFrame with the scenario's feature ids as columns.
A missing feature or an unknown value is a one-line UserError naming it; a value the student
never saw in training is counted in `fallbacks` (the games report's "fallback"): its answer
there is a default of the untrained weights, not something learnt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import UserError
from ..data.schema import Schema

States = list | pd.DataFrame


class Policy:
    """Base class; `Policy.load(student_dir)` builds a StudentPolicy."""

    name = "policy"
    schema: Schema
    fallbacks = 0  # decisions that involved a value never seen in training (students only)

    @staticmethod
    def load(directory: str | Path, trained_on: str | Path | pd.DataFrame | None = None,
             threads: int = 1, ensemble: bool = False) -> "Policy":
        """The student in `directory` (its primary seed), or with `ensemble` the mean of all its
        seeds' students. A path `.../<arch>_ensemble` names the ensemble of `.../<arch>`."""
        from ..students.models import ENSEMBLE

        directory = Path(directory)
        if not directory.exists() and directory.name.endswith(ENSEMBLE):
            directory, ensemble = directory.with_name(directory.name[: -len(ENSEMBLE)]), True
        if ensemble:
            return EnsemblePolicy(directory, trained_on, threads)
        return StudentPolicy(directory, trained_on, threads)

    def probs(self, states: States) -> np.ndarray:
        raise NotImplementedError

    def prob(self, states: States) -> np.ndarray:
        return self.probs(states)[:, 0]

    def frame(self, states: States) -> pd.DataFrame:
        """`states` as a DataFrame with every feature column, checked: a missing feature is an error."""
        frame = states if isinstance(states, pd.DataFrame) else pd.DataFrame(list(states))
        names = self.schema.feature_names
        if len(frame) and not set(names) <= set(frame.columns):
            missing = next(n for n in names if n not in frame.columns)
            raise UserError(f"{self.name}: states have no feature '{missing}'; every state needs "
                            f"{', '.join(names)}")
        # A missing value (None, NaN) is left to the encoder / scenario check, which name the feature.
        return frame


class StudentPolicy(Policy):
    """A trained student from `models/students/<arch>`; `trained_on` (its train split) lets it
    count decisions on values it never saw."""

    def __init__(self, directory: str | Path, trained_on: str | Path | pd.DataFrame | None = None,
                 threads: int = 1):
        import torch  # imported here so that constant and teacher policies never need it

        from ..students.models import load_student

        self._torch, self.threads = torch, threads
        self.model, self.encoder = load_student(directory)
        self.schema = self.encoder.schema
        self.name = Path(directory).name
        self.unseen = _unseen_values(self.schema, trained_on) if trained_on is not None else {}

    def probs(self, states: States) -> np.ndarray:
        frame = self.frame(states)
        if not len(frame):
            return np.zeros((0, len(self.schema.options)))
        if self.unseen:
            self.fallbacks += int(_holds_unseen(frame, self.schema, self.unseen).sum())
        # One intra-op thread: a simulation's batches are small, and on a shared machine
        # torch's own threads wait on each other whenever another process holds a core
        # (measured ~10x slower here; see bench/student_throughput.py).
        previous = self._torch.get_num_threads()
        self._torch.set_num_threads(self.threads)
        try:
            ids, values = self.encoder.encode(frame)  # unknown values: UserError naming feature and value
            with self._torch.inference_mode():
                return self._torch.softmax(self.model(ids, values).double(), dim=-1).numpy()
        finally:
            self._torch.set_num_threads(previous)


class EnsemblePolicy(Policy):
    """The mean P(option | state) of an architecture's seeds (train.seeds students trained
    on the same data): a student of its own, `<arch>_ensemble` in every report."""

    def __init__(self, directory: str | Path, trained_on: str | Path | pd.DataFrame | None = None,
                 threads: int = 1):
        from ..students.models import ENSEMBLE, seed_dirs

        self.members = [StudentPolicy(p, trained_on, threads) for p in seed_dirs(directory).values()]
        self.schema, self.name = self.members[0].schema, Path(directory).name + ENSEMBLE

    @property
    def fallbacks(self) -> int:  # the members see the same states: count them once
        return self.members[0].fallbacks

    @fallbacks.setter
    def fallbacks(self, value: int) -> None:
        for member in self.members:
            member.fallbacks = value

    def probs(self, states: States) -> np.ndarray:
        frame = self.frame(states)
        return np.mean([m.probs(frame) for m in self.members], axis=0)


class ConstantPolicy(Policy):
    """P(action) = p for every state: the null decider simulations are checked against."""

    def __init__(self, p: float, schema: Schema, name: str | None = None):
        if not 0.0 <= p <= 1.0 or len(schema.options) != 2:
            raise UserError(f"ConstantPolicy: p must be in [0, 1] for a two-option scenario (got {p})")
        self.p, self.schema, self.name = p, schema, name or f"constant_{p:g}"

    @classmethod
    def training_mean(cls, train: str | Path | pd.DataFrame, schema: Schema,
                      name: str = "constant") -> "ConstantPolicy":
        """At the mean teacher P(action) of the training split (its readable answers): the null
        model, knowing the base rate and nothing about the state. Train only: nothing from test."""
        frame = _table(train, [schema.prob_columns[0]], "run the split stage first")
        return cls(float(frame[schema.prob_columns[0]].mean()), schema, name)

    def probs(self, states: States) -> np.ndarray:
        n = len(self.frame(states))
        return np.tile([self.p, 1.0 - self.p], (n, 1))


class LookupPolicy(Policy):
    """The teacher's own answers, looked up by state in a decisions table (data/decisions.parquet,
    readable answers only; a state listed twice answers the mean). A state the table holds gets
    the teacher's exact answer. Any other state gets the answer of the nearest one in the table:
    distance = set items in one state but not the other + choice values that differ + for a
    number, its difference as a share of the feature's range; ties go to the state first in
    the table. `fallbacks` counts the decisions answered by a nearest state, not an exact one."""

    def __init__(self, table: str | Path | pd.DataFrame, schema: Schema, name: str = "lookup"):
        frame = _table(table, [*schema.feature_names, *schema.prob_columns], "run the generate stage first")
        self.schema, self.name = schema, name
        rows: dict[tuple, list[int]] = {}  # state key -> its rows, in the table's order
        for i, key in enumerate(self._keys(frame)):
            rows.setdefault(key, []).append(i)
        probs = frame[schema.prob_columns].to_numpy(np.float64)
        self.keys = list(rows)
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.answers = np.stack([probs[r].mean(axis=0) for r in rows.values()])
        self.columns = [self._encode(f, [k[i] for k in self.keys]) for i, f in enumerate(schema.features)]
        self._memo: dict[tuple, tuple[int, bool]] = {}  # state key -> (answering row, exact)

    def _keys(self, frame: pd.DataFrame) -> list[tuple]:
        """Each row's state as a hashable key: a set's values sorted, a choice's value, a number."""
        keys = []
        for row in frame[self.schema.feature_names].itertuples(index=False):
            key = []
            for f, value in zip(self.schema.features, row):
                if value is None or (f.kind != "set" and pd.isna(value)):
                    raise UserError(f"{self.name}: feature '{f.name}' has no value; every state needs one")
                key.append(tuple(sorted(str(v) for v in value)) if f.kind == "set" else
                           str(value) if f.kind == "choice" else float(value))
            keys.append(tuple(key))
        return keys

    def _encode(self, f, values: list) -> np.ndarray:
        """Set: multi-hot rows; choice: value index; number: value / range (so a whole range is 1)."""
        if f.kind == "number":
            span = (f.high - f.low) if f.low is not None and f.high is not None and f.high > f.low else 1.0
            return np.asarray(values, dtype=float) / span
        index = {v: i for i, v in enumerate(f.values)}
        for v in (x for value in values for x in (value if f.kind == "set" else [value])):
            if v not in index:
                raise UserError(f"{self.name}: feature '{f.name}': unknown value {v!r} (it allows "
                                f"{', '.join(f.values)})")
        if f.kind == "choice":
            return np.array([index[v] for v in values])
        hot = np.zeros((len(values), len(f.values)), dtype=np.int8)
        for r, value in enumerate(values):
            hot[r, [index[v] for v in value]] = 1
        return hot

    def _answer(self, key: tuple) -> tuple[int, bool]:
        if key in self.index:
            return self.index[key], True
        distance = np.zeros(len(self.keys))
        for f, column, value in zip(self.schema.features, self.columns, key):
            q = self._encode(f, [value])
            distance += (np.abs(column - q[0]) if f.kind == "number" else
                         (column != q[0]) if f.kind == "choice" else (column != q).sum(axis=1))
        return int(np.argmin(distance)), False  # argmin returns the first of tied rows: the table's order

    def probs(self, states: States) -> np.ndarray:
        frame = self.frame(states)
        if not len(frame):
            return np.zeros((0, len(self.schema.options)))
        keys = self._keys(frame)
        for key in set(keys) - set(self._memo):
            self._memo[key] = self._answer(key)
        found = [self._memo[k] for k in keys]
        self.fallbacks += sum(not exact for _, exact in found)
        return self.answers[[row for row, _ in found]].reshape(len(keys), -1)


def _table(source: str | Path | pd.DataFrame, columns: list[str], fix: str) -> pd.DataFrame:
    """A decisions table (a frame or a Parquet file), readable answers only, with `columns` checked."""
    from ..data.split import usable_rows

    if not isinstance(source, pd.DataFrame) and not Path(source).exists():
        raise UserError(f"{source}: not found; {fix}")
    frame = source if isinstance(source, pd.DataFrame) else pd.read_parquet(source)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{source}: no column '{missing[0]}'; it must be a decisions table of this scenario ({fix})")
    frame = usable_rows(frame).reset_index(drop=True)
    if not len(frame):
        raise UserError(f"{source}: no state with a readable teacher answer; rerun the generate stage")
    return frame


def _unseen_values(schema: Schema, trained_on: str | Path | pd.DataFrame) -> dict[str, set[str]]:
    """feature -> values of the schema that no training state holds."""
    train = trained_on if isinstance(trained_on, pd.DataFrame) else pd.read_parquet(trained_on)
    unseen = {}
    for f in schema.features:
        if f.kind in ("set", "choice") and f.name in train:
            col = train[f.name]
            seen = {v for row in col for v in row} if f.kind == "set" else set(col.astype(str))
            if set(f.values) - seen:
                unseen[f.name] = set(f.values) - seen
    return unseen


def _holds_unseen(frame: pd.DataFrame, schema: Schema, unseen: dict[str, set[str]]) -> np.ndarray:
    kinds = {f.name: f.kind for f in schema.features}
    hit = np.zeros(len(frame), dtype=bool)
    for name, values in unseen.items():
        col = frame[name].tolist()
        hit |= np.array([bool(values.intersection(row)) if kinds[name] == "set" else row in values for row in col])
    return hit
