"""persona-votes stage: P(Aye) of every (person, question of votes.csv) from the teacher and the
base SLM given the person's profile (when profiles.yaml has one) or name only, the person's
tuned model, and the base and tuned models given the k passages of the person's text most like
the question, read from the " Aye"/" Nay" token probabilities (answers kept in the answer cache);
each arm raw, contextually calibrated, contrasted with its arm without the person's words, and
fitted leave-one-question-out; accuracy, balanced accuracy, AUROC, macro F1, Brier, log loss and
the paired difference from each baseline, with intervals over questions, per person and pooled;
the profile/question word overlaps; a plot of accuracy, balanced accuracy and AUROC.
teacher.chat_template: true asks the teacher arms inside the teacher's chat template,
agents.chat_template: true (personas/params.yaml) the base and tuned arms inside slm.model's.

example:
  python stages/persona_votes.py --teacher models/teacher --base models/slm --models models/personas \
      --votes data/personas/votes.json --metrics metrics/personas/votes.json --plot metrics/personas/votes.png
"""

from __future__ import annotations

import argparse
import time
from functools import cache
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import UserError, stage_main
from decision_distill.core.params import load_params
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.embeddings import embed
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import is_model_dir
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.params import check_personas_match, load_persona_params
from decision_distill.personas.profile_check import profile_overlaps
from decision_distill.personas.retrieval import person_passages, retrieval_prompt, retrieve
from decision_distill.personas.vote_plot import draw_votes
from decision_distill.personas.votes import score_all, vote_rows, vote_table, votes_report

