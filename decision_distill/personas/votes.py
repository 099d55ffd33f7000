"""persona-votes: would each agent vote as its person did?

For every (person, question of votes.csv) and every arm, the log-odds of " Aye" against " Nay"
are read from the answer-token probabilities (TokenScorer, one forward pass, no text parsed);
P(Aye) = sigmoid(log-odds). The stage's arms are, by default,
  teacher+profile   the teacher given the person's hand-written profile
  base+profile      the base SLM given the same profile
  teacher+name      the teacher given the person's name only (no profiles.yaml: the only teacher arm)
  base+name         the base SLM given the name only: the reference of tuned and base+profile
  tuned             the person's merged LoRA model, given only their name
  base+retrieval    the base SLM given the k passages of the person's own text most similar
                    to the question, no profile (decision_distill.personas.retrieval)
  tuned+retrieval   the person's merged model given the same passages
Each person's prompt is also asked with content-free questions (votes.content_free) for the
contextual calibration. Every prompt's answer is kept in the answer cache (generate.cache) as
soon as it is read, so a rerun reads only what is missing. Each arm is then read four ways
(calibration.py) and compared with the baselines (vote_stats.py), pooled and per person.
A (person, question) pair with no recorded vote (an Abstain, Absent or blank row of votes.csv,
or no row at all) is scored but left out of every metric, and counted as `unknown`, by reason.
An arm may be asked inside its model's chat template (score_all's `chat`: teacher.chat_template
for the teacher arms, agents.chat_template for the others); the vote is then the reply's first
token, "Aye" or "Nay" (lm.chat.ChatScorer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit

from ..lm.answer_cache import AnswerCache
from ..lm.chat import token_scorer
from ..lm.load import LoadedModel
from ..lm.scorer import TokenScorer
from .cache_keys import persona_key
from .calibration import RULES, variants
from .corpus import NO_VOTES, Vote
from .vote_stats import Predictor, baselines, scope_report

AYE, NAY = "Aye", "Nay"
OPTIONS = [" Aye", " Nay"]
PREFIX = ("Minutes of a board meeting. Before each vote the clerk reads a short description of the member; "
          "the member then votes Aye or Nay.\n\n"
          "Member: Ada Stone. Description: a shop owner who wants lower fees for small businesses.\n"
          "Question: Should the board cut the permit fee for shops with fewer than ten staff?\nVote: Aye\n\n"
          "Member: Tom Reed. Description: a retired engineer who opposes any new debt.\n"
          "Question: Should the board borrow $2 million to rebuild the gym?\nVote: Nay\n\n")


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


# (model, persona, questions) -> one (head, question) suffix after PREFIX per question
Prompter = Callable[[LoadedModel, str, list[str]], list[tuple[str, str]]]


@dataclass
class Scored:
    """Per arm, one value per table row; NaN where the arm was not asked (a profile arm, a person
    without a profile)."""
    logodds: dict[str, np.ndarray]  # log P(" Aye") - log P(" Nay")
    mass: dict[str, np.ndarray]  # raw probability on the two answer tokens: low = not read as a vote
    content_free: dict[str, np.ndarray]  # the mean P(Aye) over the content-free questions of the row's person
    content_free_by_person: dict[str, dict[str, list[float]]]  # arm -> person -> P(Aye) per content-free question


def cached_logodds(model: LoadedModel, suffixes: list[tuple[str, str]], cache: AnswerCache,
                   batch_size: int, chat: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(log-odds, option mass) of each (head, question) suffix after PREFIX, through `cache`: only
    prompts missing there are scored, and their answers stored at once. `chat`: the params key
    that asks for the model's chat template (None: the completion prompt)."""
    # The segment boundaries are part of the key: the scorer tokenizes each segment on its own.
    keys = [persona_key("persona-votes answer", model.fingerprint, model.dtype, model.device.type,
                        PREFIX + head + tail, chat_template=chat is not None, options=OPTIONS,
                        segments=[len(PREFIX), len(head)])
            for head, tail in suffixes]
    known = cache.get_many(keys)
    todo = [i for i, k in enumerate(keys) if k not in known]
    if todo:
        scores = token_scorer(model, OPTIONS, batch_size, chat).score(PREFIX, [suffixes[i] for i in todo])
        found = {keys[i]: {"logodds": float(lo), "mass": float(m)}
                 for i, lo, m in zip(todo, scores.logodds, scores.option_mass)}
        cache.put_many(found)
        known |= found
    return np.array([known[k]["logodds"] for k in keys]), np.array([known[k]["mass"] for k in keys])


