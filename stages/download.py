"""download stage: resolve teacher.model into a model directory under models/.

  packaged      converts the PyPI-packaged Gemma-3-270M (GGUF) to safetensors, once
  a directory   records a pointer to it (large local models are not copied)
  a hub id      downloads it at teacher.revision (safetensors files only)
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decision_distill.atomic import write_json  # noqa: E402
from decision_distill.errors import stage_main  # noqa: E402
from decision_distill.params import load_params  # noqa: E402
from decision_distill.model_source import TEACHER_JSON, download  # noqa: E402


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/teacher", help="model directory to write (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args()
    params = load_params(args.params)
    if params.generate.source == "import":
        write_json({"source": "none", "fingerprint": "none", "path": ".",
                    "reason": "generate.source is import: no teacher is loaded"}, Path(args.out) / TEACHER_JSON)
        print("generate.source is import: no teacher needed")
        return
    t = params.teacher
    info = download(t.model, t.revision, args.out, t.trust_remote_code)
    print(f"teacher ready in {args.out} ({info['fingerprint']})")


if __name__ == "__main__":
    main()
