"""persona-votes: would each agent vote as its person did?

For every (person, question of votes.csv), P(Aye) is read from the answer-token
probabilities of " Aye" and " Nay" (TokenScorer, one forward pass, no text parsed) for
  teacher+profile   the teacher given the person's hand-written profile
  base+profile      the base SLM given the same profile
  tuned             the person's merged LoRA model, given only their name
  base+retrieval    the base SLM given the k passages of the person's own text most similar
                    to the question, no profile (decision_distill.personas.retrieval)
  tuned+retrieval   the person's merged model given the same passages
and compared with the true votes: accuracy beside three baselines (the overall majority
class; the person's own majority on the other questions; the other members' majority on
the same question), balanced accuracy, macro F1, Brier score and log loss, each with a
bootstrap interval over questions, and an exact McNemar test against the best baseline.
A (person, question) pair with no recorded vote (an Abstain, Absent or blank row of votes.csv,
or no row at all) is scored but left out of every metric, and counted as `unknown`, by reason.
The prediction is Aye when P(Aye) >= 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import binomtest

from ..lm.load import LoadedModel
from ..lm.scorer import TokenScorer
from ..stats.bootstrap import bootstrap_interval
from .corpus import NO_VOTES, Vote

AYE, NAY = "Aye", "Nay"
OPTIONS = [" Aye", " Nay"]
PREFIX = ("Minutes of a board meeting. Before each vote the clerk reads a short description of the member; "
          "the member then votes Aye or Nay.\n\n"
          "Member: Ada Stone. Description: a shop owner who wants lower fees for small businesses.\n"
          "Question: Should the board cut the permit fee for shops with fewer than ten staff?\nVote: Aye\n\n"
          "Member: Tom Reed. Description: a retired engineer who opposes any new debt.\n"
          "Question: Should the board borrow $2 million to rebuild the gym?\nVote: Nay\n\n")
EPS = 1e-6  # log loss clips P(Aye) into [EPS, 1 - EPS]: one confident miss costs at most 13.8 nats


def vote_suffix(persona: str, profile: str | None, question: str) -> tuple[str, str]:
    """(member head, question): the head is shared by all of one person's questions."""
    name = persona.replace("_", " ")
    head = f"Member: {name}. Description: {profile}\n" if profile else f"Member: {name}.\n"
    return head, f"Question: {question}\nVote:"


def vote_suffix_passages(persona: str, profile: str | None, question: str, passages: list[str]) -> tuple[str, str]:
    """vote_suffix with the person's own words between the member line and the question (one
    line each); the question and the answer position are vote_suffix's, so is the readout."""
    head, ask = vote_suffix(persona, profile, question)
    name = persona.replace("_", " ")
    return head, "".join(f"{name} said: {p}\n" for p in passages) + ask


def p_aye(model: LoadedModel, persona: str, profile: str | None, questions: list[str],
          batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(P(Aye) normalised over Aye/Nay, the raw probability mass on the two tokens)."""
    scores = TokenScorer(model, OPTIONS, batch_size).score(PREFIX, [vote_suffix(persona, profile, q)
                                                                     for q in questions])
    return scores.probs[:, 0], scores.option_mass


NO_ROW = "no_row"  # the reason of an unknown vote when votes.csv has no row for the pair


@dataclass
class Table:
    """One row per scored (person, question); truth 1 = Aye, 0 = Nay, -1 = no recorded vote."""
    persona: np.ndarray
    question: np.ndarray  # index into the question list
    truth: np.ndarray
    recorded: np.ndarray  # what votes.csv says: Aye, Nay, Abstain, Absent, blank, or no_row


# ---- metrics on hard predictions (1 = Aye) and probabilities -------------------------------------------

def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(y == pred))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y` (one class present: its recall)."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1) if np.any(y == c)]))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over Aye and Nay of F1 = 2TP / (2TP + FP + FN); a class never true nor predicted counts 0."""
    f1 = []
    for c in (0, 1):
        tp, fp, fn = np.sum((pred == c) & (y == c)), np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


HARD = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}
SOFT = {"brier": brier, "log_loss": log_loss}


