"""What drives the decision: per-value effects on the log-odds of the action, the
teacher's beside each student's, and how much each student leans on each feature group.

Effects. The log-odds of P(action) is regressed (OLS, intercept) on one column per
feature value: presence (0/1) for a set value, a dummy against the first listed value
for a choice, the encoder's [-1, 1] scale for a number. The coefficient is the value's
effect in log-odds units, other values held fixed; its interval uses HC3 standard errors
because the log-odds residuals are not homoscedastic (near 0 or 1 they spread out).
The teacher's effects come from its answers, a student's from its predictions on the
same states. `diff` regresses student minus teacher log-odds on the same design: a
paired estimate of the student's bias per value with its own interval. The intercept is
kept as a row of its own: the log-odds (or the difference) at the reference state (no set
value, first choices, numbers at their centre).

A student's difference from the teacher is read first as a whole, since a student whose
log-odds sit above the teacher's everywhere differs on no value's effect (the shift is all
in the intercept) and yet oversells. `overall_bias` is the mean over the test states of
student minus teacher log-odds, with a t interval; `joint_test` is a Wald test (HC3) that
every coefficient of the difference, intercept included, is 0; `verdict` reads both.

Permutation importance. A feature group's column is shuffled across the states and the
rise in KL(teacher || student) is measured, `repeats` times; the interval is the
percentile range of those repeats (the shuffle's spread, not a sampling interval).

States are the test split: a random sample (also under active sampling, see
decision_distill/teacher/active.py) the students never trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm

from ..core.errors import UserError
from ..data.schema import Schema
from ..stats.metrics import kl

CLIP = 1e-6  # keeps a saturated P(action) from making an infinite log-odds


def design(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """One column per feature value ("feature=value"), see the module docstring."""
    cols: dict[str, np.ndarray] = {}
    for f in schema.features:
        if f.name not in frame.columns:
            raise UserError(f"effects: the states have no column '{f.name}'; rerun the split stage")
        column = frame[f.name]
        if f.kind == "set":
            for v in f.values:
                cols[f"{f.name}={v}"] = np.array([v in list(row) for row in column], dtype=float)
        elif f.kind == "choice":
            for v in f.values[1:]:  # the first value is the reference
                cols[f"{f.name}={v}"] = (column == v).to_numpy(dtype=float)
        else:
            centre, half = f.scale()
            cols[f.name] = ((pd.to_numeric(column) - centre) / half).to_numpy(dtype=float)
    return pd.DataFrame(cols, index=frame.index)


def log_odds(p_action: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p_action, dtype=float), CLIP, 1 - CLIP)
    return np.log(p / (1 - p))


INTERCEPT = "(intercept)"  # the row of the regression's constant in the effects table


def _fit(X: pd.DataFrame, y: np.ndarray):
    """OLS with HC3 covariance on the columns of X that vary on these states (a constant
    column, a value never drawn or always present, cannot be estimated), plus a constant."""
    varying = [c for c in X.columns if X[c].std() > 0]
    if len(X) <= len(varying) + 1:
        raise UserError(f"effects: {len(X)} states cannot estimate {len(varying)} effects; "
                        "generate more states or raise split.test")
    design_ = sm.add_constant(X[varying], has_constant="add").rename(columns={"const": INTERCEPT})
    return sm.OLS(np.asarray(y, dtype=float), design_).fit(cov_type="HC3"), varying


def regress(X: pd.DataFrame, y: np.ndarray, confidence: float) -> pd.DataFrame:
    """Per column of X, then the intercept: effect, low, high (HC3). Columns constant on these
    states cannot be estimated: NaN, never a made-up 0."""
    fit, varying = _fit(X, y)
    ci = fit.conf_int(alpha=1 - confidence)
    kept = [*varying, INTERCEPT]
    out = pd.DataFrame({"effect": np.nan, "low": np.nan, "high": np.nan}, index=[*X.columns, INTERCEPT])
    out.loc[kept, "effect"] = fit.params[kept]
    out.loc[kept, "low"] = ci.loc[kept, 0]
    out.loc[kept, "high"] = ci.loc[kept, 1]
    return out


def overall_bias(diff: np.ndarray, confidence: float) -> dict:
    """The student's overall bias: the mean over the test states of student minus teacher
    log-odds (> 0: it leans toward the action), with a t interval over states (independent
    draws of the test split). The mean, not the regression's intercept: the intercept is the
    difference at the reference state, which moves with how the features are coded."""
    from statsmodels.stats.weightstats import DescrStatsW

    low, high = DescrStatsW(np.asarray(diff, dtype=float)).tconfint_mean(alpha=1 - confidence)
    return {"log_odds": float(np.mean(diff)), "low": float(low), "high": float(high)}


def joint_test(X: pd.DataFrame, diff: np.ndarray, confidence: float) -> dict:
    """Wald test (F form, HC3 covariance) that every coefficient of student minus teacher
    log-odds on the design is 0, intercept included: no detectable difference at all.
    `rejects` at level 1 - confidence."""
    fit, _ = _fit(X, diff)
    k = len(fit.params)
    if not np.any(diff):  # the teacher itself: no residuals, so a 0/0 statistic; nothing differs
        statistic, p = 0.0, 1.0
    else:
        test = fit.f_test(np.eye(k))
        statistic, p = float(np.squeeze(test.fvalue)), float(test.pvalue)
    return {"statistic": statistic, "df_num": k, "df_denom": int(fit.df_resid), "p_value": p,
            "rejects": bool(p < 1 - confidence)}


def verdict(bias: dict, joint: dict) -> str:
    """The overall bias first, then the joint test: a student is called like the teacher only
    when neither finds a difference, whatever its per-value differences say."""
    lean = ("overall bias toward the action" if bias["low"] > 0 else
            "overall bias against the action" if bias["high"] < 0 else "no detectable overall bias")
    joint_word = "differs from the teacher" if joint["rejects"] else "no detectable difference from the teacher"
    return f"{lean}; {joint_word} (joint test)"


def effects_table(frame: pd.DataFrame, schema: Schema, student_probs: dict[str, np.ndarray],
                  confidence: float) -> pd.DataFrame:
    """Long table: value, group, source (teacher | student | diff:student), effect, low, high;
    the intercept's row has value and group INTERCEPT."""
    X = design(frame, schema)
    teacher_y = log_odds(frame[schema.prob_columns[0]].to_numpy())
    groups = {**{c: c.split("=")[0] for c in X.columns}, INTERCEPT: INTERCEPT}
    parts = [_long(regress(X, teacher_y, confidence), "teacher", groups)]
    for name, probs in student_probs.items():
        student_y = log_odds(probs[:, 0])
        parts.append(_long(regress(X, student_y, confidence), name, groups))
        parts.append(_long(regress(X, student_y - teacher_y, confidence), f"diff:{name}", groups))
    return pd.concat(parts, ignore_index=True)


