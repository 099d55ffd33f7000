"""perplexity stage: how well the base and the merged SLM predict the teacher's held-out text.

For the first perplexity.max_states test states: the short SLM prompt, then the
teacher's answer (its most likely option's text) and, where the verbalized
readout produced one, its explanation. Writes per model (base, tuned):
perplexity over the answer and explanation tokens given the prompt,
answer_perplexity, explanation_perplexity (null without explanations) and
answer_ce, the teacher-weighted cross-entropy -sum_k P_teacher(k) log Q(k) over
the options. Under slm.enabled: false it writes {"skipped": ...} and exits 0.

example:
  python stages/perplexity.py --splits data/splits --base models/slm --merged models/slm_merged \
      --metrics metrics/perplexity.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.source import is_model_marker
from decision_distill.slm.perplexity import perplexity_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=Path, default=Path("data/splits"),
                        help="split stage output: features.json, test.parquet (default: %(default)s)")
    parser.add_argument("--base", type=Path, default=Path("models/slm"),
                        help="base SLM directory from download@slm (default: %(default)s)")
    parser.add_argument("--merged", type=Path, default=Path("models/slm_merged"),
                        help="merged SLM directory from the merge stage (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/perplexity.json"),
                        help="where to write the report (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file; reads scenario, slm, perplexity.max_states (default: %(default)s)")
    return parser.parse_args(argv)


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    slm = params.slm
    if not slm.enabled or is_model_marker(args.merged):
        write_json({"skipped": "slm.enabled is false or no adapter was trained"}, args.metrics)
        print("no SLM to score: wrote a marker")
        return
    report = perplexity_report(args.splits, load_scenario(params.scenario), {"base": args.base, "tuned": args.merged},
                               slm.dtype, slm.device, slm.trust_remote_code, slm.batch_size,
                               params.perplexity.max_states)
    write_json(report, args.metrics)
    for name in ("base", "tuned"):
        print(f"{name}: perplexity {report[name]['perplexity']:.3f}, answer_ce {report[name]['answer_ce']:.4f}")


if __name__ == "__main__":
    main()
