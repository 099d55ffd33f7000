"""persona-judge: do the agents answer like their people?

The judge is first checked on cases whose answer is known (judge_check); its verdicts below
are marked `interpretable` only when it passes.

A judge LM rates every answer of persona-respond 1 to 5 for how well it matches the person,
against a reference of them (MT-Bench's reference-guided grading): their profile and the
held-out chunk the question came from, which no answerer saw (the tuned model trained on
training chunks only, base+chunks was shown training chunks). The rating is read from the
judge's probabilities of the tokens "1".."5" at the answer position (TokenScorer): the
expected score sum k P(k) and the argmax, in one forward pass; no generated text is parsed.
The probability mass on the five tokens is the judge's format compliance: below
`judge.min_mass` the rating is reported as non-compliant and never becomes a number. Each
answer is rated under two rubric wordings, and their agreement stands beside every score.

Pairwise, the tuned answer is set against each baseline's answer to the same question in
both orders; P(tuned preferred) is read from the " A"/" B" tokens and averaged over the two
orders: that average is the primary number. A verdict that changes with the order is a tie;
the share of such flips is the judge's own position bias, a diagnostic.

Intervals are over questions, clustered by the held-out chunk a question came from: the
questions drawn from one chunk share their reference.

With `chat` (the params key that turned it on: teacher.chat_template, as the judge loads with
the teacher's settings) every prompt, the check's too, is asked inside the judge's chat
template and the rating or letter is read as the reply's first token (lm.chat.ChatScorer).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UserError
from ..lm.chat import token_scorer
from ..lm.load import LoadedModel
from ..stats.bootstrap import bootstrap_interval
from .chunks import HELD_OUT, Chunk
from .respond import TUNED

RATINGS = ["1", "2", "3", "4", "5"]
RUBRICS = {
    "levels": ("You grade how well an answer matches a particular person: their views, their concerns and "
               "their way of speaking, as shown by a description of them and something they once said.\n"
               "5: the person could have said it; it holds their views and sounds like them.\n"
               "4: it holds their views, with small differences in emphasis or tone.\n"
               "3: partly theirs: some of their views, mixed with generic or unrelated content.\n"
               "2: mostly generic; little of what this person believes or how they talk.\n"
               "1: contradicts the person's views, or is off topic or empty.\n\n"),
    "reversed": ("Rate, from 1 to 5, whether the person described below would say the answer given.\n"
                 "1 means it goes against them or says nothing. 2 means it could be anyone's answer. "
                 "3 means it carries part of their outlook. 4 means it is close to how they think. "
                 "5 means it is unmistakably them, in substance and in voice.\n\n"),
}
PAIR_OPTIONS = [" A", " B"]
PAIR_PREFIX = ("Two answers to the same question are shown. Choose the one that the person described "
               "below would be more likely to give, in what it says and how it says it.\n\n")


def person_block(item: dict) -> str:
    name = item["persona"].replace("_", " ")
    profile = f"Description: {item['profile']}\n" if item.get("profile") else ""
    said = f'They once said: "{item["chunk_text"]}"\n' if item.get("chunk_text") else ""
    return f"Person: {name}\n{profile}{said}"


def rating_suffix(item: dict, answer: str) -> tuple[str, str]:
    """(person block, question and answer): the head is shared by all answers to one question."""
    return person_block(item), f'Question: {item["question"]}\nAnswer: "{answer}"\nScore: '


def pair_suffix(item: dict, first: str, second: str) -> tuple[str, str]:
    # Ends on "Answer" so that " A" / " B" is the natural next token: on Gemma-3-270M this put 0.81-0.83
    # of the probability on them, where ending on "Answer:" put 0.10-0.22 (non-compliant).
    return person_block(item), (f'Question: {item["question"]}\nAnswer A: "{first}"\nAnswer B: "{second}"\n'
                                "Which answer is more like this person, A or B?\nThe answer more like this person is Answer")


def ratings(judge: LoadedModel, items: list[dict], models: list[str], rubric: str, min_mass: float,
            batch_size: int = 8, chat: str | None = None) -> dict[str, np.ndarray]:
    """Arrays over (item, model), shape [len(items), len(models)]: expected score and argmax (NaN when
    non-compliant), rating-token mass, and the five probabilities."""
    suffixes = [rating_suffix(it, it["answers"][m]) for it in items for m in models]
    s = token_scorer(judge, RATINGS, batch_size, chat).score(RUBRICS[rubric], suffixes)
    shape = (len(items), len(models))
    compliant = s.option_mass >= min_mass
    expected = np.where(compliant, s.probs @ np.arange(1, 6), np.nan)
    argmax = np.where(compliant, s.probs.argmax(1) + 1.0, np.nan)
    return {"expected": expected.reshape(shape), "argmax": argmax.reshape(shape),
            "mass": s.option_mass.reshape(shape), "probs": s.probs.reshape(*shape, 5)}


def pairwise_outcome(p_tuned_first: np.ndarray, p_tuned_second: np.ndarray) -> np.ndarray:
    """+1 win, 0 tie, -1 loss for the tuned answer: P(tuned preferred) when shown first and when shown
    second. Only a verdict both orders agree on counts; one that follows the order is a tie."""
    first, second = p_tuned_first > 0.5, p_tuned_second > 0.5
    return np.where(first & second, 1, np.where(~first & ~second, -1, 0))


def pairwise(judge: LoadedModel, items: list[dict], other: str, min_mass: float,
             batch_size: int = 8, chat: str | None = None) -> dict[str, np.ndarray]:
    scorer = token_scorer(judge, PAIR_OPTIONS, batch_size, chat)
    ab = scorer.score(PAIR_PREFIX, [pair_suffix(it, it["answers"][TUNED], it["answers"][other]) for it in items])
    ba = scorer.score(PAIR_PREFIX, [pair_suffix(it, it["answers"][other], it["answers"][TUNED]) for it in items])
    p_first, p_second = ab.probs[:, 0], ba.probs[:, 1]
    compliant = (ab.option_mass >= min_mass) & (ba.option_mass >= min_mass)
    return {"p_tuned_first": p_first, "p_tuned_second": p_second, "compliant": compliant,
            "outcome": pairwise_outcome(p_first, p_second),
            "flipped": (p_first > 0.5) != (p_second > 0.5),
            "mass": np.minimum(ab.option_mass, ba.option_mass)}


def check_references(items: list[dict], chunks: list[Chunk]) -> None:
    """Every question's reference must be a held-out chunk: a training chunk is one the tuned
    model trained on and the baselines were denied, so the judge would favour the tuned answer."""
    split = {c.id: c.split for c in chunks}
    for it in items:
        if split.get(it.get("chunk")) != HELD_OUT:
            side = split.get(it.get("chunk"), "no chunk of data/personas/chunks")
            raise UserError(f"answers of {it['persona']}: question {it['id']} comes from {it.get('chunk')} ({side}), "
                            "not a held-out chunk; rerun persona-extract (it draws questions from held-out chunks), "
                            "review the questions and rerun persona-respond")


def mean_ci(values: np.ndarray, groups: np.ndarray | None, resamples: int, confidence: float, seed: int) -> dict:
    """Mean with a percentile bootstrap interval, whole clusters resampled when `groups` is given
    (NaN: not rated, left out); no interval ([None, None]) with fewer than two clusters (units)."""
    values = np.asarray(values, float)
    keep = ~np.isnan(values)
    values, groups = values[keep], (groups[keep] if groups is not None else None)
    if not len(values):
        return {"mean": None, "ci": [None, None], "n": 0}
    ci = bootstrap_interval(np.mean, values, groups=groups, resamples=resamples, confidence=confidence, seed=seed)
    return {"mean": float(values.mean()), "ci": list(ci) if ci is not None else [None, None], "n": int(len(values))}


def summarise(rated: dict[str, dict], pairs: dict[str, dict], models: list[str], resamples: int,
              confidence: float, seed: int, rows: np.ndarray, groups: np.ndarray, interpretable: bool) -> dict:
    """Per model: the expected score under the first rubric with its interval, non-compliant count,
    and agreement with the second rubric; per comparison: the order-averaged P(tuned preferred),
    and as diagnostics win/tie/loss and the flip rate. `groups`: each question's cluster (its chunk)."""
    kw = dict(resamples=resamples, confidence=confidence, seed=seed)
    first, second = (rated[r] for r in RUBRICS)
    g = groups[rows]
    out = {"questions": int(len(rows)), "interpretable": interpretable, "ratings": {}, "pairwise": {}}
    for j, m in enumerate(models):
        a, b = first["expected"][rows, j], second["expected"][rows, j]
        both = ~np.isnan(a) & ~np.isnan(b)
        out["ratings"][m] = {
            "interpretable": interpretable,
            "expected_score": mean_ci(a, g, **kw), "argmax_score": mean_ci(first["argmax"][rows, j], g, **kw),
            "non_compliant": int(np.isnan(a).sum()), "rating_mass_mean": float(first["mass"][rows, j].mean()),
            "second_rubric": {
                "expected_score": mean_ci(b, g, **kw), "non_compliant": int(np.isnan(b).sum()),
                "mean_abs_difference": float(np.abs(a[both] - b[both]).mean()) if both.any() else None,
                "argmax_agreement": float(np.mean(first["argmax"][rows, j][both] == second["argmax"][rows, j][both]))
                if both.any() else None,
                "correlation": float(np.corrcoef(a[both], b[both])[0, 1]) if both.sum() > 2 and
                np.std(a[both]) > 0 and np.std(b[both]) > 0 else None}}
    for other, p in pairs.items():
        ok = rows[p["compliant"][rows]]
        o, go = p["outcome"][ok].astype(float), groups[ok]
        out["pairwise"][f"{TUNED} vs {other}"] = {
            "interpretable": interpretable,
            "p_tuned_preferred": mean_ci((p["p_tuned_first"][ok] + p["p_tuned_second"][ok]) / 2, go, **kw),
            "compared": int(len(ok)), "non_compliant": int(len(rows) - len(ok)),
            "diagnostics": {"position_flip_rate": mean_ci(p["flipped"][ok].astype(float), go, **kw),
                            "win": mean_ci((o == 1).astype(float), go, **kw),
                            "tie": mean_ci((o == 0).astype(float), go, **kw),
                            "loss": mean_ci((o == -1).astype(float), go, **kw)}}
    return out


