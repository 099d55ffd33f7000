"""Does active sampling reach random sampling's fidelity with fewer teacher answers?

Per seed, one fixed random test set (the first --test states of the seeded random stream,
the active run's reserve), then two training sequences of teacher answers:
  random  the random stream after the test states (what generate.strategy random asks)
  active  decision_distill.teacher.active's picks (generate.active params, --rounds overriding rounds)
For each budget b in --budgets the student (--student, trained by the pipeline's own
train_student with params.yaml's train/student settings, 10% of the b answers as its
validation split) is trained on the first b answers of each sequence and scored by test
KL(teacher || student). Active rounds are in order, so its first b answers are what an
active run with budget b would have asked up to the round boundary.

Every answer goes through the answer cache (--cache), so rerunning costs no teacher
time, and random and active share the answers they have in common (the test set, the
seed states). --teacher synthetic is a function of the state with known effects and
interactions (no model); a teacher directory (models/teacher) asks the real teacher.

Writes --out/curves.csv and --out/active_vs_random.png (mean test KL over seeds with a
t interval on log KL). Last line: `answers_to_match_random_<B>=<n> saving=<B/n>`, B the largest
budget: the answers active needs for random's mean KL at B (log-linear interpolation
between budgets; ">max" when it never gets there).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from decision_distill.core.atomic import write_parquet
from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.stats.metrics import kl
from decision_distill.students.models import load_student, predict
from decision_distill.students.train import train_student
from decision_distill.teacher.active import active_states, cached_ask

SYNTHETIC_EFFECTS = {"likes_sweets": 1.5, "dislikes_sweets": -2.0, "health_conscious": -0.7,
                     "lactose_intolerant": -1.2, "cheap": -0.6, "spender": 0.5, "impulsive_buyer": 0.8,
                     "hungry": 0.6, "on_a_diet": -1.0, "truck_nearby": 0.9, "hot_summer_day": 1.2,
                     "cold_winter_day": -1.5, "discount": 0.4, "after_workout": 0.3}


def synthetic_teacher(state) -> list[float]:
    """Known main effects on the log-odds plus interactions a student has to find."""
    v = set(state.get("traits", [])) | set(state.get("contexts", []))
    z = -0.3 + sum(SYNTHETIC_EFFECTS.get(x, 0.0) for x in v)
    z += 2.5 * ({"cheap", "discount"} <= v) - 2.0 * ({"lactose_intolerant", "hungry"} <= v)
    z += 1.5 * ({"impulsive_buyer", "truck_nearby"} <= v) * ("cold_winter_day" in v)
    p = 1 / (1 + np.exp(-z))
    return [p, 1 - p]


def make_ask(args, scenario, params, cache):
    if args.teacher == "synthetic":
        return cached_ask(synthetic_teacher, cache, "synthetic-ice-cream-v1")
    from decision_distill.teacher.ask import teacher_answers
    return lambda states: teacher_answers(args.teacher, scenario, states, params, cache)


def frame_of(scenario, states, answers) -> pd.DataFrame:
    opts = scenario.schema().options
    rows = [{"state_id": i, **s, **{f"p_{o}": p for o, p in zip(opts, a["probs"] or [np.nan] * len(opts))},
             "ok": bool(a["ok"])} for i, (s, a) in enumerate(zip(states, answers))]
    return pd.DataFrame(rows)


def test_kl(scenario, params, arch, train: pd.DataFrame, test: pd.DataFrame, seed: int, work: Path) -> float:
    """Train `arch` on `train` (10% of it as validation, seeded) and return its test KL."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(train), dtype=bool)
    is_val[rng.permutation(len(train))[: max(1, len(train) // 10)]] = True
    splits = work / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    scenario.schema().save(splits / "features.json")
    write_parquet(train[~is_val].reset_index(drop=True), splits / "train.parquet")
    write_parquet(train[is_val].reset_index(drop=True), splits / "val.parquet")
    train_student(arch, params, splits, work / "model", work / "live")
    model, encoder = load_student(work / "model")
    teacher = test[list(scenario.schema().prob_columns)].to_numpy(dtype=float)
    return kl(teacher, predict(model, encoder, test))


def interval(values: np.ndarray, confidence=0.95) -> tuple[float, float, float]:
    """Geometric mean over seeds with a t interval on log KL: KL is positive and spans
    orders of magnitude, so an interval on the raw scale can go below 0."""
    logs = np.log(values)
    mean = float(np.mean(logs))
    if len(values) < 2:
        return float(np.exp(mean)), float("nan"), float("nan")
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * stats.sem(logs)
    return float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half))


def answers_to_match(curve: pd.DataFrame, target: float) -> float:
    """Smallest budget where the active mean KL reaches `target`, interpolated in log KL."""
    b, y = curve["budget"].to_numpy(float), np.log(curve["kl"].to_numpy(float))
    t = np.log(target)
    for i in range(len(b)):
        if y[i] <= t:
            if i == 0:
                return b[0]
            return b[i - 1] + (b[i] - b[i - 1]) * (y[i - 1] - t) / (y[i - 1] - y[i])
    return float("inf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="synthetic", help="synthetic, or a teacher directory (default: %(default)s)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--cache", default=None, help="answer cache (default: generate.cache from --params)")
    p.add_argument("--student", default="mlp")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=int, nargs="+", default=[250, 500, 750, 1000, 1500, 2000])
    p.add_argument("--test", type=int, default=1000, help="fixed random test states per seed")
    p.add_argument("--rounds", type=int, default=None, help="active rounds up to the largest budget")
    p.add_argument("--out", type=Path, default=Path("bench/out/active_vs_random"))
    p.add_argument("--replot", type=Path, default=None, help="a runs.csv from before: only redo curves and plot")
    args = p.parse_args()
    if args.replot:
        raw = pd.read_csv(args.replot)
        args.seeds = sorted(raw["seed"].unique())
        return report(raw, args, max(args.budgets), 0, 0.0)
    params = load_params(args.params)
    scenario = load_scenario(params.scenario)
    top = max(args.budgets)
    config = params.generate.active.model_copy(update={"reserve": args.test, **(
        {"rounds": args.rounds} if args.rounds else {})})
    cache = AnswerCache(args.cache or params.generate.cache)
    ask, rows, start, before = make_ask(args, scenario, params, cache), [], time.time(), len(cache)
    for seed in args.seeds:
        seq = {"random": scenario.sample_states(args.test + top, seed)}
        seq["active"], _, _ = active_states(scenario, args.test + top, seed, config, ask)
        test = frame_of(scenario, seq["random"][: args.test], ask(seq["random"][: args.test]))
        test = test[test["ok"]].reset_index(drop=True)
        for strategy, states in seq.items():
            train_all = frame_of(scenario, states[args.test:], ask(states[args.test:]))
            for b in args.budgets:
                with tempfile.TemporaryDirectory() as work:
                    train = train_all.iloc[:b]
                    value = test_kl(scenario, params, args.student, train[train["ok"]], test, seed, Path(work))
                rows.append({"seed": seed, "strategy": strategy, "budget": b, "kl": value})
                print(f"seed={seed} {strategy:6s} answers={b:5d} test_kl={value:.5f}", flush=True)
    asked = len(cache) - before
    cache.close()
    report(pd.DataFrame(rows), args, top, asked, time.time() - start)


def report(raw: pd.DataFrame, args, top: int, asked: int, seconds: float) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    raw.to_csv(args.out / "runs.csv", index=False)
    curves = pd.DataFrame([{"strategy": s, "budget": b, **dict(zip(("kl", "low", "high"), interval(g["kl"].to_numpy())))}
                           for (s, b), g in raw.groupby(["strategy", "budget"])])
    curves.to_csv(args.out / "curves.csv", index=False)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, c in curves.groupby("strategy"):
        ax.plot(c["budget"], c["kl"], "o-", label=strategy)
        ax.fill_between(c["budget"], c["low"], c["high"], alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("teacher answers (training + validation)")
    ax.set_ylabel(f"test KL(teacher || {args.student})")
    ax.set_title(f"Active vs random sampling, {len(args.seeds)} seeds, geometric mean, 95% t interval\n"
                 f"teacher: {args.teacher}, {args.test} random test states per seed", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "active_vs_random.png", dpi=150)
    target = curves[(curves["strategy"] == "random") & (curves["budget"] == top)]["kl"].iloc[0]
    n = answers_to_match(curves[curves["strategy"] == "active"].sort_values("budget"), target)
    print(curves.to_string(index=False))
    print(f"teacher answers asked this run: {asked} (the rest came from the cache); {seconds:.0f} s")
    shown = f">{top}" if not np.isfinite(n) else f"{n:.0f}"
    print(f"answers_to_match_random_{top}={shown} saving={top / n:.2f}" if np.isfinite(n)
          else f"answers_to_match_random_{top}={shown} saving=<1")


if __name__ == "__main__":
    main()