def score_all(table: Table, questions: list[str], profiles: dict[str, str], models: dict[str, Callable],
              batch_size: int, cache: AnswerCache, content_free: list[str],
              chat: dict[str, str] | None = None) -> Scored:
    """`models`: arm -> load(persona) returning (LoadedModel, prompt). `prompt` is True (the
    person's profile), False (the name only) or a Prompter (model, persona, questions) -> the
    (head, question) suffixes, for an arm that builds its own prompts (the retrieval arms). A
    loader may return the same loaded model for every person (teacher, base) or each person's
    own (tuned). An arm that uses the profile is not asked for a person without one: its rows
    stay NaN, never a name-only prompt reported under a profile label. Real and content-free
    questions go through the same prompt, so a Prompter decides what a content-free question
    gets (retrieval.py: passages retrieved with the content-free text itself). `chat`: arm -> the
    params key that asks for that arm's chat template; an arm not in it gets the completion prompt."""
    n = len(table.truth)
    out = Scored({}, {}, {}, {})
    for name, load in models.items():
        lo_all, mass_all, cf_all = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        out.content_free_by_person[name] = {}
        for persona in dict.fromkeys(table.persona.tolist()):
            rows = np.flatnonzero(table.persona == persona)
            model, prompt = load(persona)
            if prompt is True and persona not in profiles:
                continue
            asked = [questions[i] for i in table.question[rows]] + list(content_free)
            if callable(prompt):
                suffixes = prompt(model, persona, asked)
            else:
                suffixes = [vote_suffix(persona, profiles[persona] if prompt else None, q) for q in asked]
            lo, mass = cached_logodds(model, suffixes, cache, batch_size, (chat or {}).get(name))
            cf = expit(lo[len(rows):])
            lo_all[rows], mass_all[rows], cf_all[rows] = lo[:len(rows)], mass[:len(rows)], cf.mean()
            out.content_free_by_person[name][persona] = cf.tolist()
        out.logodds[name], out.mass[name], out.content_free[name] = lo_all, mass_all, cf_all
    return out


def agreement(p_a: np.ndarray, p_b: np.ndarray) -> float | None:
    """Share of rows (asked under both) where two arms cast the same raw vote (e.g. a distilled
    model and its teacher)."""
    both = ~np.isnan(p_a) & ~np.isnan(p_b)
    return float(np.mean((p_a[both] >= 0.5) == (p_b[both] >= 0.5))) if both.any() else None


def scope(table: Table, predictors: dict[str, Predictor], mass: dict[str, np.ndarray], rows: np.ndarray,
          resamples: int, confidence: float, seed: int) -> dict:
    """Baselines and every predictor on `rows` of the table, known votes only; the unknown ones
    counted by reason (abstain, absent, blank: what votes.csv says; no_row: no row at all)."""
    base_all = baselines(table.persona, table.question, table.truth)  # leave-one-out and others see everything
    known = rows[table.truth[rows] >= 0]
    y, q = table.truth[known], table.question[known]
    unknown = table.recorded[rows[table.truth[rows] < 0]].tolist()
    out = {"rows": int(len(rows)), "known": int(len(known)), "unknown": int(len(rows) - len(known)),
           "unknown_by_reason": {r.lower(): unknown.count(r) for r in (*NO_VOTES, NO_ROW)},
           "aye_share": float(np.mean(y)) if len(y) else None}
    if not len(known):
        return out
    report = scope_report(y, q, {b: v[known] for b, v in base_all.items()},
                          {n: p.rows(known) for n, p in predictors.items()}, resamples, confidence, seed)
    for arm, m in mass.items():
        if arm in report["models"]:
            report["models"][arm]["option_mass_mean"] = float(np.nanmean(m[rows]))
    return {**out, **report}


def votes_report(table: Table, questions: list[str], scored: Scored, references: dict[str, str],
                 resamples: int, confidence: float, seed: int, loqo_c: float,
                 teacher: str | None) -> tuple[dict, dict[str, Predictor]]:
    """(the metrics file's content, every predictor by name: the arms and their variants)."""
    kw = dict(resamples=resamples, confidence=confidence, seed=seed)
    predictors = variants(table.persona, table.question, table.truth, scored.logodds, scored.content_free,
                          references, loqo_c)
    personas = list(dict.fromkeys(table.persona.tolist()))
    scored_refs = {a: r for a, r in references.items() if a in scored.logodds and r in scored.logodds}
    report = {"confidence": confidence, "resamples": resamples, "questions": len(questions),
              "decision_rules": RULES, "references": scored_refs,
              "content_free_p_aye": scored.content_free_by_person,
              "pooled": scope(table, predictors, scored.mass, np.arange(len(table.truth)), **kw),
              "per_person": {}}
    for p in personas:
        rows = np.flatnonzero(table.persona == p)
        asked = {n: pr for n, pr in predictors.items() if not np.isnan(pr.score[rows]).all()}
        report["per_person"][p] = scope(table, asked, scored.mass, rows, **kw)
    if teacher in scored.logodds:  # did distillation keep what the teacher knew? same raw vote, rows asked of both
        p_aye = {a: expit(lo) for a, lo in scored.logodds.items()}
        report["agreement_with_teacher"] = {a: agreement(p, p_aye[teacher]) for a, p in p_aye.items() if a != teacher}
    return report, predictors


def vote_rows(table: Table, questions: list[str], scored: Scored, predictors: dict[str, Predictor]) -> list[dict]:
    """data/personas/votes.json: per (person, question), the vote (null: none recorded) and what
    votes.csv recorded (Aye, Nay, Abstain, Absent, blank or no_row), every predictor's P(Aye)
    (its score where it is no probability: the contrast), each arm's option mass and
    content-free P(Aye); null where an arm was not asked."""
    def number(x):
        return None if np.isnan(x) else float(x)

    return [{"persona": str(table.persona[i]), "question": questions[table.question[i]],
             "vote": {1: AYE, 0: NAY, -1: None}[int(table.truth[i])],
             "recorded": str(table.recorded[i]),
             **{f"p_aye[{n}]" if pr.prob is not None else f"score[{n}]":
                number(pr.prob[i] if pr.prob is not None else pr.score[i]) for n, pr in predictors.items()},
             **{f"option_mass[{a}]": number(m[i]) for a, m in scored.mass.items()},
             **{f"content_free_p_aye[{a}]": number(cf[i]) for a, cf in scored.content_free.items()}}
            for i in range(len(table.truth))]