def differences(frame: pd.DataFrame, schema: Schema, student_probs: dict[str, np.ndarray],
                confidence: float) -> dict[str, dict]:
    """Per student, the whole of its difference from the teacher: bias, joint_test, verdict."""
    X = design(frame, schema)
    teacher_y = log_odds(frame[schema.prob_columns[0]].to_numpy())
    out = {}
    for name, probs in student_probs.items():
        d = log_odds(probs[:, 0]) - teacher_y
        bias, joint = overall_bias(d, confidence), joint_test(X, d, confidence)
        out[name] = {"bias": bias, "joint_test": joint, "verdict": verdict(bias, joint)}
    return out


def _long(table: pd.DataFrame, source: str, groups: dict[str, str]) -> pd.DataFrame:
    out = table.rename_axis("value").reset_index()
    out.insert(1, "group", out["value"].map(groups))
    out.insert(2, "source", source)
    return out


def permutation_importance(predict_fn, frame: pd.DataFrame, schema: Schema, repeats: int, seed: int,
                           confidence: float) -> pd.DataFrame:
    """Rise in KL(teacher || student) when one feature group is shuffled across states.
    `predict_fn(frame) -> probs[N, K]`. Columns: group, importance, low, high, base_kl."""
    teacher = frame[schema.prob_columns].to_numpy(dtype=float)
    base = kl(teacher, predict_fn(frame))
    rng = np.random.default_rng(seed)
    rows = []
    for f in schema.features:
        rises = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[f.name] = frame[f.name].to_numpy()[rng.permutation(len(frame))]
            rises.append(kl(teacher, predict_fn(shuffled)) - base)
        tail = (1 - confidence) / 2 * 100
        rows.append({"group": f.name, "importance": float(np.mean(rises)),
                     "low": float(np.percentile(rises, tail)), "high": float(np.percentile(rises, 100 - tail)),
                     "base_kl": base})
    return pd.DataFrame(rows)


