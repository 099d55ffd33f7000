"""bfloat16 vs float32 teacher: the fidelity cost and the speed, side by side in one run.

Scores the same states with the pipeline's scorer in float32 and in bfloat16 (the
same model directory, loaded twice; the dtypes take turns chunk by chunk, so load from
other processes falls on both alike) and prints:
  - max and mean |P_bf16 - P_fp32| and mean KL(P_fp32 || P_bf16) over the options;
  - in each dtype, the scorer vs the naive loop (full prompt, no prefix reuse) on the
    first --naive-states states, and the scorer at another batch size (what the stability
    stage's numerics check compares), and the LM-head probe's gap (scorer_checks);
  - states/s of the scorer in each dtype and their ratio;
  - the criterion for making bfloat16 the default: KL(fp32 || bf16) < 0.1 x the teacher's
    wording noise floor KL (metrics/stability.json, noise_floor.kl).

With --int8, a third teacher takes its turn: the float32 model with its decoder's linear
layers quantized to int8 (torch.ao dynamic quantization, int8 matrix products through
fbgemm/VNNI), the lever left after bfloat16; its KL to float32 is held to the same bar.

Last line: dtype_kl=<kl> bar=<bar> criterion=<pass|fail> bf16_speedup=<x>
  [int8_kl=<kl> int8_criterion=<pass|fail> int8_vs_bf16_speed=<x>]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.runtime import cpu_has_fast_bf16
from decision_distill.lm.scorer import TokenScorer, final_logits
from decision_distill.lm.scorer_checks import head_matches_model

EPS = 1e-12


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row (natural log), as metrics.py computes the students' KL."""
    p, q = np.clip(p, EPS, 1), np.clip(q, EPS, 1)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def head_gap(teacher, prompt_ids: list[int]) -> float:
    """The LM-head probe's max |difference| in P (scorer_checks.head_matches_model's measure)."""
    model = teacher.model
    ids = torch.tensor([prompt_ids], device=teacher.device)
    with torch.inference_mode():
        own = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().softmax(-1)
        fast = final_logits(model, model.get_decoder()(input_ids=ids).last_hidden_state[:, -1]).float().softmax(-1)
    return float((own - fast).abs().max())


def timed_interleaved(scorers: dict, prefix, suffixes, chunk: int) -> tuple[dict, dict]:
    """Each dtype's scores and states/s, timed chunk by chunk in turn, so that other load on
    a shared machine falls on both dtypes alike (the ratio is what is compared)."""
    seconds, parts = dict.fromkeys(scorers, 0.0), {name: [] for name in scorers}
    for start in range(0, len(suffixes), chunk):
        for name, scorer in scorers.items():
            began = time.perf_counter()
            parts[name].append(scorer.score(prefix, suffixes[start : start + chunk]).probs)
            seconds[name] += time.perf_counter() - began
        print(f"  scored {min(start + chunk, len(suffixes))}/{len(suffixes)} states in each dtype "
              f"({', '.join(f'{n} {s:.0f} s' for n, s in seconds.items())})", flush=True)
    return ({name: np.concatenate(p) for name, p in parts.items()},
            {name: len(suffixes) / s for name, s in seconds.items()})