def judge_all(judge: LoadedModel, items: list[dict], settings, validity: dict,
              chat: str | None = None) -> tuple[dict, list[dict]]:
    """(report per person and overall, one row per answer) for every answered question;
    `validity`: judge_check's report, whose verdict marks every number interpretable or not."""
    models = list(items[0]["answers"]) if items else []
    kw = dict(min_mass=settings.min_mass, batch_size=settings.batch_size, chat=chat)
    rated = {r: ratings(judge, items, models, r, **kw) for r in RUBRICS}
    pairs = {m: pairwise(judge, items, m, **kw) for m in models if m != TUNED}
    persona = np.array([it["persona"] for it in items])
    groups = np.array([it["chunk"] for it in items])
    summary_kw = dict(resamples=settings.bootstrap, confidence=settings.confidence, seed=settings.seed,
                      groups=groups, interpretable=bool(validity["valid"]))
    report = {"judge_min_mass": settings.min_mass, "confidence": settings.confidence, "rubrics": list(RUBRICS),
              "interpretable": bool(validity["valid"]), "validity": validity,
              "overall": summarise(rated, pairs, models, rows=np.arange(len(items)), **summary_kw),
              "per_person": {p: summarise(rated, pairs, models, rows=np.flatnonzero(persona == p), **summary_kw)
                             for p in dict.fromkeys(persona.tolist())}}
    rows = []
    for i, it in enumerate(items):
        for j, m in enumerate(models):
            rows.append({"id": it["id"], "persona": it["persona"], "question": it["question"], "model": m,
                         "answer": it["answers"][m],
                         **{f"{r}:{k}": _num(rated[r][k][i, j]) for r in RUBRICS for k in ("expected", "argmax", "mass")},
                         **({f"p_tuned_preferred[{o}]": [float(pairs[o]["p_tuned_first"][i]),
                                                         float(pairs[o]["p_tuned_second"][i])] for o in pairs}
                            if m == TUNED else {})})
    return report, rows


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
