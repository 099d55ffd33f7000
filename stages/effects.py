"""effects stage: what moves the teacher's decision, and did the students learn the same?

On the test split (a random sample the students never trained on) it writes
  metrics/effects.json       per student, first its difference from the teacher as a whole: overall
                             bias in log-odds with interval, joint test that every difference is 0,
                             verdict; then the values whose difference excludes 0, permutation
                             importance per feature group and (effects.ablate) the KL rise of a
                             student retrained without each group
  effects/report.md          the same per student, in words (also printed)
  effects/effects.csv        per feature value and the intercept: effect on the log-odds of P(action)
                             with interval, teacher, each student, and diff:<student> (student minus teacher)
  effects/importance.csv     permutation importance per student and feature group
  effects/effects.png        forest plot: effect per value, teacher vs students, with intervals
See decision_distill/evaluation/effects.py for the estimators.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from decision_distill.core.atomic import atomic_dir, write_json
from decision_distill.core.errors import stage_main
from decision_distill.core.params import ARCHITECTURES, load_params
from decision_distill.data.schema import Schema
from decision_distill.data.split import read_split
from decision_distill.evaluation.effects import (INTERCEPT, ablate_group, differences, effects_table, paired_kl_rise,
                                                 permutation_importance, plot_effects)
from decision_distill.students.models import ENSEMBLE, load_student, predict, seed_dirs
from decision_distill.students.train import TRAIN_THREADS, torch_threads


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=Path, default=Path("data/splits"), help="split stage output (default: %(default)s)")
    parser.add_argument("--students", type=Path, default=Path("models/students"),
                        help="train stage output, one folder per architecture (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("effects"), help="tables and plot (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/effects.json"), help="(default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="reads effects, train, student (default: %(default)s)")
    return parser.parse_args(argv)


def student_predictors(students_dir: Path) -> dict:
    """name -> P(option | states) of each architecture's primary student and, where it was
    trained with several seeds, of `<arch>_ensemble`, the mean of its seeds."""
    predictors = {}
    for arch in ARCHITECTURES:
        members = [load_student(p) for p in seed_dirs(students_dir / arch).values()]
        predictors[arch] = lambda frame, m=members[0]: predict(*m, frame)
        if len(members) > 1:
            predictors[arch + ENSEMBLE] = lambda frame, ms=members: np.mean([predict(*m, frame) for m in ms], axis=0)
    return predictors


@stage_main
def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    e = params.effects
    schema = Schema.load(args.splits / "features.json")
    test = read_split(args.splits / "test.parquet").reset_index(drop=True)
    teacher = test[schema.prob_columns].to_numpy(dtype=float)
    predictors = student_predictors(args.students)
    importance, metrics = [], {}
    # One thread, as in training: the students are tiny and extra threads spin against other
    # processes on a shared machine (the permutation loop measured 0.4 s a call with 2 threads, busy).
    with torch_threads(TRAIN_THREADS):
        probs = {name: predict_fn(test) for name, predict_fn in predictors.items()}
        table = effects_table(test, schema, probs, e.confidence)
        whole = differences(test, schema, probs, e.confidence)
        for arch, predict_fn in predictors.items():
            imp = permutation_importance(predict_fn, test, schema, e.repeats, e.seed, e.confidence)
            importance.append(imp.assign(student=arch))
            # The whole difference first: per-value differences alone miss a shift of everything.
            metrics[arch] = {**whole[arch], **agreement_with_teacher(table, arch),
                             "importance": {r.group: {"kl_rise": r.importance, "low": r.low, "high": r.high}
                                            for r in imp.itertuples()}}
    with tempfile.TemporaryDirectory() as work:
        for arch in e.ablate:  # retrains: off by default, minutes per student
            metrics[arch]["ablation"] = {
                group: paired_kl_rise(teacher, probs[arch], ablate_group(arch, params, args.splits, group, work),
                                      e.bootstrap, e.seed, e.confidence)
                for group in schema.feature_names}
    metrics["states"] = len(test)
    report = "\n".join([f"# Each student against the teacher, test split ({len(test)} states)\n",
                        *(report_lines(arch, metrics[arch], len(test), e.confidence) for arch in predictors)])
    with atomic_dir(args.out) as tmp:
        table.to_csv(tmp / "effects.csv", index=False)
        pd.concat(importance, ignore_index=True).to_csv(tmp / "importance.csv", index=False)
        (tmp / "report.md").write_text(report)
        plot_effects(table, tmp / "effects.png", f"Effect on log-odds of '{schema.action}', test split "
                                                 f"({len(test)} states), {e.confidence:.0%} intervals")
    write_json(metrics, args.metrics)
    print(report, end="")


def agreement_with_teacher(table: pd.DataFrame, arch: str) -> dict:
    """Share of the estimable values whose student-minus-teacher interval covers 0, and the
    values whose interval excludes it (their effect differs from the teacher's). The intercept
    is left out: the overall bias and the joint test speak for it. The paired difference, not
    "teacher inside the student's interval": a logreg student is exactly linear in the
    log-odds, so its own intervals have zero width."""
    t = table[(table["source"] == "teacher") & (table["value"] != INTERCEPT)].set_index("value")
    t = t.dropna(subset=["effect"])
    d = table[table["source"] == f"diff:{arch}"].set_index("value").reindex(t.index)
    covers = (d["low"] <= 0) & (0 <= d["high"])
    differing = [v for v in t.index if not covers[v]]
    return {"diff_ci_covers_0": float(np.mean(covers)), "values": int(len(t)), "values_differing": differing}


def report_lines(arch: str, m: dict, states: int, confidence: float) -> str:
    """One student's part of the report, overall bias first: a student shifted as a whole
    differs on no single value, so the per-value line alone would call it unbiased."""
    b, j = m["bias"], m["joint_test"]
    # Below ~1e-15 the F distribution's tail is float rounding: "p = 0" would claim certainty.
    p = f"= {j['p_value']:.2g}" if j["p_value"] >= 1e-15 else "< 1e-15"
    return (f"## {arch}\n\n"
            f"- overall bias {b['log_odds']:+.3f} log-odds [{b['low']:+.3f}, {b['high']:+.3f}]: mean of student "
            f"minus teacher log-odds of the action over {states} test states, {confidence:.0%} t interval\n"
            f"- joint test that all {j['df_num']} coefficients of the difference are 0 (intercept included; "
            f"Wald, HC3): F({j['df_num']}, {j['df_denom']}) = {j['statistic']:.2f}, p {p}\n"
            f"- {len(m['values_differing'])} of {m['values']} values' effects differ ({confidence:.0%} interval of "
            f"the difference excludes 0, each on its own): {', '.join(m['values_differing']) or 'none'}\n"
            f"- verdict: {m['verdict']}\n")


if __name__ == "__main__":
    main()
