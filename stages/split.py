"""split stage: train / val / test by state (seeded), plus one held-out split per entry of
split.holdouts (name -> value combinations): <out>/<name>.parquet holds every state that
contains all values of one of that holdout's combinations. Held-out states never reach
train/val/test; a state matching two holdouts is in both. Prints the row count per split."""

import argparse

from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.data.split import split_decisions


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/decisions.parquet", help="(default: %(default)s)")
    parser.add_argument("--schema", default="data/features.json", help="(default: %(default)s)")
    parser.add_argument("--out", default="data/splits", help="output directory (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args()
    counts = split_decisions(args.dataset, args.schema, load_params(args.params).split, args.out)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
