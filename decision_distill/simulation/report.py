"""The simulate stage's work: every simulation, with the teacher and each decider deciding,
compared at the population level (fidelity.compare), and the plots of it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import atomic_path, write_csv
from ..core.errors import UserError
from ..core.params import Params
from ..data.scenario_file import load_scenario
from ..lm.answer_cache import AnswerCache
from ..lm.source import is_model_marker
from ..slm.answers import SLM_TUNED, slm_model_dirs
from ..students.models import ensemble_dir, seed_dirs
from .config import MarketConfig, check_against_scenario, load_simulation
from .fidelity import compare, teacher_summary
from .market_report import generated_states, market_fqe, market_gap, prefetch_states
from .policy import ConstantPolicy, LookupPolicy, Policy
from .prompt_policy import PromptPolicy, SLMPolicy, TeacherPolicy
from .run import SERIES, run_replicates


def build_deciders(params: Params, scenario, students_dir: Path, slm_tuned: Path, train_split: Path,
                   decisions: Path, cache: AnswerCache) -> tuple[dict, dict, dict]:
    """(name -> Policy for each simulate.deciders entry that exists, name -> why it was skipped,
    name -> the students of its other training seeds). The reference deciders: `constant` at
    the training split's mean P(action) (train only, nothing from test), `lookup` the teacher's
    answers in `decisions` by state. `<arch>_ensemble` is the mean of the architecture's seeds."""
    deciders, skipped, other_seeds = {}, {}, {}
    trained_on = train_split if train_split.exists() else None
    for name in params.simulate.deciders:
        if name == "constant":
            deciders[name] = ConstantPolicy.training_mean(train_split, scenario.schema(), name)
            continue
        if name == "lookup":
            deciders[name] = LookupPolicy(decisions, scenario.schema(), name)
            continue
        if name == SLM_TUNED:
            if slm_model_dirs(params, slm_tuned, slm_tuned).get(SLM_TUNED) is None:
                skipped[name] = "no tuned small LM (slm.enabled is false or models/slm_merged is a marker)"
            else:
                deciders[name] = SLMPolicy(slm_tuned, scenario, params, cache, name=name)
            continue
        arch_dir = ensemble_dir(name, students_dir)
        directory = arch_dir or students_dir / name
        if not directory.is_dir():
            arch = directory.name
            raise UserError(f"{directory}: no trained '{arch}' student; run train@{arch} or remove {name} "
                            "from simulate.deciders")
        deciders[name] = Policy.load(directory, trained_on, ensemble=arch_dir is not None)
        if arch_dir is None:
            seeds = list(seed_dirs(directory).values())[1:]
            if seeds:
                other_seeds[name] = [Policy.load(d, trained_on) for d in seeds]
    return deciders, skipped, other_seeds