def checks(scorer, teacher, options, prefix, suffixes, probs, other_batch: int) -> dict:
    """What the pipeline compares within one dtype: the scorer vs the naive loop and vs another
    batch size (the stability stage's numerics check), and the LM-head probe (scorer_checks)."""
    naive = scorer.score_naive(prefix, suffixes).probs
    other = TokenScorer(teacher, options, other_batch).score(prefix, suffixes).probs
    probe = scorer.encode_prefix(prefix + "".join(suffixes[0]))
    return {"naive_diff": float(np.abs(probs[: len(suffixes)] - naive).max()),
            "batch_diff": float(np.abs(probs[: len(suffixes)] - other).max()),
            "head_gap": head_gap(teacher, probe), "fast_head": scorer.fast_head,
            "head_ok": head_matches_model(teacher.model, probe, final_logits, warn=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="models/teacher", help="teacher directory from `dvc repro download`")
    parser.add_argument("--stability", default="metrics/stability.json", help="for the wording noise floor")
    parser.add_argument("--states", type=int, default=1000, help="states scored in each dtype")
    parser.add_argument("--naive-states", type=int, default=32, help="states for the naive-loop and batch checks")
    parser.add_argument("--other-batch", type=int, default=7, help="second batch size for the numerics check")
    parser.add_argument("--chunk", type=int, default=200, help="states per timed chunk (dtypes take turns)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--int8", action="store_true", help="also score a dynamically int8-quantized teacher")
    args = parser.parse_args()

    params = load_params(args.params)
    scenario = load_scenario(params.scenario)
    states = scenario.sample_states(args.states, seed=12345)
    prefix, suffixes = scenario.token_prefix(), [scenario.describe_parts(s) for s in states]
    options = [o.text for o in scenario.options]
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} device={args.device} "
          f"cpu_has_fast_bf16={cpu_has_fast_bf16()} states={args.states} batch={params.teacher.batch_size}")
    teachers = {dtype: load_causal_lm(args.teacher, dtype, args.device) for dtype in ("float32", "bfloat16")}
    if args.int8:
        teachers["int8"] = load_causal_lm(args.teacher, "float32", args.device)
        teachers["int8"].model.model = torch.ao.quantization.quantize_dynamic(
            teachers["int8"].model.model, {torch.nn.Linear}, dtype=torch.qint8)
    scorers = {dtype: TokenScorer(t, options, params.teacher.batch_size) for dtype, t in teachers.items()}
    for scorer in scorers.values():
        scorer.score(prefix, suffixes[:4])  # warm-up; the prefix cache is built once, as in a run
    probs, rates = timed_interleaved(scorers, prefix, suffixes, args.chunk)
    runs = {dtype: {"rate": rates[dtype], "probs": probs[dtype],
                    **checks(scorers[dtype], teachers[dtype], options, prefix, suffixes[: args.naive_states],
                             probs[dtype], args.other_batch)} for dtype in teachers}
    fp32, bf16 = runs["float32"]["probs"], runs["bfloat16"]["probs"]
    delta, kl = np.abs(bf16 - fp32), kl_rows(fp32, bf16)
    for dtype, r in runs.items():
        print(f"{dtype:>8}: scorer {r['rate']:.2f} states/s | max |scorer - naive| {r['naive_diff']:.2e} | "
              f"max |batch {params.teacher.batch_size} - batch {args.other_batch}| {r['batch_diff']:.2e} | "
              f"LM-head probe gap {r['head_gap']:.2e} (fast head used: {r['fast_head']})")
    print(f"bf16 vs fp32 over {len(fp32)} states: max |dP| {delta.max():.4f}, mean |dP| {delta.mean():.5f}, "
          f"mean KL(fp32||bf16) {kl.mean():.2e} (max {kl.max():.2e}, p95 {np.quantile(kl, 0.95):.2e})")
    floor = json.loads(Path(args.stability).read_text())["noise_floor"]["kl"]
    bar = 0.1 * floor
    verdict = "pass" if kl.mean() < bar else "fail"
    speedup = runs["bfloat16"]["rate"] / runs["float32"]["rate"]
    print(f"criterion: mean KL {kl.mean():.2e} < 0.1 x wording noise floor {floor:.4f} = {bar:.2e}: {verdict}")
    last = f"dtype_kl={kl.mean():.3e} bar={bar:.3e} criterion={verdict} bf16_speedup={speedup:.2f}"
    if args.int8:
        int8_delta, int8_kl = np.abs(runs["int8"]["probs"] - fp32), kl_rows(fp32, runs["int8"]["probs"])
        print(f"int8 vs fp32: max |dP| {int8_delta.max():.4f}, mean |dP| {int8_delta.mean():.5f}, "
              f"mean KL(fp32||int8) {int8_kl.mean():.2e}")
        last += (f" int8_kl={int8_kl.mean():.3e} int8_criterion={'pass' if int8_kl.mean() < bar else 'fail'} "
                 f"int8_vs_bf16_speed={runs['int8']['rate'] / runs['bfloat16']['rate']:.2f}")
    print(last)


if __name__ == "__main__":
    main()
