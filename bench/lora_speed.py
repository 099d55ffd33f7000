"""How fast does lora-train step on this machine, and how much memory does it need?

Loads the SLM (default: models/slm, the packaged Gemma-3-270M after download@slm),
puts the LoRA adapter of params.yaml on it and times, through the stage's own code
(lora.AnswerReadout, its loss and the LoRA trainer's step), `--steps` optimizer steps on
short prompts of sampled scenario states, then one validation pass over
`--val-states` states. Prints the projected time of the default stage: model
load + lora.max_steps steps + a validation pass at step 0 and at every checkpoint.

Runs it in float32 and in bfloat16 as lora-train trains it (float32 master
weights, accelerate's bf16 autocast), one after the other, and once more in float32
with every row running its whole prompt instead of sharing the prefix's forward pass
(the layout lora-train used before it shared the prefix).
The last line printed is `steps_per_s float32=<n> bfloat16=<n> ratio=<x> val_states_per_s ... peak_rss_mb=<n>`.
Torch uses its default thread count (set OMP_NUM_THREADS to change it).
"""

from __future__ import annotations

import argparse
import resource
import time

import pandas as pd
import torch

from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.runtime import cpu_has_fast_bf16
from decision_distill.lm.scorer import TokenScorer
from decision_distill.lora.trainer import LoraTrainer, Precision, make_accelerator
from decision_distill.slm import lora


def sampled_frame(scenario, n: int) -> pd.DataFrame:
    """States as a split would hold them, with an even teacher distribution (speed only)."""
    states = scenario.sample_states(n, seed=0)
    k = len(scenario.options)
    return pd.DataFrame([{**s, **{f"p_{o.id}": 1 / k for o in scenario.options}} for s in states])


def time_dtype(args, params, scenario, dtype: str, frozen: str = "float32", share_prefix: bool = True) -> dict:
    """Steps/s and validation states/s of the stage's own training code with slm.dtype `dtype`:
    float32, or bfloat16 as lora-train runs it (float32 master weights under accelerate's bf16
    autocast). `frozen`: the dtype the frozen base weights are loaded in (the LoRA weights
    stay float32 either way)."""
    autocast = dtype == "bfloat16"
    accelerator = make_accelerator("cpu", Precision(frozen, autocast, "bench"), params.lora.batch_size)
    started = time.perf_counter()
    slm = load_causal_lm(args.slm, frozen, "cpu", params.slm.trust_remote_code)
    load_s = time.perf_counter() - started
    scorer = TokenScorer(slm, [o.text for o in scenario.options])
    batch = params.lora.batch_size
    train = lora.build_examples(sampled_frame(scenario, batch * (args.steps + 1)), scenario, scorer, False)
    val = lora.build_examples(sampled_frame(scenario, args.val_states), scenario, scorer, False)
    module = lora.AnswerReadout(lora.with_lora(slm.model, params.lora, "lora.target_modules"), scorer.option_ids,
                                share_prefix=share_prefix)
    objective = lora.Distillation(train, val, scorer.pad_id, 0.0, params.slm.batch_size, accelerator.device)
    run = LoraTrainer(params.lora, accelerator, module, len(train), objective.loss, "bench", "bench")

    run.step(1)  # warm-up: first-call allocations
    started = time.perf_counter()
    for step in range(2, args.steps + 2):
        run.step(step)
    step_s = (time.perf_counter() - started) / args.steps
    started = time.perf_counter()
    objective.validate(run.module, 0)
    val_rate = len(val) / (time.perf_counter() - started)
    val_rows = 200  # the default split's validation states (10 % of 2,000)
    passes = 1 + -(-params.lora.max_steps // params.lora.checkpoint_every)
    projected = load_s + params.lora.max_steps * step_s + passes * val_rows / val_rate
    layout = "shared prefix" if share_prefix else "whole prompts"
    tokens = len(train.prefix) + sum(map(len, train.ids)) / len(train)
    print(f"{dtype:>8} (frozen base {frozen}, {layout}): prompt tokens mean {tokens:.1f}; batch {batch}: "
          f"{step_s:.2f} s/step; validation {val_rate:.1f} states/s; projected default run "
          f"({params.lora.max_steps} steps, {passes} validation passes of {val_rows}): {projected / 60:.1f} min",
          flush=True)
    return {"steps_per_s": 1 / step_s, "val_rate": val_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slm", default="models/slm", help="SLM model directory (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps to time (default: %(default)s)")
    parser.add_argument("--val-states", type=int, default=32, help="states in the timed validation pass")
    args = parser.parse_args()

    params = load_params(args.params)
    params = params.model_copy(update={"slm": params.slm.model_copy(update={"device": "cpu"})})
    scenario = load_scenario(params.scenario)
    print(f"cpu_has_fast_bf16={cpu_has_fast_bf16()} threads={torch.get_num_threads()}", flush=True)
    runs = {dtype: time_dtype(args, params, scenario, dtype) for dtype in ("float32", "bfloat16")}
    runs["bf16_base"] = time_dtype(args, params, scenario, "bfloat16", frozen="bfloat16")
    runs["whole"] = time_dtype(args, params, scenario, "float32", share_prefix=False)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    print(f"steps_per_s float32={fp32['steps_per_s']:.3f} bfloat16={bf16['steps_per_s']:.3f} "
          f"ratio={bf16['steps_per_s'] / fp32['steps_per_s']:.2f} val_states_per_s float32={fp32['val_rate']:.2f} "
          f"bfloat16={bf16['val_rate']:.2f} peak_rss_mb={peak_mb:.0f}")
    base = runs["bf16_base"]
    print(f"bf16_frozen_base steps_per_s={base['steps_per_s']:.3f} ratio_to_bfloat16={base['steps_per_s'] / bf16['steps_per_s']:.2f} "
          f"val_states_per_s={base['val_rate']:.2f}")
    whole = runs["whole"]
    print(f"float32 shared_prefix/whole_prompts steps_per_s ratio={fp32['steps_per_s'] / whole['steps_per_s']:.2f} "
          f"val_states_per_s ratio={fp32['val_rate'] / whole['val_rate']:.2f}")


if __name__ == "__main__":
    main()
