"""runtime stage: write what this machine resolves the params' `auto` settings to.

For the teacher and the small LM: the dtype and the device they load in (`auto` is
float32, and CUDA where a card is visible, else the CPU), and the versions of the
libraries that compute the numbers (decision_distill.lm.runtime). DVC runs this stage on
every `dvc repro` (always_changed), and every stage that loads a model depends on
--out: on a machine that resolves the same runtime the file's bytes are unchanged and
nothing reruns; on one that would compute differently (a GPU, another torch,
`teacher.dtype: bfloat16`), those stages show as changed in `dvc status` after
`dvc repro runtime`, and `dvc repro` reruns them. The committed file records the
runtime that made the committed baseline.

example:
  python stages/runtime.py --out data/runtime.json
"""

import argparse
import json
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.runtime import resolved_runtime


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("data/runtime.json"),
                        help="the resolved runtime (default: %(default)s)")
    args = parser.parse_args(argv)
    runtime = resolved_runtime(load_params(args.params))
    write_json(runtime, args.out)
    print(f"runtime: {json.dumps(runtime, sort_keys=True)}")


if __name__ == "__main__":
    main()
