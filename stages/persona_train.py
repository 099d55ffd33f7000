"""persona-train stage: one person's LoRA adapter (next-token loss on their training chunks)
on the base SLM (slm.model, downloaded by download@slm), through the LoRA trainer lora-train
uses (same checkpoints, same precision: slm.dtype bfloat16 trains float32 LoRA weights under
bf16 autocast). Killed, it resumes from its last checkpoint when rerun.

example:
  python stages/persona_train.py --persona Walter_Henning --chunks data/personas/chunks \
      --slm models/slm --out models/personas/Walter_Henning/adapter \
      --checkpoints models/personas/Walter_Henning/checkpoints
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.personas.chunks import load_chunks
from decision_distill.personas.params import load_persona_params
from decision_distill.personas.train import train_persona


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", required=True)
    parser.add_argument("--chunks", type=Path, default=Path("data/personas/chunks"),
                        help="persona-split's directory; only PERSONA.json is read (default: %(default)s)")
    parser.add_argument("--slm", type=Path, default=Path("models/slm"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--slm-params", type=Path, default=Path("params.yaml"),
                        help="reads slm.dtype, slm.device, slm.trust_remote_code (default: %(default)s)")
    args = parser.parse_args(argv)
    lora = load_persona_params(args.params).lora
    slm = load_params(args.slm_params).slm
    chunks = load_chunks(args.chunks, [args.persona])
    summary = train_persona(chunks, args.persona, lora, args.slm, args.out, args.checkpoints,
                            slm.dtype, slm.device, slm.trust_remote_code)
    print(f"persona-train: {args.persona}: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
          f"{summary['final_loss']:.3f}; adapter in {args.out}")


if __name__ == "__main__":
    main()
