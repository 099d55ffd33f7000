"""persona-split stage: read a persona corpus, cut monologues into chunks of about
chunks.words words, hold out whole monologues per person (seeded). Writes one
NAME.json per person into --out, so a change to one person's text reruns only that
person's training.

example:
  python stages/persona_split.py --params personas/params.yaml --out data/personas/chunks \
      --metrics metrics/personas/split.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.atomic import write_json
from decision_distill.core.errors import stage_main
from decision_distill.personas.chunks import mean_words, split_corpus, split_summary, write_chunks
from decision_distill.personas.corpus import NO_VOTES, load_corpus
from decision_distill.personas.params import check_personas_match, load_persona_params


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("personas/params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/personas/chunks"),
                        help="directory for one NAME.json per person (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/personas/split.json"))
    args = parser.parse_args(argv)
    params = load_persona_params(args.params)
    corpus = load_corpus(params.corpus.path)
    check_personas_match(params, corpus.personas, str(args.params))
    chunks = split_corpus(corpus, params.chunks.words, params.chunks.held_out, params.chunks.seed, params.corpus.path)
    summary = {"personas": split_summary(chunks), "mean_chunk_words": mean_words(chunks),
               "votes": len(corpus.votes), "vote_questions": len({v.question for v in corpus.votes}),
               "aye_share": (sum(v.vote == "Aye" for v in corpus.votes) / len(corpus.votes)) if corpus.votes else None,
               # rows of votes.csv recording no vote: left out of every vote metric, counted here
               "no_votes": {r.lower(): sum(v.vote == r for v in corpus.no_votes) for r in NO_VOTES}}
    write_chunks(chunks, corpus.profiles, params.corpus.path, args.out)
    write_json(summary, args.metrics)
    print(f"persona-split: {len(chunks)} chunks of {len(corpus.personas)} personas in {args.out}")


if __name__ == "__main__":
    main()
