"""How many times cheaper is each student than the teacher? Both timed in one run, on one machine.

The teacher is timed as bench/teacher_throughput.py times it: the pipeline's scorer
(shared prefix cached, suffixes batched) on `--teacher-states` states of the params'
scenario, after a warm-up, with torch's default threads. Then every student under
`--students` (one directory per student, as the train stage writes them) is timed as
bench/student_throughput.py times the MLP, on `--states` random states from the
student's own schema, one worker thread per core. Without trained students (no
`models/students/*/config.json`), the four architectures are first trained for a few
epochs on the synthetic dataset of tests/conftest.py, as student_throughput.py does.

A student's decisions/s is measured end to end by default: from a DataFrame of states
through encoding, the network and the softmax (predict()), as the teacher's rate
starts from the states' text and includes tokenisation. `--rate network` uses the
pre-encoded rate instead (network + softmax only). Both are printed.

One line per student, last:
  student=<name> decisions_per_s=<n> teacher_states_per_s=<m> ratio=<n/m>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent

import torch
from bench.student_throughput import end_to_end_rate, network_rate, random_states, train_quick
from bench.teacher_throughput import load_scorer, scorer_rate

from decision_distill.lm.source import is_model_dir
from decision_distill.students.models import ARCHES, load_student


def trained_students(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*") if (p / "config.json").exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"),
                        help="teacher directory (default: %(default)s, from `dvc repro download@teacher`)")
    parser.add_argument("--params", default="params.yaml", help="its scenario, dtype, device and batch size are used")
    parser.add_argument("--teacher-states", type=int, default=1000,
                        help="states the scorer answers (default: %(default)s; shared heads pay off with many)")
    parser.add_argument("--students", type=Path, default=Path("models/students"),
                        help="directory of trained students (default: %(default)s); empty or missing: "
                             "train the four architectures on synthetic data first")
    parser.add_argument("--states", type=int, default=65536, help="states per timed student run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4096, help="states per forward pass (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=30,
                        help="timed network-only runs per student; the fastest counts (default: %(default)s)")
    parser.add_argument("--rate", choices=("end_to_end", "network"), default="end_to_end",
                        help="which student rate the ratio uses (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="worker threads for the network-only rate, one per core (default: %(default)s)")
    args = parser.parse_args()
    if not is_model_dir(args.teacher):
        sys.exit(f"error: {args.teacher}: no teacher directory; run `dvc repro download@teacher` or pass --teacher")

    scorer, prefix, suffixes = load_scorer(args.teacher, args.params, args.teacher_states)
    teacher_rate, _ = scorer_rate(scorer, prefix, suffixes)
    del scorer
    print(f"teacher: {args.teacher}, {len(suffixes)} states, torch threads={torch.get_num_threads()}, "
          f"{teacher_rate:.2f} states/s")

    torch.set_num_threads(1)  # students: parallelism comes from the workers (see student_throughput.py)
    with tempfile.TemporaryDirectory() as tmp:
        directories = trained_students(args.students)
        source = str(args.students)
        if not directories:
            source = "synthetic data (trained 5 epochs; no trained students under " f"{args.students})"
            directories = [train_quick(arch, Path(tmp)) for arch in ARCHES]
        students = [(d.name, *load_student(d)) for d in directories]

    lines = []
    for name, model, encoder in students:
        frame = random_states(encoder.schema, args.states, seed=0)
        network = network_rate(model, encoder, frame, args.batch_size, args.repeats, args.workers)
        end_to_end = end_to_end_rate(model, encoder, frame, args.batch_size)
        decisions = end_to_end if args.rate == "end_to_end" else network
        parameters = sum(p.numel() for p in model.parameters())
        print(f"{name}: {parameters} parameters, {len(frame)} states, end to end {end_to_end:,.0f}/s, "
              f"network only {network:,.0f}/s ({args.workers} workers)")
        lines.append(f"student={name} decisions_per_s={decisions:.0f} teacher_states_per_s={teacher_rate:.2f} "
                     f"ratio={decisions / teacher_rate:.1f}")
    print(f"students from {source}; ratio = {args.rate} decisions/s over teacher states/s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
