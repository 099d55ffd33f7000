"""Can the judge judge? Scored on cases whose answer is known, before it rates any agent.

Pairs (judge_cases.pair_cases): a person's own held-out words against another member's most
similar passage, each shown in both orders; P(correct) is read from the " A"/" B" tokens and
averaged over the two orders, so a judge that always picks one position gets exactly 0.5.
A pair counts as right when that average is above 0.5 (a half when it is 0.5: no verdict).

Multiple choice (judge_cases.choice_cases): a held-out chunk and the N members as options
lettered A, B, ...; the options are shown in every cyclic rotation (each member at each
letter once) and a member's probability is its letter's probability averaged over the
rotations, so a judge that always picks one letter gives every member 1/N. The pick is the
most probable member; tied members share the credit (1/k each).

Intervals are clustered by the person who said the held-out chunk: the question is whether
the judge tells *people* apart, pairs of one person share that person's reference texts and
how distinctive they are, and a judge that knows one member well would otherwise look good
on that member's many chunks. With few people the interval is wide, as it should be.

The judge is valid when the lower bound of the pair accuracy's interval is above
`judge.validity_min` (default 0.5, chance): a point threshold would pass a judge on a few
lucky pairs. Below it, the verdicts on agents are marked not interpretable.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from .judge import PAIR_OPTIONS, mean_ci, person_block
from .judge_cases import Choices, PairCase


class Scorer(Protocol):  # lm.scorer.TokenScorer is one; tests pass stubs with a known signal
    def score(self, prefix: str, suffixes: list[tuple[str, ...]]): ...


MakeScorer = Callable[[list[str]], Scorer]  # option texts -> a scorer reading them
LETTERS = [f" {chr(ord('A') + i)}" for i in range(26)]
TIE = 1e-9  # order- or rotation-averaged probabilities this close are equal (summation order differs)

PAIR_CHECK_PREFIX = ("Two passages from the same meetings are shown: one was said by the person described "
                     "below, the other by someone else. Choose the one this person said.\n\n")
CHOICE_PREFIX = ("People from the same meetings are described below, each with a letter. Read the passage "
                 "and say which person said it.\n\n")


def pair_suffix(case: PairCase, first: str, second: str) -> tuple[str, str]:
    # Ends on "Passage" so that " A" / " B" is the natural next token, as the verdicts' prompt does.
    return person_block(case.as_item()), (f'Passage A: "{first}"\nPassage B: "{second}"\n'
                                          "Which passage did this person say, A or B?\nThe passage this person "
                                          "said is Passage")


def choice_suffix(options: list[str], order: list[int], passage: str) -> tuple[str, str]:
    """(the lettered options in this rotation, the passage): the head is shared by every passage.
    The blank line ends the head: a segment boundary inside a run of newlines would split a token."""
    head = "".join(f"Person{LETTERS[j]}: {options[m]}\n" for j, m in enumerate(order)) + "\n"
    return head, f'Passage: "{passage}"\nWhich person said this passage? Answer: Person'


def score_pairs(make_scorer: MakeScorer, cases: list[PairCase], min_mass: float) -> dict[str, np.ndarray]:
    scorer = make_scorer(PAIR_OPTIONS)
    first = scorer.score(PAIR_CHECK_PREFIX, [pair_suffix(c, c.own.text, c.other.text) for c in cases])
    second = scorer.score(PAIR_CHECK_PREFIX, [pair_suffix(c, c.other.text, c.own.text) for c in cases])
    p_first, p_second = first.probs[:, 0], second.probs[:, 1]  # P(own) with own shown first, shown second
    compliant = (first.option_mass >= min_mass) & (second.option_mass >= min_mass)
    # A pair without a readable verdict is no evidence either way: it counts as chance.
    p = np.where(compliant, (p_first + p_second) / 2, 0.5)
    return {"p_own_first": p_first, "p_own_second": p_second, "p_correct": p, "correct": _credit(p),
            "compliant": compliant, "flipped": (p_first > 0.5) != (p_second > 0.5)}


def _credit(p: np.ndarray) -> np.ndarray:
    return np.where(np.abs(p - 0.5) <= TIE, 0.5, (p > 0.5).astype(float))


def score_choices(make_scorer: MakeScorer, choices: Choices, min_mass: float) -> dict[str, np.ndarray]:
    n = len(choices.members)
    scorer = make_scorer(LETTERS[:n])
    member_p = np.zeros((len(choices.cases), n))
    compliant = np.ones(len(choices.cases), bool)
    for r in range(n):  # rotation r puts member (j + r) % n at letter j
        order = [(j + r) % n for j in range(n)]
        s = scorer.score(CHOICE_PREFIX, [choice_suffix(choices.options, order, c.chunk.text) for c in choices.cases])
        member_p[:, order] += s.probs / n
        compliant &= s.option_mass >= min_mass
    member_p[~compliant] = 1.0 / n  # no readable answer: every member equally likely
    answer = np.array([c.answer for c in choices.cases], int)
    top = np.abs(member_p - member_p.max(1, keepdims=True)) <= TIE
    credit = np.where(top[np.arange(len(answer)), answer], 1.0 / top.sum(1), 0.0)
    return {"member_p": member_p, "p_true": member_p[np.arange(len(answer)), answer], "correct": credit,
            "compliant": compliant}


def summarise_pairs(cases: list[PairCase], s: dict, kw: dict) -> dict:
    persona = np.array([c.persona for c in cases])
    return {"pairs": len(cases), "people": len(set(persona.tolist())), "chance": 0.5, "cluster": "person",
            "accuracy": mean_ci(s["correct"], persona, **kw),
            "p_correct_order_averaged": mean_ci(s["p_correct"], persona, **kw),
            "non_compliant": int((~s["compliant"]).sum()),
            "position_flip_rate": mean_ci(s["flipped"][s["compliant"]].astype(float),
                                          persona[s["compliant"]], **kw),
            # How close in topic the other member's passages are (cosine): the closer, the less a topic cue helps.
            "similarity": mean_ci(np.array([c.similarity for c in cases]), persona, **kw),
            "per_person": {p: mean_ci(s["correct"][persona == p], None, **kw) for p in dict.fromkeys(persona.tolist())}}


def summarise_choices(choices: Choices, s: dict, kw: dict) -> dict:
    n = len(choices.members)
    persona = np.array([choices.members[c.answer] for c in choices.cases])
    accuracy = mean_ci(s["correct"], persona, **kw)
    return {"questions": len(choices.cases), "members": n, "options": choices.kind, "rotations": n,
            "chance": 1.0 / n, "cluster": "person", "accuracy": accuracy,
            "p_true_member": mean_ci(s["p_true"], persona, **kw),
            "above_chance": accuracy["ci"][0] is not None and accuracy["ci"][0] > 1.0 / n,
            "non_compliant": int((~s["compliant"]).sum())}


def verdict(pairs: dict | None, validity_min: float, confidence: float) -> dict:
    """Whether the judge's verdicts on agents can be read, and the sentence that says so."""
    if pairs is None or pairs["accuracy"]["ci"][0] is None:
        return {"valid": False, "statement": "The judge could not be checked (it needs held-out words of at least "
                "two people): its verdicts on the agents cannot be interpreted."}
    acc = pairs["accuracy"]
    low = acc["ci"][0]
    shown = (f"{acc['mean']:.2f} [{low:.2f}, {acc['ci'][1]:.2f}] ({confidence:.0%} interval over "
             f"{pairs['people']} people, {pairs['pairs']} pairs; chance 0.5)")
    if low > validity_min:
        return {"valid": True, "statement": f"The judge tells the people apart: it picks a person's own words over "
                f"another member's on a similar topic with order-averaged accuracy {shown}, above "
                f"judge.validity_min={validity_min}."}
    return {"valid": False, "statement": f"The judge cannot tell the people apart: it picks a person's own words "
            f"over another member's on a similar topic with order-averaged accuracy {shown}, whose lower bound is "
            f"not above judge.validity_min={validity_min}. Its ratings and verdicts on the agents cannot be "
            "interpreted (interpretable: false)."}