# ---- baselines ---------------------------------------------------------------------------------------

def majority(votes: np.ndarray, tie: int) -> int:
    aye, nay = int(np.sum(votes == 1)), int(np.sum(votes == 0))
    return 1 if aye > nay else 0 if nay > aye else tie


def baselines(table: Table) -> dict[str, np.ndarray]:
    """Hard predictions for every row. Ties (and no other votes to count) fall back to the
    overall majority class, whose own tie is Aye."""
    known = table.truth >= 0
    overall = majority(table.truth[known], tie=1)
    n = len(table.truth)
    person_loo, others = np.full(n, overall), np.full(n, overall)
    for i in range(n):
        mine = known & (table.persona == table.persona[i]) & (table.question != table.question[i])
        person_loo[i] = majority(table.truth[mine], overall)
        same = known & (table.question == table.question[i]) & (table.persona != table.persona[i])
        others[i] = majority(table.truth[same], overall)
    return {"overall_majority": np.full(n, overall), "person_majority_loo": person_loo,
            "others_same_question": others}


def mcnemar(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """Exact McNemar: of the rows where exactly one of a, b is right, is a right half the time?"""
    a_right, b_right = pred_a == y, pred_b == y
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(b_right & ~a_right))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_model_right": only_a, "only_baseline_right": only_b, "p_value": float(p)}


def _block(y, questions, pred=None, p=None, *, resamples, confidence, seed) -> dict:
    """Each metric with a percentile interval over resamples of whole questions (all of a question's
    rows go together: the members' votes on one question are not independent)."""
    out = {}
    scored = [(name, fn, pred) for name, fn in HARD.items()] + [(name, fn, p) for name, fn in SOFT.items()]
    for name, fn, x in scored:
        if x is None:
            continue
        out[name] = fn(y, x)
        # The same seed for every model and baseline: their intervals use the same resampled questions.
        ci = bootstrap_interval(fn, y, x, groups=questions, paired=True, resamples=resamples, confidence=confidence,
                                seed=seed)
        out[f"{name}_ci"] = list(ci) if ci is not None else [None, None]
    return out


def vote_report(table: Table, p_aye_by_model: dict[str, np.ndarray], mass_by_model: dict[str, np.ndarray],
                resamples: int, confidence: float, seed: int, rows: np.ndarray | None = None) -> dict:
    """Metrics of every model and baseline on `rows` of the table (default all), known votes only."""
    rows = np.arange(len(table.truth)) if rows is None else rows
    base_all = baselines(table)  # computed on the whole table: leave-one-out and other members see everything
    known = rows[table.truth[rows] >= 0]
    y, q = table.truth[known], table.question[known]
    unknown = table.recorded[rows[table.truth[rows] < 0]].tolist()
    out = {"rows": int(len(rows)), "known": int(len(known)), "unknown": int(len(rows) - len(known)),
           "unknown_by_reason": {r.lower(): unknown.count(r) for r in (*NO_VOTES, NO_ROW)},
           "aye_share": float(np.mean(y)) if len(y) else None, "baselines": {}, "models": {}}
    if not len(known):
        return out
    kw = dict(resamples=resamples, confidence=confidence, seed=seed)
    for name, pred in base_all.items():
        out["baselines"][name] = _block(y, q, pred=pred[known], **kw)
    best = max(out["baselines"], key=lambda b: out["baselines"][b]["accuracy"])
    out["best_baseline"] = best
    for name, probs in p_aye_by_model.items():
        p = probs[known]
        pred = (p >= 0.5).astype(int)
        block = _block(y, q, pred=pred, p=p, **kw)
        block["mcnemar_vs_best_baseline"] = mcnemar(y, pred, base_all[best][known])
        block["option_mass_mean"] = float(np.mean(mass_by_model[name][rows]))
        block["predicted_aye_share"] = float(np.mean(pred))
        out["models"][name] = block
    return out


