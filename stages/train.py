"""Stage train@ARCH: distil the teacher's decisions into one student network.

Reads the splits (features.json, train.parquet, val.parquet), the `train` and
`student.ARCH` sections of params.yaml, and writes the student
(model.safetensors + config.json) plus DVCLive training curves.

example:
  python stages/train.py mlp --splits data/splits --out models/students/mlp \
      --live dvclive/mlp --params params.yaml
"""

from __future__ import annotations

import argparse

from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import ARCHITECTURES, load_params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("arch", help=f"student architecture: one of {', '.join(ARCHITECTURES)}")
    parser.add_argument(
        "--splits", default="data/splits",
        help="directory with features.json, train.parquet, val.parquet (default: %(default)s)",
    )
    parser.add_argument("--out", help="directory to write the student into (default: models/students/ARCH)")
    parser.add_argument("--live", help="DVCLive directory for the training curves (default: dvclive/ARCH)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.arch not in ARCHITECTURES:
        valid = ", ".join(ARCHITECTURES)
        raise UserError(f"unknown student architecture '{args.arch}'; choose one of {valid}")
    params = load_params(args.params)
    # Imported here so a typo in ARCH or params.yaml fails before torch loads.
    from decision_distill.students.train import train_student

    summary = train_student(
        args.arch,
        params,
        args.splits,
        args.out or f"models/students/{args.arch}",
        args.live or f"dvclive/{args.arch}",
    )
    print(", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in summary.items()))


if __name__ == "__main__":
    main()
