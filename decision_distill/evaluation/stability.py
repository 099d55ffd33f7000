"""The stability stage: how consistent the teacher is, and the noise floor students are read against.

It takes the first `stability.states` states of the test split (data/splits/test.parquet),
the states every student is scored on (generate asked them, so their canonical token
answers are in the answer cache already), and reads the teacher under three sources
of variation, each reported on its own:

  sampling  verbalized answers ({"<key>": p, "explanation": ...}) sampled at
            stability.temperature, stability.repeats times per state. Answers that
            fail the strict parse are counted, never coerced; the statistics use
            the parsed ones.
  wording   the answer-token readout under stability.paraphrases wordings of the
            prompt (the scenario's prompt.paraphrases; wording 0 is the canonical
            prompt) and stability.shot_orders seeded reorderings of the worked
            examples in the canonical wording.
  numerics  the canonical prompts scored again in each of stability.batch_sizes, in
            reversed order, and without prefix reuse (TokenScorer.score_naive): the
            differences should be ~1e-6 in float32, i.e. the scorer is deterministic;
            above NUMERICS_TOLERANCE (1e-3 in float32, a measured bound in bfloat16)
            the stage fails.

Statistics per source (P(action) per state and run) are defined in
decision_distill.evaluation.icc and .stability_stats. The noise floor is the wording source read as a
distance: KL(canonical ‖ other) and MSE between the canonical prompt's
distribution and each other wording's / example order's, averaged over states
and then over those runs; per state and run in data/noise_floor.parquet
(decision_distill.evaluation.noise_floor). It has the same direction and reference as a
student's kl and mse (the teacher's canonical answers against something else),
and is measured on test states as they are, so a student's kl / noise_floor.kl near 1
means it is as close to the teacher as the teacher is to itself under an equally
valid prompt.

Every teacher answer goes through the answer cache: canonical answers are
generate's own entries; sampled answers are keyed with their repeat index and
seed, so a rerun (or a run resumed after a kill) asks only what is missing.
The numerics check is recomputed on every run on purpose: it measures the scorer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..core.params import Params, Stability
from ..data.scenario import Scenario, State
from ..data.scenario_file import check_stability_settings
from ..lm.answer_cache import AnswerCache
from ..lm.load import LoadedModel, load_causal_lm
from ..lm.scorer import TokenScorer
from ..lm.source import is_model_marker, read_model_json
from ..lm.verbalized import VerbalizedReader
from ..teacher.ask import (Prompts, Readout, answer_keys, ask_into_cache, build_prompts, missing, option_texts,
                           verbalized_answer)
from .icc import NONE_MEASURED, TOO_FEW, summarize
from .noise_floor import floor_intervals, floor_states, floor_summary, per_state_floor
from .stability_stats import explanation_cosine, numerics_metrics, p_action, readout_agreement

CANONICAL = "canonical"


def example_orders(n_examples: int, count: int, seed: int) -> list[tuple[int, ...]]:
    """`count` distinct seeded permutations of the worked examples, none the original order."""
    rng = np.random.default_rng(seed)
    identity = tuple(range(n_examples))
    orders: list[tuple[int, ...]] = []
    while len(orders) < count:
        order = tuple(int(i) for i in rng.permutation(n_examples))
        if order != identity and order not in orders:
            orders.append(order)
    return orders


def wording_runs(scenario: Scenario, s: Stability) -> dict[str, Scenario]:
    """The scenario as each wording run asks it; the canonical prompt comes first."""
    runs = {CANONICAL: scenario.reworded(0)}
    runs |= {f"paraphrase {k}": scenario.reworded(k) for k in range(1, s.paraphrases)}
    for order in example_orders(len(scenario.examples), s.shot_orders, s.seed):
        runs["examples " + "-".join(map(str, order))] = scenario.reworded(0, order)
    return runs


def sample_seed(base: int, group: int) -> int:
    """The torch seed of one group of sampled answers, derived from stability.seed."""
    return int(np.random.SeedSequence([base, group]).generate_state(1)[0])


@dataclass
class Context:
    params: Params
    scenario: Scenario
    states: list[State]
    teacher: LoadedModel
    cache: AnswerCache

    @property
    def settings(self) -> Stability:
        return self.params.stability

    def readout(self, **changes) -> Readout:
        """The teacher's readout (params' teacher section) with `changes`."""
        return Readout.teacher(self.params).with_(**changes)

    def prompts(self, scenario: Scenario, readout: Readout) -> Prompts:
        return build_prompts(scenario, self.states, readout, self.teacher.tokenizer)


# ---- the three sources -------------------------------------------------------------

def read_tokens(ctx: Context, scenario: Scenario, desc: str) -> np.ndarray:
    """P(option | state) [states, options] under `scenario`'s prompt, through the cache."""
    readout = ctx.readout(readout="tokens")
    prompts = ctx.prompts(scenario, readout)
    keys = answer_keys(ctx.teacher.fingerprint, prompts, scenario, readout)
    todo = missing(ctx.cache, keys)
    if todo:
        ask_into_cache(ctx.teacher, scenario, readout, prompts, keys, todo, ctx.cache, desc)
    answers = ctx.cache.get_many(keys)
    return np.array([answers[k]["probs"] for k in keys], dtype=float)


