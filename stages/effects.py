"""effects stage: what moves the teacher's decision, and did the students learn the same?

On the test split (a random sample the students never trained on) it writes
  metrics/effects.json       per student: permutation importance per feature group, share of
                             the teacher's effects inside the student's interval and vice versa,
                             and (effects.ablate) the KL rise of a student retrained without each group
  effects/effects.csv        per feature value: effect on the log-odds of P(action) with interval,
                             teacher, each student, and diff:<student> (student minus teacher)
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
from decision_distill.evaluation.effects import (ablate_group, effects_table, paired_kl_rise, permutation_importance,
                                                 plot_effects)
from decision_distill.students.models import load_student, predict
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


@stage_main
def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    e = params.effects
    schema = Schema.load(args.splits / "features.json")
    test = read_split(args.splits / "test.parquet").reset_index(drop=True)
    teacher = test[schema.prob_columns].to_numpy(dtype=float)
    students = {arch: load_student(args.students / arch) for arch in ARCHITECTURES}
    importance, metrics = [], {}
    # One thread, as in training: the students are tiny and extra threads spin against other
    # processes on a shared machine (the permutation loop measured 0.4 s a call with 2 threads, busy).
    with torch_threads(TRAIN_THREADS):
        probs = {arch: predict(m, enc, test) for arch, (m, enc) in students.items()}
        table = effects_table(test, schema, probs, e.confidence)
        for arch, (model, enc) in students.items():
            imp = permutation_importance(lambda f, m=model, c=enc: predict(m, c, f), test, schema, e.repeats,
                                         e.seed, e.confidence)
            importance.append(imp.assign(student=arch))
            metrics[arch] = {"importance": {r.group: {"kl_rise": r.importance, "low": r.low, "high": r.high}
                                            for r in imp.itertuples()},
                             **agreement_with_teacher(table, arch)}
    with tempfile.TemporaryDirectory() as work:
        for arch in e.ablate:  # retrains: off by default, minutes per student
            metrics[arch]["ablation"] = {
                group: paired_kl_rise(teacher, probs[arch], ablate_group(arch, params, args.splits, group, work),
                                      e.bootstrap, e.seed, e.confidence)
                for group in schema.feature_names}
    metrics["states"] = len(test)
    with atomic_dir(args.out) as tmp:
        table.to_csv(tmp / "effects.csv", index=False)
        pd.concat(importance, ignore_index=True).to_csv(tmp / "importance.csv", index=False)
        plot_effects(table, tmp / "effects.png", f"Effect on log-odds of '{schema.action}', test split "
                                                 f"({len(test)} states), {e.confidence:.0%} intervals")
    write_json(metrics, args.metrics)
    for arch in ARCHITECTURES:
        m = metrics[arch]
        print(f"{arch}: no detectable bias on {m['diff_ci_covers_0']:.0%} of {m['values']} values; "
              f"biased: {', '.join(m['biased_values']) or 'none'}")


def agreement_with_teacher(table: pd.DataFrame, arch: str) -> dict:
    """Share of the estimable values whose student-minus-teacher interval covers 0 (no
    detectable bias). The paired difference, not "teacher inside the student's interval": a
    logreg student is exactly linear in the log-odds, so its own intervals have zero width."""
    t = table[table["source"] == "teacher"].set_index("value").dropna(subset=["effect"])
    d = table[table["source"] == f"diff:{arch}"].set_index("value").reindex(t.index)
    covers = (d["low"] <= 0) & (0 <= d["high"])
    biased = [v for v in t.index if not covers[v]]
    return {"diff_ci_covers_0": float(np.mean(covers)), "values": int(len(t)), "biased_values": biased}


if __name__ == "__main__":
    main()