def simulate_all(params: Params, teacher_dir: Path, students_dir: Path, slm_tuned: Path, splits: Path,
                 decisions: Path, students_metrics: dict, out_dir: Path) -> dict:
    start = time.perf_counter()
    sim = params.simulate
    scenario = load_scenario(params.scenario)
    seeds = list(range(sim.seed, sim.seed + sim.replicates))
    report, runnable = {}, []
    for path in sim.simulations:
        config = load_simulation(path)
        if config.scenario != scenario.name:
            report[config.name] = {"skipped": f"written for scenario '{config.scenario}', the deciders were "
                                              f"trained on '{scenario.name}'"}
            continue
        check_against_scenario(config, scenario, path)
        if is_model_marker(teacher_dir):  # imported decisions: no teacher to compare the deciders with
            report[config.name] = {"skipped": "no teacher model (generate.source: import)"}
            continue
        report[config.name] = None  # filled below, in the order of simulate.simulations
        runnable.append(config)
    cache = AnswerCache(params.generate.cache)
    try:
        if runnable:  # the deciders are built only when a simulation runs (imported data has no teacher run)
            deciders, skipped, other_seeds = build_deciders(params, scenario, students_dir, slm_tuned,
                                                            splits / "train.parquet", decisions, cache)
            generated = generated_states(decisions)
        for config in runnable:
            teacher = TeacherPolicy(teacher_dir, scenario, params, cache)
            report[config.name] = one_simulation(config, scenario, teacher, deciders, skipped, seeds, sim,
                                                 students_metrics, out_dir, generated, other_seeds)
    finally:
        cache.close()
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def one_simulation(config, scenario, teacher, deciders, skipped, seeds, sim, students_metrics, out_dir,
                   generated: pd.DataFrame | None = None, other_seeds: dict | None = None) -> dict:
    """The teacher's days, then each decider's (each training seed's, where it has several),
    compared; for the market also FQE and the gap diagnostics."""
    series = SERIES[config.model]
    market = isinstance(config, MarketConfig)
    other_seeds = other_seeds or {}
    runs, logs, block = {}, {}, {"series": series, "population": sim.population, "replicates": len(seeds)}
    prompted = [teacher, *(d for d in deciders.values() if isinstance(d, PromptPolicy))]
    # With numbers a state follows from the decider's own choices (a purchase is a meal), so other
    # deciders' days would list states it never meets: prefetch only the discrete market's.
    prefetch = market and not config.numbers.names()
    prefetched = prefetch_states(config, scenario, prompted, sim.population, seeds) if prefetch else 0
    logs["teacher"] = [] if market else None
    runs["teacher"], seconds = run_replicates(config, scenario, teacher, sim.population, seeds, logs["teacher"])
    block["teacher"] = {**teacher_summary(runs["teacher"], series, sim.confidence),
                        "teacher_calls": teacher.computed, "distinct_states": teacher.asked,
                        "prefetched_states": prefetched,
                        "decisions": int(runs["teacher"]["decisions"].sum()), "seconds": round(seconds, 2)}
    block["deciders"] = {name: {"skipped": why} for name, why in skipped.items()}
    for name, decider in deciders.items():
        fallbacks_before = decider.fallbacks
        logs[name] = [] if market else None
        runs[name], seconds = run_replicates(config, scenario, decider, sim.population, seeds, logs[name])
        seed_runs = [run_replicates(config, scenario, d, sim.population, seeds)[0] for d in other_seeds.get(name, [])]
        block["deciders"][name] = {
            "kl_per_decision": (students_metrics.get(name) or {}).get("kl"),
            **compare(runs["teacher"], [runs[name], *seed_runs], series, sim.bootstrap, sim.confidence, sim.seed),
            "decisions": int(runs[name]["decisions"].sum()), "fallback_decisions": decider.fallbacks - fallbacks_before,
            "seconds": round(seconds, 2),
        }
    if market:
        block["fqe"] = market_fqe(config, scenario, {"teacher": teacher, **deciders}, logs, sim)
        block["gap"] = market_gap(config, scenario, deciders, logs, block["deciders"], generated)
    write_outputs(config.name, series, runs, out_dir)
    return block


def write_outputs(name: str, series: str, runs: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """<name>_ticks.csv (every decider's rows) and <name>.png (mean series per tick, with the
    range over replicates, and per-group buy rates where there are groups)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.concat([rows.assign(decider=d) for d, rows in runs.items()], ignore_index=True)
    write_csv(frame, out_dir / f"{name}_ticks.csv")
    groups = [c for c in frame.columns if c.startswith("buy_rate[")]
    fig, axes = plt.subplots(1, 2 if groups else 1, figsize=(12 if groups else 7, 4), squeeze=False)
    for d, rows in runs.items():
        per_tick = rows.groupby("tick")[series]
        line = axes[0, 0].plot(per_tick.mean().index, per_tick.mean(), label=d, lw=2.5 if d == "teacher" else 1.2)
        axes[0, 0].fill_between(per_tick.mean().index, per_tick.min(), per_tick.max(), alpha=0.12,
                                color=line[0].get_color())
    axes[0, 0].set(xlabel="tick", ylabel=series, title=f"{name}: {series} per tick (mean, range over replicates)")
    axes[0, 0].legend(fontsize=8)
    if groups:
        last = frame[frame["tick"] == frame["tick"].max()].groupby("decider")[groups].mean()
        last.columns = [g[len("buy_rate["):-1] for g in groups]
        last.T.plot.bar(ax=axes[0, 1], rot=30, fontsize=8)
        axes[0, 1].set(ylabel="purchases per decision", title="buy rate per trait group")
    fig.tight_layout()
    with atomic_path(out_dir / f"{name}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def read_students_metrics(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path}: not found; run the evaluate stage first (kl_per_decision comes from it)")
    return json.loads(path.read_text())


def json_safe(obj):
    """JSON-safe: NaN (a group nobody in it decided) becomes null."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