def ablate_group(arch: str, params, splits_dir, group: str, work_dir) -> np.ndarray:
    """Retrain student `arch` (same params and seed as train@arch) with feature group `group`
    removed from its schema, so the encoder never sees it; return its test predictions."""
    import shutil
    from pathlib import Path

    from ..data.split import read_split
    from ..students.models import load_student, predict
    from ..students.train import train_student

    splits_dir, work = Path(splits_dir), Path(work_dir) / f"{arch}-without-{group}"
    schema = Schema.load(splits_dir / "features.json")
    if group not in schema.feature_names:
        raise UserError(f"effects.ablate_groups: unknown group '{group}'; use one of {', '.join(schema.feature_names)}")
    reduced = Schema(features=tuple(f for f in schema.features if f.name != group),
                     options=schema.options, action=schema.action)
    if not reduced.features:
        raise UserError(f"effects.ablate_groups: '{group}' is the only feature group; nothing left to train on")
    (work / "splits").mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test"):
        shutil.copyfile(splits_dir / f"{name}.parquet", work / "splits" / f"{name}.parquet")
    reduced.save(work / "splits" / "features.json")
    train_student(arch, params, work / "splits", work / "model", work / "live")
    model, encoder = load_student(work / "model")
    return predict(model, encoder, read_split(splits_dir / "test.parquet"))


def paired_kl_rise(teacher: np.ndarray, full: np.ndarray, ablated: np.ndarray, bootstrap: int, seed: int,
                   confidence: float) -> dict:
    """Mean over test states of KL(teacher||ablated) - KL(teacher||full), with a percentile
    bootstrap interval over states (paired: the same resample for both students); low and high
    are None with fewer than two states."""
    from ..stats.bootstrap import bootstrap_interval
    from ..stats.metrics import kl_per_state

    kl_ablated, kl_full = kl_per_state(teacher, ablated), kl_per_state(teacher, full)
    ci = bootstrap_interval(lambda a, f: a.mean(axis=-1) - f.mean(axis=-1), kl_ablated, kl_full, paired=True,
                            resamples=bootstrap, confidence=confidence, seed=seed, vectorized=True)
    low, high = ci if ci is not None else (None, None)
    return {"kl_rise": float(kl_ablated.mean() - kl_full.mean()), "low": low, "high": high}


def plot_effects(table: pd.DataFrame, out_png, title: str = "Effect on log-odds of the action") -> None:
    """Forest plot: one row per feature value, teacher and each student side by side with intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The intercept is a baseline log-odds, not a value's effect, and on its own scale.
    shown = table[~table["source"].str.startswith("diff:") & (table["value"] != INTERCEPT)].dropna(subset=["effect"])
    values = list(dict.fromkeys(shown["value"]))
    sources = list(dict.fromkeys(shown["source"]))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(values) * max(1, len(sources)) / 2 + 1.5))
    step = 0.8 / max(1, len(sources))
    for j, source in enumerate(sources):
        rows = shown[shown["source"] == source].set_index("value").reindex(values)
        y = np.arange(len(values)) + (j - (len(sources) - 1) / 2) * step
        ax.errorbar(rows["effect"], y, xerr=[rows["effect"] - rows["low"], rows["high"] - rows["effect"]],
                    fmt="o" if source == "teacher" else ".", ms=5 if source == "teacher" else 4,
                    color="black" if source == "teacher" else None, capsize=2, lw=1, label=source)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_yticks(np.arange(len(values)), values, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("effect on log-odds of P(action), with interval (HC3)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_png, dpi=150)
    plt.close(fig)
