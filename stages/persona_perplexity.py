"""persona-perplexity stage: every person's merged model, and the base SLM, on every
person's held-out chunks; metrics with bootstrap intervals and a heatmap. Each chunk's
NLL is stored in the answer cache (generate.cache of params.yaml) as it is computed: a
killed run's rerun recomputes nothing finished.

example:
  python stages/persona_perplexity.py --chunks data/personas/chunks --base models/slm \
      --models models/personas --metrics metrics/personas/perplexity.json --heatmap metrics/personas/perplexity.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.source import is_model_dir
from decision_distill.personas.chunks import load_chunks
from decision_distill.personas.params import load_persona_params
from decision_distill.personas.perplexity import BASE, chunk_nll, draw_heatmap, held_out, matrix_report


@stage_main
def main(argv: list[str] | None = None) -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=Path, default=Path("data/personas/chunks"),
                        help="persona-split's directory of NAME.json files (default: %(default)s)")
    parser.add_argument("--base", type=Path, default=Path("models/slm"))
    parser.add_argument("--models", type=Path, default=Path("models/personas"),
                        help="holds PERSONA/merged for every persona (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/personas/perplexity.json"))
    parser.add_argument("--heatmap", type=Path, default=Path("metrics/personas/perplexity.png"))
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--slm-params", type=Path, default=Path("params.yaml"),
                        help="reads slm.dtype, slm.device, slm.trust_remote_code and generate.cache "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_persona_params(args.params)
    root = load_params(args.slm_params)
    slm = root.slm
    personas = params.corpus.personas
    chunks = held_out(load_chunks(args.chunks, personas))
    models = {BASE: args.base} | {p: args.models / p / "merged" for p in personas}
    for name, directory in models.items():
        if not is_model_dir(directory):
            raise UserError(f"{directory}: no model ({name}); run persona-merge (or download@slm) first")
    cache = AnswerCache(root.generate.cache)
    try:
        nll = {name: chunk_nll(directory, chunks, slm.dtype, slm.device, slm.trust_remote_code, cache)
               for name, directory in models.items()}
    finally:
        cache.close()
    p = params.perplexity
    report = matrix_report(nll, chunks, personas, p.bootstrap, p.confidence, p.seed)
    # What each adapter was trained on, beside what it achieved (persona-train's summary).
    report["training"] = {p: json.loads(f.read_text()) for p in personas
                          if (f := args.models / p / "adapter" / "persona_train.json").exists()}
    draw_heatmap(report, args.heatmap)
    write_json(report, args.metrics)
    print(f"persona-perplexity: adapter helped {report['helped']} of {report['personas']}; own model lowest on "
          f"its own text for {report['diagonal_lowest']} of {report['personas']}")


if __name__ == "__main__":
    main()
