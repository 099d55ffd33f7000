"""How many decisions per second does the MLP student make on CPU?

Without --student it first trains an MLP for a few epochs on the synthetic dataset
of tests/conftest.py (through the real train_student, so the timed model is a real
saved student); with --student it loads a pipeline student instead. It then draws
random states from the student's own schema and times inference over them in
batches (4096 by default: a 65536-row batch spills the hidden activations out of
cache and measured ~25% slower here):

  pre-encoded   dense inputs built once, only the network + softmax is timed
  end to end    DataFrame -> encode -> network -> probabilities (predict())

The batches are spread over one worker thread per core, each running torch with one
intra-op thread: on a shared machine torch's own multi-threading stalls whenever
another process holds a core (every op waits for its slowest thread; measured ~10x
slower), while independent workers just lose that core's share.

Each rate is the best of many repeats: on a shared machine the fastest run is the
one least disturbed by other processes, so it is the most repeatable estimate.

The last line printed is `decisions_per_s=<n>`, the pre-encoded rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from decision_distill.core.params import parse_params
from decision_distill.data.schema import Schema
from decision_distill.students.models import MLP, load_student, predict
from decision_distill.students.train import train_student
from tests.support.synthetic import write_synthetic_splits


def random_states(schema: Schema, n: int, seed: int = 0) -> pd.DataFrame:
    """n states drawn uniformly from the schema: any subset of a set, any choice, any number."""
    rng = np.random.default_rng(seed)
    columns = {}
    for f in schema.features:
        if f.kind == "set":
            present = rng.random((n, len(f.values))) < 0.5
            values = np.array(f.values, dtype=object)
            columns[f.name] = [values[row].tolist() for row in present]
        elif f.kind == "choice":
            columns[f.name] = rng.choice(np.array(f.values, dtype=object), size=n)
        else:
            low, high = (f.low, f.high) if f.low is not None and f.high is not None else (-1.0, 1.0)
            columns[f.name] = rng.uniform(low, high, n)
    return pd.DataFrame(columns)


def train_quick(arch: str, directory: Path) -> Path:
    """A default-sized `arch` student trained for a few epochs on the synthetic dataset
    (written once to directory/splits), saved to directory/arch. The working directory is
    restored afterwards."""
    # DVCLive looks for a DVC repo from the working directory (and runs `dvc init` in a
    # git checkout without one): train from the scratch directory to leave the project alone.
    cwd = Path.cwd()
    os.chdir(directory)
    try:
        if not (directory / "splits" / "features.json").exists():
            write_synthetic_splits(directory / "splits", n=2000)
        params = parse_params({"train": {"epochs": 5}})
        train_student(arch, params, directory / "splits", directory / arch, directory / "live" / arch)
    finally:
        os.chdir(cwd)
    return directory / arch


def train_quick_mlp(directory: Path) -> Path:
    return train_quick("mlp", directory)


def rate(fn, rows: int, repeats: int) -> float:
    """Rows per second of fn(), best of `repeats` runs after one warm-up."""
    fn()
    return rows / min(_seconds(fn) for _ in range(repeats))


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def network_rate(model, encoder, frame: pd.DataFrame, batch_size: int, repeats: int, workers: int) -> float:
    """Decisions/s of the network + softmax alone on pre-encoded batches, spread over worker
    threads (call with torch.set_num_threads(1), see the module docstring). Models with a
    dense path (logistic regression, MLP) get the multi-hot input, the others ids and values."""
    if hasattr(model, "forward_dense"):
        batches = [(b,) for b in encoder.dense(frame).split(batch_size)]
        forward = model.forward_dense
    else:
        ids, values = encoder.encode(frame)
        batches = list(zip(ids.split(batch_size), values.split(batch_size)))
        forward = model

    def probabilities(batch) -> torch.Tensor:
        with torch.inference_mode():  # per thread: grad mode is thread-local
            return torch.softmax(forward(*batch), dim=-1)

    with ThreadPoolExecutor(workers) as pool:
        return rate(lambda: list(pool.map(probabilities, batches)), len(frame), repeats)


def end_to_end_rate(model, encoder, frame: pd.DataFrame, batch_size: int, repeats: int = 5) -> float:
    """Decisions/s from a DataFrame of states: encode + network + probabilities (predict()).
    Encoding runs in Python over the rows (one core), so few repeats keep the run short."""
    return rate(lambda: predict(model, encoder, frame, batch_size=batch_size), len(frame), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, help="a trained MLP student dir (default: train one on synthetic data)")
    parser.add_argument("--states", type=int, default=65536, help="states per timed run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4096, help="states per forward pass (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs; the fastest counts (default: %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)),
        help="worker threads, one per core (default: %(default)s)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # parallelism comes from the workers, see the module docstring

    with tempfile.TemporaryDirectory() as tmp:
        model, encoder = load_student(args.student or train_quick_mlp(Path(tmp)))
    if not isinstance(model, MLP):
        sys.exit(f"error: {args.student} is a {type(model).__name__} student; this benchmark times the MLP")

    frame = random_states(encoder.schema, args.states)
    encoded_rate = network_rate(model, encoder, frame, args.batch_size, args.repeats, args.workers)
    end_to_end = end_to_end_rate(model, encoder, frame, args.batch_size)

    parameters = sum(p.numel() for p in model.parameters())
    print(f"student: {args.student or 'synthetic MLP (trained 5 epochs)'}, {parameters} parameters")
    print(f"{len(frame)} random states in batches of {args.batch_size}, vocab {encoder.vocab_size}, "
          f"{args.workers} workers")
    print(f"end to end (encode + network): {end_to_end:,.0f} decisions/s")
    print(f"decisions_per_s={encoded_rate:.0f}")


if __name__ == "__main__":
    main()
