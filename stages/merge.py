"""merge stage: fold the LoRA adapter into the base SLM (peft merge_and_unload).

Reads the base SLM (download@slm) and the adapter (lora-train), writes a
safetensors model directory with the tokenizer and a model.json whose
fingerprint hashes the merged weights, so answers cached for it never mix with
the base model's. Under slm.enabled: false, or when lora-train wrote a marker
instead of an adapter, the output is a marker directory and the stage exits 0.

example:
  python stages/merge.py --base models/slm --adapter models/lora/adapter --out models/slm_merged
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.source import write_model_marker
from decision_distill.lora.merge import merge_adapter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("models/slm"),
                        help="base SLM directory from download@slm (default: %(default)s)")
    parser.add_argument("--adapter", type=Path, default=Path("models/lora/adapter"),
                        help="peft adapter directory from lora-train (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("models/slm_merged"),
                        help="merged model directory to write (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file; reads slm.enabled, dtype, device, trust_remote_code "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    slm = load_params(args.params).slm
    if not slm.enabled:
        write_model_marker(args.out, "slm.enabled is false: no merged SLM")
        print("slm.enabled is false: wrote a marker, nothing merged")
        return
    info = merge_adapter(args.base, args.adapter, args.out, slm.dtype, slm.device, slm.trust_remote_code)
    print(f"merged SLM in {args.out} ({info['fingerprint']})")


if __name__ == "__main__":
    main()