TEACHER, BASE, TUNED = "teacher+profile", "base+profile", "tuned"
TEACHER_NAME, BASE_NAME = "teacher+name", "base+name"  # the person's name, none of their words
BASE_RETRIEVAL, TUNED_RETRIEVAL = "base+retrieval", "tuned+retrieval"  # decision_distill/personas/retrieval.py
# Each arm's arm without the person's words, for the persona contrast (calibration.py): the same
# base model given the name only. tuned+retrieval too (not tuned, which holds the person's text
# from training): what training and passages changed together; tuned+retrieval - tuned, what the
# passages add to the tuned model, is the difference of the two contrasts.
REFERENCES = {TEACHER: TEACHER_NAME, BASE: BASE_NAME, TUNED: BASE_NAME, BASE_RETRIEVAL: BASE_NAME,
              TUNED_RETRIEVAL: BASE_NAME}


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--base", type=Path, default=Path("models/slm"))
    parser.add_argument("--models", type=Path, default=Path("models/personas"),
                        help="holds PERSONA/merged for every persona (default: %(default)s)")
    parser.add_argument("--votes", type=Path, default=Path("data/personas/votes.json"),
                        help="every scored (person, question) with each model's P(Aye)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/personas/votes.json"))
    parser.add_argument("--plot", type=Path, default=Path("metrics/personas/votes.png"))
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"),
                        help="reads corpus, chunks.words, votes and agents (default: %(default)s)")
    parser.add_argument("--slm-params", type=Path, default=Path("params.yaml"),
                        help="reads teacher.* and slm.* precision settings, teacher.chat_template and generate.cache "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_persona_params(args.params)
    root = load_params(args.slm_params)
    corpus = load_corpus(params.corpus.path)
    check_personas_match(params, corpus.personas, str(args.params))
    if not corpus.votes:
        raise UserError(f"{params.corpus.path}/votes.csv: missing, or no row records an Aye or Nay; "
                        "add question,persona,vote rows "
                        "or run the persona pipeline without the votes stage (dvc repro personas/dvc.yaml:persona-judge)")
    personas = params.corpus.personas
    table, questions = vote_table(corpus.votes, personas, corpus.no_votes)
    for name, directory in {"teacher": args.teacher, "base": args.base,
                            **{p: args.models / p / "merged" for p in personas}}.items():
        if not is_model_dir(directory):
            raise UserError(f"{directory}: no model ({name}); run download@teacher, download@slm or persona-merge first")
    t, s = root.teacher, root.slm
    teacher = cache(lambda: load_causal_lm(args.teacher, t.dtype, t.device, t.trust_remote_code))
    base = cache(lambda: load_causal_lm(args.base, s.dtype, s.device, s.trust_remote_code))

    def tuned(persona: str):
        return load_causal_lm(args.models / persona / "merged", s.dtype, s.device, s.trust_remote_code)

    v, r = params.votes, params.votes.retrieval
    start = time.perf_counter()
    # Retrieval first: an embedder problem stops the stage before any model scores. The
    # content-free questions retrieve their own passages (retrieval.py).
    asked = list(dict.fromkeys([*questions, *v.content_free]))
    picked = retrieve({p: person_passages(p, corpus.monologues[p], params.chunks.words) for p in personas},
                      asked, r.k, lambda texts: embed(texts, r.embedder))
    retrieved = {p: dict(zip(asked, rows)) for p, rows in picked.items()}
    passages = retrieval_prompt(retrieved, r.max_tokens, r.k)
    # Without profiles.yaml the profile arms would be name-only prompts under a profile label: not run.
    profile_arms = {TEACHER: lambda p: (teacher(), True), BASE: lambda p: (base(), True)} if corpus.profiles else {}
    models = {**profile_arms, TEACHER_NAME: lambda p: (teacher(), False), BASE_NAME: lambda p: (base(), False),
              TUNED: lambda p: (tuned(p), False), BASE_RETRIEVAL: lambda p: (base(), passages),
              TUNED_RETRIEVAL: lambda p: (tuned(p), passages)}
    # Each model's own setting: the teacher's arms follow teacher.chat_template, the agents' agents.chat_template.
    chat = {**({arm: "teacher.chat_template" for arm in (TEACHER, TEACHER_NAME)} if t.chat_template else {}),
            **({arm: "agents.chat_template" for arm in (BASE, BASE_NAME, TUNED, BASE_RETRIEVAL, TUNED_RETRIEVAL)}
               if params.agents.chat_template else {})}
    cache_store = AnswerCache(root.generate.cache)
    try:
        scored = score_all(table, questions, corpus.profiles, models, v.batch_size, cache_store, v.content_free, chat)
    finally:
        cache_store.close()
    seconds = time.perf_counter() - start
    report, predictors = votes_report(table, questions, scored, REFERENCES, v.bootstrap, v.confidence, v.seed,
                                      v.loqo_c, TEACHER if TEACHER in models else TEACHER_NAME)
    report["profile_question_overlap"] = profile_overlaps(corpus.profiles, questions, v.profile_check.max_df,
                                                          v.profile_check.min_shared)
    report["scoring_seconds"] = seconds
    rows = vote_rows(table, questions, scored, predictors)
    for row in rows:  # the passages the retrieval arms read before the row's question
        row["retrieved"] = [x.id for x in retrieved[row["persona"]][row["question"]]]
    draw_votes(report, args.plot)
    write_json(rows, args.votes)
    write_json(report, args.metrics)
    pooled = report["pooled"]
    best = pooled["headline_baseline"]
    top = sorted(pooled["models"].items(), key=lambda kv: -kv[1]["balanced_accuracy"])[:3]
    reasons = ", ".join(f"{n} {why}" for why, n in pooled["unknown_by_reason"].items() if n)
    print(f"persona-votes: {pooled['known']} known votes ({pooled['unknown']} unknown{': ' + reasons if reasons else ''}) "
          f"in {seconds:.0f} s; "
          f"headline baseline {best} accuracy {pooled['baselines'][best]['accuracy']:.2f}; highest balanced accuracy "
          + ", ".join(f"{m} {b['balanced_accuracy']:.2f}" for m, b in top)
          + f"; {len(report['profile_question_overlap']['flagged'])} profile/question overlaps flagged")


if __name__ == "__main__":
    main()