def read_wording(ctx: Context) -> dict[str, np.ndarray]:
    return {name: read_tokens(ctx, variant, name) for name, variant in wording_runs(ctx.scenario, ctx.settings).items()}


def read_sampling(ctx: Context) -> tuple[np.ndarray, list[list[str | None]]]:
    """Sampled verbalized answers: P(action) [states, repeats] (NaN where the parse failed)
    and the explanations. Answers are sampled in fixed groups of teacher.batch_size
    (state-major, so more states later keeps the earlier groups), each group with its
    own seed, and committed to the cache group by group."""
    # Sampled answers whatever the teacher's own readout: the answer length is teacher.max_new_tokens,
    # the seeds stability's own (sample_seed below).
    t = ctx.readout(readout="verbalized", temperature=ctx.settings.temperature,
                    max_new_tokens=ctx.params.teacher.max_new_tokens)
    repeats = ctx.settings.repeats
    prompts = ctx.prompts(ctx.scenario, t)
    jobs = [(i, r) for i in range(len(ctx.states)) for r in range(repeats)]
    job_prompts = Prompts(prompts.prefix, [prompts.suffixes[i] for i, _ in jobs])
    seeds = [sample_seed(ctx.settings.seed, g) for g in range(math.ceil(len(jobs) / t.batch_size))]
    samples = [{"repeat": r, "seed": seeds[j // t.batch_size]} for j, (_, r) in enumerate(jobs)]
    keys = answer_keys(ctx.teacher.fingerprint, job_prompts, ctx.scenario, t, samples)
    todo = set(missing(ctx.cache, keys))
    reader = VerbalizedReader(ctx.teacher, ctx.scenario.verbalized_key, t.max_new_tokens, t.temperature,
                              t.batch_size)
    with tqdm(total=len(todo), desc="sampling", unit="answer") as bar:
        for g, seed in enumerate(seeds):
            idx = [j for j in range(g * t.batch_size, min((g + 1) * t.batch_size, len(jobs))) if j in todo]
            if idx:
                parsed = reader.answer(job_prompts.prefix, [job_prompts.suffixes[j] for j in idx], seed=seed)
                ctx.cache.put_many({keys[j]: verbalized_answer(p) for j, p in zip(idx, parsed)})
                bar.update(len(idx))
    answers = ctx.cache.get_many(keys)
    p = np.full((len(ctx.states), repeats), np.nan)
    explanations: list[list[str | None]] = [[None] * repeats for _ in ctx.states]
    for key, (i, r) in zip(keys, jobs):
        if answers[key]["ok"]:
            p[i, r], explanations[i][r] = answers[key]["probs"][0], answers[key]["explanation"]
    return p, explanations


def read_numerics(ctx: Context) -> dict[str, np.ndarray]:
    """The canonical prompts scored again: per batch size, in reversed order, and naively."""
    readout = ctx.readout(readout="tokens")
    prompts = ctx.prompts(ctx.scenario, readout)
    options = option_texts(ctx.scenario, readout, ctx.teacher.tokenizer)
    scorer = TokenScorer(ctx.teacher, options, readout.batch_size)
    n = len(ctx.states)
    runs = {}
    with tqdm(total=n * (len(ctx.settings.batch_sizes) + 2), desc="numerics", unit="state") as bar:
        for size in ctx.settings.batch_sizes:
            runs[f"batch {size}"] = TokenScorer(ctx.teacher, options, size).score(
                prompts.prefix, prompts.suffixes, on_batch=bar.update).probs
        runs["reversed order"] = scorer.score(prompts.prefix, prompts.suffixes[::-1], on_batch=bar.update).probs[::-1]
        runs["no prefix reuse"] = scorer.score_naive(prompts.prefix, prompts.suffixes).probs
        bar.update(n)
    return runs


# ---- putting it together ---------------------------------------------------------

def _readings(source: str, runs: list[str], p: np.ndarray, explanations=None, state_ids=None) -> pd.DataFrame:
    ids = range(p.shape[0]) if state_ids is None else state_ids
    rows = [{"source": source, "run": run, "state_id": int(ids[i]), "p_action": p[i, r],
             "explanation": explanations[i][r] if explanations else None}
            for r, run in enumerate(runs) for i in range(p.shape[0])]
    return pd.DataFrame(rows, columns=["source", "run", "state_id", "p_action", "explanation"])


def sampling_metrics(ctx: Context, canonical: np.ndarray) -> tuple[dict, pd.DataFrame]:
    if len(ctx.scenario.options) != 2:
        return {"skipped": "verbalized answers need a two-option scenario"}, _readings("sampling", [], np.empty((0, 0)))
    p, explanations = read_sampling(ctx)
    runs = [f"repeat {r}" for r in range(ctx.settings.repeats)]
    failures = int(np.isnan(p).sum())
    metrics = summarize(p, runs) | {
        "temperature": ctx.settings.temperature,
        "parse_failures": failures,
        "parse_failure_rate": failures / p.size,
        "note": "statistics over the parsed answers only; failed parses are counted, never coerced",
        "explanation_cosine": explanation_cosine(explanations),
        "verbalized_vs_tokens": readout_agreement(p, canonical[:, 0]),
    }
    return metrics, _readings("sampling", runs, p, explanations)


def measure_stability(params: Params, scenario: Scenario, teacher_dir: str | Path,
                      test_split: str | Path | pd.DataFrame) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The metrics of metrics/stability.json, the readings (one row per source, run and state)
    and the noise floor per state and wording run (noise_floor.per_state_floor), measured on
    the first stability.states states of `test_split` (test.parquet or its frame)."""
    check_stability_settings(params.stability, scenario)
    if is_model_marker(teacher_dir):
        reason = read_model_json(teacher_dir).get("reason", "no teacher model")
        return ({"skipped": f"{reason}: no teacher to measure", "noise_floor": None},
                _readings("none", [], np.empty((0, 0))), per_state_floor(np.empty((0, 0)), {}, []))
    t = params.teacher
    states, ids = floor_states(test_split, scenario, params.stability.states)
    ctx = Context(params, scenario, states, load_causal_lm(teacher_dir, t.dtype, t.device, t.trust_remote_code),
                  AnswerCache(params.generate.cache))
    try:
        wording = read_wording(ctx)
        sampling, sampling_rows = sampling_metrics(ctx, wording[CANONICAL])
        numerics = read_numerics(ctx)
    finally:
        ctx.cache.close()
    others = {name: probs for name, probs in wording.items() if name != CANONICAL}
    floor = per_state_floor(wording[CANONICAL], others, ids)
    metrics = {
        "states": len(states),
        "noise_floor": floor_summary(wording[CANONICAL], others) | floor_intervals(floor, params.stability.seed) | {
            "split": "test", "states": len(states),
            "pairing": "KL(canonical || run) and MSE per other wording run, averaged over states, then runs"},
        "sampling": sampling,
        "wording": summarize(p_action(wording), list(wording)),
        "numerics": numerics_metrics(numerics, ctx.teacher.dtype),
    }
    sampling_rows["state_id"] = [ids[i] for i in sampling_rows["state_id"]]
    readings = pd.concat([sampling_rows, _readings("wording", list(wording), p_action(wording), state_ids=ids),
                          _readings("numerics", list(numerics), p_action(numerics), state_ids=ids)],
                         ignore_index=True)
    return metrics, readings, floor


def describe(metrics: dict) -> list[str]:
    """Plain-language lines for the stage's output; 'no variation measured' where there was none."""
    if "skipped" in metrics:
        return [f"stability skipped: {metrics['skipped']}"]
    lines = []
    for source in ("sampling", "wording", "numerics"):
        m = metrics[source]
        if "skipped" in m:
            lines.append(f"{source}: skipped ({m['skipped']})")
        elif m["variation"] == NONE_MEASURED:
            lines.append(f"{source}: no variation measured: every state's std is 0, so the ICC is undefined "
                         "and not reported")
        elif m["variation"] == TOO_FEW:
            lines.append(f"{source}: too few answers to measure variation (fewer than two states with two "
                         "answers); no statistics reported")
        else:
            icc = ", ".join(f"ICC({k[-1]},1) {m[k]['value']:.3f} [{m[k]['ci95'][0]:.3f}, {m[k]['ci95'][1]:.3f}]"
                            for k in ("icc2", "icc3") if m[k]) or "no ICC (fewer than two states with every run)"
            lines.append(f"{source}: mean per-state std {m['mean_state_std']:.4g}, MARD {m['mard']:.4g}, {icc}")
        if source == "sampling" and "parse_failures" in m:
            lines.append(f"sampling: {m['parse_failures']} of {m['readings'] + m['missing_readings']} answers "
                         "failed the strict parse")
        if source == "numerics":
            lines.append(f"numerics: max |difference| {m['max_abs_diff']:.3g}, mean {m['mean_abs_diff']:.3g}")
    floor = metrics["noise_floor"]
    ci = {m: "[{:.4g}, {:.4g}]".format(*floor[f"{m}_ci95"]) if floor.get(f"{m}_ci95") else "no interval"
          for m in ("kl", "mse")}
    lines.append(f"noise floor (wording, {floor['states']} test states): KL {floor['kl']:.4g} 95 % CI {ci['kl']} "
                 f"(runs {floor['kl_min']:.4g}-{floor['kl_max']:.4g}), MSE {floor['mse']:.4g} 95 % CI {ci['mse']} "
                 f"(runs {floor['mse_min']:.4g}-{floor['mse_max']:.4g})")
    return lines
