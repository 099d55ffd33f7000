"""persona-extract stage: the teacher reads each held-out chunk; P(Yes) per category from
answer-token probabilities decides whether it reveals a belief, a memory or a trait; the
strongest chunks (at most extract.cap per person and category) get a one-sentence summary
and a probing question, generated extract.batch_size prompts at a time (greedy). With
teacher.chat_template: true every prompt is asked inside the teacher's chat template. Every
score and generated line is stored in the answer cache (generate.cache of params.yaml) as it
is computed: a killed run's rerun redoes nothing done.

example:
  python stages/persona_extract.py --teacher models/teacher --chunks data/personas/chunks \
      --profiles data/personas/profiles.json --questions data/personas/questions.json \
      --metrics metrics/personas/extract.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import load_causal_lm
from decision_distill.personas.chunks import load_chunks, load_profiles
from decision_distill.personas.extract import extract
from decision_distill.personas.params import load_persona_params


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--chunks", type=Path, default=Path("data/personas/chunks"),
                        help="persona-split's directory of NAME.json files (default: %(default)s)")
    parser.add_argument("--profiles", type=Path, default=Path("data/personas/profiles.json"))
    parser.add_argument("--questions", type=Path, default=Path("data/personas/questions.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/personas/extract.json"))
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--teacher-params", type=Path, default=Path("params.yaml"),
                        help="reads teacher.dtype, teacher.device, teacher.trust_remote_code, teacher.chat_template "
                        "and generate.cache (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_persona_params(args.params)
    root = load_params(args.teacher_params)
    t = root.teacher
    chunks = load_chunks(args.chunks, params.corpus.personas)
    hand_written = load_profiles(args.chunks, params.corpus.personas)
    teacher = load_causal_lm(args.teacher, t.dtype, t.device, t.trust_remote_code)
    e = params.extract
    cache = AnswerCache(root.generate.cache)
    try:
        profiles, questions, metrics = extract(teacher, chunks, e.categories, e.threshold, e.cap, e.max_new_tokens,
                                               params.corpus.personas, cache, e.batch_size,
                                               "teacher.chat_template" if t.chat_template else None)
    finally:
        cache.close()
    write_json({p: {"description": hand_written.get(p), **profiles[p]} for p in profiles}, args.profiles)
    write_json(questions, args.questions)
    write_json(metrics, args.metrics)
    print(f"persona-extract: {len(questions)} questions (cap {e.cap} per person and category) in {args.questions}")


if __name__ == "__main__":
    main()
