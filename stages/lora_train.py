"""Stage lora-train: a LoRA adapter on the small LM (slm.model) that answers the plain
short prompt with the teacher's distribution over the answer options.

Reads the splits (train.parquet, val.parquet), the scenario file, the SLM model
directory (download@slm) and the `scenario`, `slm` and `lora` sections of
params.yaml. Writes the adapter (peft format: adapter_config.json +
adapter_model.safetensors), resumable checkpoints (a killed run continues from
the newest one) and per-step DVCLive curves. Under slm.enabled: false it writes
a marker adapter directory (skipped.json) and exits 0.

examples:
  python stages/lora_train.py --splits data/splits --slm models/slm --out models/lora/adapter \\
      --checkpoints models/lora/checkpoints --live dvclive/lora
  python stages/lora_train.py --group persona=alice --out models/lora/alice/adapter \\
      --checkpoints models/lora/alice/checkpoints --live dvclive/lora/alice
  accelerate launch --config_file configs/accelerate_fsdp.yaml stages/lora_train.py ...   # GPUs
"""

from __future__ import annotations

import argparse

from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params


def parse_group(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    column, sep, value = text.partition("=")
    if not sep or not column:
        raise UserError(f"--group {text!r}: write it as COLUMN=VALUE, e.g. --group persona=alice")
    return column, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="data/splits",
                        help="directory with train/val.parquet (default: %(default)s)")
    parser.add_argument("--slm", default="models/slm", help="the SLM model directory (default: %(default)s)")
    parser.add_argument("--out", default="models/lora/adapter",
                        help="adapter directory to write (default: %(default)s)")
    parser.add_argument("--checkpoints", default="models/lora/checkpoints",
                        help="resumable checkpoints, kept across runs (default: %(default)s)")
    parser.add_argument("--live", default="dvclive/lora", help="DVCLive directory (default: %(default)s)")
    parser.add_argument("--group", metavar="COLUMN=VALUE",
                        help="train only on the rows where COLUMN equals VALUE (one adapter per agent)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    group = parse_group(args.group)
    params = load_params(args.params)
    # Imported here so a bad argument or params.yaml fails before torch loads.
    from decision_distill.slm.lora import train_lora

    summary = train_lora(params, args.splits, args.slm, args.out, args.checkpoints, args.live, group)
    if summary.get("skipped"):
        print("slm.enabled is false: wrote a skipped marker, trained nothing")
        return
    print(", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in summary.items()))


if __name__ == "__main__":
    main()
