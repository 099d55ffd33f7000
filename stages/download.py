"""download stage: resolve a model (the teacher or the SLM student) into a model directory.

  packaged      converts the PyPI-packaged Gemma-3-270M (GGUF) to safetensors, once
  a directory   records a pointer to it (large local models are not copied)
  a hub id      downloads it at <role>.revision (safetensors files only)

--role teacher reads the `teacher` params section, --role slm the `slm` section.
No model is fetched when it would go unused: the teacher under
generate.source: import, the SLM under slm.enabled: false.
"""

import argparse
from pathlib import Path

from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.source import download, write_model_marker


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["teacher", "slm"], default="teacher",
                        help="which params section names the model (default: %(default)s)")
    parser.add_argument("--out", default=None, help="model directory to write (default: models/<role>)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args()
    out = Path(args.out or f"models/{args.role}")
    params = load_params(args.params)
    # Only this role's switch is read: download@teacher does not depend on slm.enabled, nor
    # download@slm on generate.source (tests/test_params_declared.py).
    if args.role == "teacher":
        unused = params.generate.source == "import" and "generate.source is import"
    else:
        unused = not params.slm.enabled and "slm.enabled is false"
    if unused:
        write_model_marker(out, f"{unused}: no {args.role} model is loaded")
        print(f"{unused}: no {args.role} model needed")
        return
    spec = getattr(params, args.role)
    info = download(spec.model, spec.revision, out, spec.trust_remote_code, key=f"{args.role}.model")
    print(f"{args.role} ready in {out} ({info['fingerprint']})")


if __name__ == "__main__":
    main()