def agreement(p_a: np.ndarray, p_b: np.ndarray) -> float:
    """Share of rows where two models cast the same vote (e.g. a distilled model and its teacher)."""
    return float(np.mean((p_a >= 0.5) == (p_b >= 0.5)))


def draw_votes(report: dict, out) -> None:
    """Accuracy and balanced accuracy per model (bars with intervals), baselines as lines (pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.atomic import atomic_path

    pooled = report["pooled"]
    models = list(pooled["models"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    # Distinct colours as well as dashes: two baselines often tie (then the lines overlap).
    styles = dict(zip(pooled["baselines"], [("--", "#C44E52"), (":", "#55A868"), ("-.", "#8172B2")]))
    for ax, metric in zip(axes, ("accuracy", "balanced_accuracy")):
        values = [pooled["models"][m][metric] for m in models]
        ci = np.array([pooled["models"][m][f"{metric}_ci"] for m in models], dtype=float)
        ax.bar(range(len(models)), values, yerr=[np.array(values) - ci[:, 0], ci[:, 1] - np.array(values)],
               capsize=4, color="#4C72B0")
        for name, (style, colour) in styles.items():
            ax.axhline(pooled["baselines"][name][metric], ls=style, color=colour, lw=1.5,
                       label=name if ax is axes[0] else None)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
        ax.set_title(f"{metric.replace('_', ' ')} ({report['confidence']:.0%} CI over questions)")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel(f"all members, {pooled['known']} known votes")
    fig.legend(loc="lower center", ncol=3, fontsize=8, title="baselines", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def vote_table(votes: list[Vote], personas: list[str], no_votes: list[Vote] = ()) -> tuple[Table, list[str]]:
    """Every person on every question of votes.csv, in file order (a question no one has a recorded
    vote on comes last: it is scored, never counted); truth -1 where no vote is recorded."""
    questions = list(dict.fromkeys(v.question for v in [*votes, *no_votes]))
    recorded = {(v.persona, v.question): v.vote for v in [*votes, *no_votes]}
    cells = []
    for p in personas:
        for qi, q in enumerate(questions):
            said = recorded.get((p, q), NO_ROW)
            cells.append((p, qi, {AYE: 1, NAY: 0}.get(said, -1), said))
    return Table(*(np.array(col) for col in zip(*cells))), questions


def score_all(table: Table, questions: list[str], profiles: dict[str, str], models: dict[str, Callable],
              batch_size: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`models`: name -> load(persona) returning (LoadedModel, use the profile?). A loader may return
    the same loaded model for every person (teacher, base) or each person's own (tuned)."""
    p_by, mass_by = {}, {}
    for name, load in models.items():
        p_by[name], mass_by[name] = np.zeros(len(table.truth)), np.zeros(len(table.truth))
        for persona in dict.fromkeys(table.persona.tolist()):
            rows = np.flatnonzero(table.persona == persona)
            model, with_profile = load(persona)
            p, mass = p_aye(model, persona, profiles.get(persona) if with_profile else None,
                            [questions[i] for i in table.question[rows]], batch_size)
            p_by[name][rows], mass_by[name][rows] = p, mass
    return p_by, mass_by


def votes_report(table: Table, questions: list[str], p_by: dict[str, np.ndarray], mass_by: dict[str, np.ndarray],
                 resamples: int, confidence: float, seed: int, teacher: str | None) -> dict:
    kw = dict(resamples=resamples, confidence=confidence, seed=seed)
    personas = list(dict.fromkeys(table.persona.tolist()))
    report = {"confidence": confidence, "resamples": resamples, "questions": len(questions),
              "threshold": 0.5, "pooled": vote_report(table, p_by, mass_by, **kw),
              "per_person": {p: vote_report(table, p_by, mass_by, rows=np.flatnonzero(table.persona == p), **kw)
                             for p in personas}}
    if teacher in p_by:  # did distillation keep what the teacher knew? same vote as the teacher, all rows
        report["agreement_with_teacher"] = {m: agreement(p, p_by[teacher]) for m, p in p_by.items() if m != teacher}
    return report
