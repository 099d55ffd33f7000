"""persona-respond stage: one person's tuned model, the base SLM given their profile, and the
base SLM given a few of their training chunks answer the person's reviewed questions (seeded
sampling; every answer kept in the answer cache of generate.cache, so a rerun generates nothing).
With agents.chat_template: true (personas/params.yaml) each question is asked inside the
models' chat template.

example:
  python stages/persona_respond.py --persona Walter_Henning --reviewed data/personas/reviewed/Walter_Henning.json \
      --chunks data/personas/chunks --base models/slm --models models/personas \
      --out data/personas/answers/Walter_Henning.json
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.runtime import pick_device
from decision_distill.lm.source import is_model_dir
from decision_distill.personas.chunks import load_chunks, load_profiles
from decision_distill.personas.params import load_persona_params
from decision_distill.personas.respond import BASE_CHUNKS, BASE_PROFILE, TUNED, respond


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", required=True)
    parser.add_argument("--reviewed", type=Path, required=True, help="the persona-reviewed stage's output")
    parser.add_argument("--chunks", type=Path, default=Path("data/personas/chunks"))
    parser.add_argument("--base", type=Path, default=Path("models/slm"))
    parser.add_argument("--models", type=Path, default=Path("models/personas"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"),
                        help="reads corpus, respond and agents (default: %(default)s)")
    parser.add_argument("--slm-params", type=Path, default=Path("params.yaml"),
                        help="reads slm.* precision and generate.cache (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_persona_params(args.params)
    root = load_params(args.slm_params)
    try:
        reviewed = json.loads(args.reviewed.read_text())
    except (OSError, ValueError):
        raise UserError(f"{args.reviewed}: missing or not JSON; run the persona-reviewed stage first") from None
    profile = load_profiles(args.chunks, [args.persona])[args.persona]  # persona-split copied it from profiles.yaml
    s = root.slm
    models = {TUNED: args.models / args.persona / "merged", BASE_PROFILE: args.base, BASE_CHUNKS: args.base}
    for name, directory in models.items():
        if not is_model_dir(directory):
            raise UserError(f"{directory}: no model ({name}); run persona-merge (or download@slm) first")
    load = cache(lambda d: load_causal_lm(d, s.dtype, s.device, s.trust_remote_code))
    store = AnswerCache(root.generate.cache)
    try:
        out = respond(reviewed, profile, load_chunks(args.chunks, [args.persona]), models, load, store,
                      params.respond, s.dtype, pick_device(s.device).type,
                      "agents.chat_template" if params.agents.chat_template else None)
    finally:
        store.close()
    write_json(out, args.out)
    rate = f"{out['answers_per_second']:.2f} answers/s" if out["answers_per_second"] else "all from the cache"
    print(f"persona-respond: {args.persona}: {len(out['items'])} questions x 3 models, "
          f"{out['generated']} generated ({rate})")


if __name__ == "__main__":
    main()
