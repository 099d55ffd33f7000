"""persona-votes stage: P(Aye) of every (person, question of votes.csv) from the teacher given
the person's profile, the base SLM given the profile, and the person's tuned model, and the base
and tuned models given the k passages of the person's text most like the question, read from
the " Aye"/" Nay" token probabilities; accuracy beside three baselines, balanced accuracy,
macro F1, Brier, log loss with bootstrap intervals over questions, McNemar against the best
baseline, per person and pooled; a plot of accuracy and balanced accuracy.

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
from decision_distill.lm.embeddings import embed
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import is_model_dir
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.params import check_personas_match, load_persona_params
from decision_distill.personas.retrieval import person_passages, retrieve, score_retrieval
from decision_distill.personas.votes import draw_votes, score_all, vote_table, votes_report

TEACHER, BASE, TUNED = "teacher+profile", "base+profile", "tuned"
BASE_RETRIEVAL, TUNED_RETRIEVAL = "base+retrieval", "tuned+retrieval"  # decision_distill/personas/retrieval.py


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
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--slm-params", type=Path, default=Path("params.yaml"),
                        help="reads the teacher.* and slm.* precision settings (default: %(default)s)")
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

    models = {TEACHER: lambda p: (teacher(), True), BASE: lambda p: (base(), True), TUNED: lambda p: (tuned(p), False)}
    v = params.votes
    start = time.perf_counter()
    r = v.retrieval  # retrieval first: an embedder problem stops the stage before any model scores
    retrieved = retrieve({p: person_passages(p, corpus.monologues[p], params.chunks.words) for p in personas},
                         questions, r.k, lambda texts: embed(texts, r.embedder))
    p_by, mass_by = score_all(table, questions, corpus.profiles, models, v.batch_size)
    extra = score_retrieval(table, questions, retrieved, {BASE_RETRIEVAL: lambda p: base(), TUNED_RETRIEVAL: tuned},
                            r.max_tokens, r.k, v.batch_size)
    p_by, mass_by = p_by | extra[0], mass_by | extra[1]
    seconds = time.perf_counter() - start
    report = votes_report(table, questions, p_by, mass_by, v.bootstrap, v.confidence, v.seed, TEACHER)
    report["scoring_seconds"] = seconds
    rows = [{"persona": str(table.persona[i]), "question": questions[table.question[i]],
             "vote": {1: "Aye", 0: "Nay", -1: None}[int(table.truth[i])],
             "recorded": str(table.recorded[i]),  # Aye, Nay, Abstain, Absent, blank or no_row
             **{f"p_aye[{m}]": float(p_by[m][i]) for m in p_by},
             **{f"option_mass[{m}]": float(mass_by[m][i]) for m in p_by},
             "retrieved": [x.id for x in retrieved[str(table.persona[i])][table.question[i]]]}
            for i in range(len(table.truth))]
    draw_votes(report, args.plot)
    write_json(rows, args.votes)
    write_json(report, args.metrics)
    pooled = report["pooled"]
    best = pooled["best_baseline"]
    reasons = ", ".join(f"{n} {r}" for r, n in pooled["unknown_by_reason"].items() if n)
    print(f"persona-votes: {pooled['known']} known votes ({pooled['unknown']} unknown{': ' + reasons if reasons else ''}) "
          f"in {seconds:.0f} s; "
          f"accuracy " + ", ".join(f"{m} {b['accuracy']:.2f}" for m, b in pooled["models"].items())
          + f"; best baseline {best} {pooled['baselines'][best]['accuracy']:.2f}")


if __name__ == "__main__":
    main()