def check_judge(make_scorer: MakeScorer, pairs: list[PairCase], choices: Choices, settings) -> tuple[dict, list[dict]]:
    """(the report's "validity" section, one row per pair and per multiple-choice question)."""
    kw = dict(resamples=settings.bootstrap, confidence=settings.confidence, seed=settings.seed)
    report: dict = {"rule": "valid when the lower bound of the order-averaged pair accuracy's interval is above "
                    "judge.validity_min", "validity_min": settings.validity_min}
    rows: list[dict] = []
    pair_summary = None
    if pairs:
        s = score_pairs(make_scorer, pairs, settings.min_mass)
        pair_summary = report["pairs"] = summarise_pairs(pairs, s, kw)
        rows += [{"check": "pair", "persona": c.persona, "own": c.own.id, "other": c.other.id,
                  "reference": c.reference.id, "similarity": c.similarity, "p_own": [float(a), float(b)],
                  "correct": float(k)} for c, a, b, k in zip(pairs, s["p_own_first"], s["p_own_second"], s["correct"])]
    n = len(choices.members)
    if 2 <= n <= len(LETTERS) and choices.cases:
        s = score_choices(make_scorer, choices, settings.min_mass)
        report["multiple_choice"] = summarise_choices(choices, s, kw)
        rows += [{"check": "which member", "persona": choices.members[c.answer], "chunk": c.chunk.id,
                  "p_member": dict(zip(choices.members, map(float, p))), "correct": float(k)}
                 for c, p, k in zip(choices.cases, s["member_p"], s["correct"])]
    else:
        report["multiple_choice"] = {"skipped": f"{n} members: the check reads one letter per member, 2 to "
                                     f"{len(LETTERS)}"}
    report.update(verdict(pair_summary, settings.validity_min, settings.confidence))
    return report, rows
