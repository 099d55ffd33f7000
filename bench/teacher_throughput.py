"""Teacher throughput: the naive transformers loop vs the pipeline's scorer, side by side.

Both score the default scenario's prompt on the same states with the same model
in one run. The naive loop feeds the full prompt for every state in padded
batches and computes logits at every position, as a plain transformers loop
does; the scorer reuses the shared prefix's key/value cache, batches suffixes
of similar length and projects only the last position onto the vocabulary.
Their answers are compared too: within 1e-4 in float32; in bfloat16 (teacher.dtype auto on a
processor with native bf16) the two paths round differently, and they must agree within the
stability stage's bound for bfloat16 (stability.numerics_tolerance). bench/dtype_fidelity.py
compares the two dtypes.

Last line: teacher_speedup=<x> states_per_s=<y>
"""

import argparse
import sys
import time

import numpy as np
import torch

from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.evaluation.stability_stats import numerics_tolerance
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.scorer import TokenScorer


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def load_scorer(teacher_dir, params_path: str = "params.yaml", n_states: int = 1000):
    """The pipeline's scorer on `teacher_dir`, the scenario's shared prefix and n sampled states' suffixes."""
    params = load_params(params_path)
    scenario = load_scenario(params.scenario)
    teacher = load_causal_lm(teacher_dir, params.teacher.dtype, params.teacher.device)
    states = scenario.sample_states(n_states, seed=12345)
    prefix, suffixes = scenario.token_prefix(), [scenario.describe_parts(s) for s in states]
    scorer = TokenScorer(teacher, [o.text for o in scenario.options], params.teacher.batch_size)
    return scorer, prefix, suffixes


def scorer_rate(scorer, prefix, suffixes):
    """(states/s, result) of the pipeline's scorer over all suffixes, after a warm-up that builds
    the prefix cache (as a real run pays it once)."""
    scorer.score(prefix, suffixes[:4])
    result, seconds = timed(scorer.score, prefix, suffixes)
    return len(suffixes) / seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="models/teacher", help="teacher directory from `dvc repro download`")
    parser.add_argument("--states", type=int, default=1000,
                        help="states for the pipeline's scorer; shared heads pay off with many states, as in a real run")
    parser.add_argument("--naive-states", type=int, default=32, help="states for the naive loop (it is slow)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    scorer, prefix, suffixes = load_scorer(args.teacher, args.params, args.states)
    print(f"torch threads={torch.get_num_threads()} device={scorer.device} dtype={scorer.dtype} "
          f"prefix_tokens={len(scorer.encode_prefix(prefix))} "
          f"mean_suffix_tokens={np.mean([len(scorer.encode_suffix(s)) for s in suffixes]):.1f}")

    scorer.score(prefix, suffixes[:4])  # warm-up, and the prefix cache is built once here
    # Host work that a GPU does not speed up: the scorer tokenizes every prompt whole (the
    # boundary check) and piece by piece, all in batched calls; per state, as a loop would do it:
    prompts = [prefix + "".join(s) for s in suffixes]
    _, one_by_one = timed(lambda: [(scorer.encode_prefix(p), scorer.encode_suffix(s))
                                   for p, s in zip(prompts, suffixes)])
    _, batched = timed(lambda: (scorer.encode_prompts(prompts), scorer.encode_suffixes(suffixes)))
    print(f"tokenizing {len(suffixes)} prompts whole and in pieces: {1e3 * one_by_one / len(suffixes):.3f} ms/state "
          f"one call each, {1e3 * batched / len(suffixes):.3f} ms/state batched ({one_by_one / batched:.1f}x)")
    naive, naive_s = timed(scorer.score_naive, prefix, suffixes[: args.naive_states])
    fast_rate, fast = scorer_rate(scorer, prefix, suffixes)
    naive_rate = args.naive_states / naive_s
    diff = np.abs(fast.probs[: args.naive_states] - naive.probs).max()
    dtype = scorer.dtype
    bound = 1e-4 if dtype == "float32" else numerics_tolerance(dtype)
    print(f"naive loop: {args.naive_states} states in {naive_s:.1f}s = {naive_rate:.2f} states/s")
    print(f"pipeline scorer: {len(suffixes)} states = {fast_rate:.2f} states/s")
    print(f"max |p_scorer - p_naive| = {diff:.2e} in {dtype} (must be <= {bound:g})")
    if torch.device(scorer.device).type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
              f"of {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    if diff > bound:
        sys.exit("scorer and naive loop disagree")
    print(f"teacher_speedup={fast_rate / naive_rate:.1f} states_per_s={fast_rate:.1f}")

if __name__ == "__main__":
    main()
