"""The judge is checked on cases whose answer is known before its verdicts on agents are read:
a judge that always picks one position scores exactly chance (both orders averaged, every
option rotated through every letter) and its verdicts are marked not interpretable; a judge
that reads the person's texts passes; the interval is clustered by person, so one member the
judge knows well does not make it valid; the threshold is a param with a one-line error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from decision_distill.core.errors import UserError
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.scorer import Scores, TokenScorer
from decision_distill.lm.source import download
from decision_distill.personas.chunks import HELD_OUT, TRAIN, Chunk, write_chunks
from decision_distill.personas.judge import check_references, judge_all
from decision_distill.personas.judge_cases import choice_cases, pair_cases
from decision_distill.personas.judge_check import CHOICE_PREFIX, PAIR_CHECK_PREFIX, check_judge
from decision_distill.personas.params import parse_persona_params
from decision_distill.personas.respond import BASE_PROFILE, TUNED

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["the library hours and the library books", "the budget line for the gym roof",
          "the lunch menu and the lunch prices", "the bus stops near the north school"]
PEOPLE = {"Ada_Stone": "shops fees permits customers", "Bo_Lind": "drivers routes schedules depots",
          "Cy_Park": "studies evidence samples trials", "Di_Moss": "farms fields harvest rural"}


def board(held: dict[str, int] | None = None) -> tuple[list[Chunk], dict[str, str]]:
    """Two training monologues per person and `held[person]` (default 2) held-out ones, each one
    chunk: a shared topic plus the person's own words, so a judge must tell people by their words."""
    chunks = []
    for person, own in PEOPLE.items():
        n = 2 + (held or {}).get(person, 2)
        for m in range(n):
            text = f"About {TOPICS[m % len(TOPICS)]}: I say {own} matter here, meeting {m}."
            chunks.append(Chunk(person, m, 0, TRAIN if m < 2 else HELD_OUT, len(text.split()), text))
    return chunks, {p: f"A board member who talks about {own}." for p, own in PEOPLE.items()}


def bag_of_words(texts: list[str]) -> np.ndarray:
    vocab = sorted({w for t in texts for w in _words(t)})
    rows = np.array([[_words(t).count(w) for w in vocab] for t in texts], float)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def settings(**changes):
    return SimpleNamespace(**{"bootstrap": 1000, "confidence": 0.95, "seed": 0, "validity_min": 0.5, "min_mass": 0.5,
                              "batch_size": 8, **changes})


class ReadingJudge:
    """A judge with a known signal: P(option) grows with the words the option shares with what the
    prompt shows of the person (pairs) or with the passage (multiple choice). Blind to `blind`:
    for those people it answers 50/50."""

    def __init__(self, options: list[str], blind: frozenset[str] = frozenset()):
        self.k, self.blind = len(options), blind

    def score(self, prefix, suffixes) -> Scores:
        probs = []
        for head, tail in suffixes:
            if prefix == PAIR_CHECK_PREFIX:
                person = set(_words(head))
                overlap = [len(set(_words(p)) & person) for p in re.findall(r'Passage [AB]: "(.*?)"', tail)]
                blind = head.split("\n")[0].removeprefix("Person: ").replace(" ", "_") in self.blind
            else:
                assert prefix == CHOICE_PREFIX
                passage = set(_words(re.search(r'Passage: "(.*?)"', tail).group(1)))
                overlap = [len(set(_words(o)) & passage) for o in re.findall(r"Person [A-Z]: (.*)", head)]
                blind = False
            e = np.ones(self.k) if blind else np.exp(np.array(overlap, float))
            probs.append(e / e.sum())
        n = len(probs)
        return Scores(np.array(probs), np.ones(n), np.zeros(n))


class LetterJudge:
    """Always the same uneven letter probabilities, whatever the prompt: a pure position bias."""

    def __init__(self, options: list[str]):
        p = np.arange(len(options), 0, -1, dtype=float) ** 2
        self.p = p / p.sum()

    def score(self, prefix, suffixes) -> Scores:
        n = len(suffixes)
        return Scores(np.tile(self.p, (n, 1)), np.ones(n), np.zeros(n))


def run_check(make_scorer, chunks, profiles, **changes):
    return check_judge(make_scorer, pair_cases(chunks, profiles, bag_of_words, 0), choice_cases(chunks, profiles, 0),
                       settings(**changes))


def test_each_held_out_chunk_is_paired_with_another_members_passage_on_its_topic():
    chunks, profiles = board()
    cases = pair_cases(chunks, profiles, bag_of_words, seed=0)
    assert sorted(c.own.id for c in cases) == sorted(c.id for c in chunks if c.split == HELD_OUT)
    for c in cases:
        topic = TOPICS[c.own.monologue % len(TOPICS)]
        assert c.other.persona != c.persona and topic in c.other.text  # the same topic, someone else
        assert c.reference.persona == c.persona and c.reference.split == TRAIN
        assert c.reference.monologue != c.own.monologue and c.profile == profiles[c.persona]
    assert pair_cases([c for c in chunks if c.persona == "Ada_Stone"], profiles, bag_of_words, 0) == []


def test_a_judge_that_reads_the_persons_words_passes_the_check():
    chunks, profiles = board()
    report, rows = run_check(lambda options: ReadingJudge(options), chunks, profiles)
    assert report["valid"] and report["statement"].startswith("The judge tells the people apart")
    assert report["pairs"]["accuracy"]["mean"] == 1.0 and report["pairs"]["accuracy"]["ci"][0] > 0.5
    mc = report["multiple_choice"]
    assert mc["options"] == "profiles" and mc["chance"] == 0.25 and mc["accuracy"]["mean"] == 1.0
    assert mc["above_chance"]
    assert len(rows) == report["pairs"]["pairs"] + mc["questions"]


def test_a_letter_biased_judge_scores_chance_in_both_checks():
    chunks, profiles = board()
    report, _ = run_check(lambda options: LetterJudge(options), chunks, profiles)
    pairs, mc = report["pairs"], report["multiple_choice"]
    # Every order and rotation averaged: the bias cancels exactly, whichever letter it favours.
    assert pairs["accuracy"]["mean"] == 0.5 and pairs["accuracy"]["ci"] == [0.5, 0.5]
    assert pairs["position_flip_rate"]["mean"] == 1.0
    assert mc["accuracy"]["mean"] == pytest.approx(1 / 4, abs=1e-12) and mc["rotations"] == 4
    assert mc["p_true_member"]["mean"] == pytest.approx(1 / 4, abs=1e-12) and not mc["above_chance"]
    assert not report["valid"] and "cannot tell the people apart" in report["statement"]


def test_without_profiles_the_options_are_each_members_training_chunk():
    chunks, profiles = board()
    choices = choice_cases(chunks, {**profiles, "Cy_Park": None}, seed=0)
    assert choices.kind == "reference chunks"
    train = {c.text: c for c in chunks if c.split == TRAIN}
    assert [train[o].persona for o in choices.options] == choices.members
    report, _ = check_judge(lambda options: ReadingJudge(options), [], choices, settings())
    assert report["multiple_choice"]["accuracy"]["mean"] == 1.0  # own words in the reference chunk
    assert not report["valid"]  # no pairs: nothing shows the judge can judge


def test_the_threshold_applies_to_the_lower_bound_of_the_interval():
    chunks, profiles = board()
    blind_to_one = lambda options: ReadingJudge(options, blind=frozenset({"Di_Moss"}))  # noqa: E731
    report, _ = run_check(blind_to_one, chunks, profiles)
    low = report["pairs"]["accuracy"]["ci"][0]
    assert report["pairs"]["accuracy"]["mean"] == pytest.approx((3 + 0.5) / 4) and 0.55 < low < 0.95
    assert run_check(blind_to_one, chunks, profiles, validity_min=low - 0.05)[0]["valid"]
    above = run_check(blind_to_one, chunks, profiles, validity_min=low + 0.01)[0]
    assert not above["valid"] and f"judge.validity_min={low + 0.01}" in above["statement"]


def test_one_well_known_member_does_not_make_a_valid_judge():
    # Right on all eight of Ada's pairs, chance on the other three people's one pair each: 9.5 of 11
    # pairs, but the interval is over people, and most people are at chance.
    chunks, profiles = board(held={"Ada_Stone": 8, "Bo_Lind": 1, "Cy_Park": 1, "Di_Moss": 1})
    knows_ada = lambda options: ReadingJudge(options, blind=frozenset({"Bo_Lind", "Cy_Park", "Di_Moss"}))  # noqa: E731
    report, _ = run_check(knows_ada, chunks, profiles)
    accuracy = report["pairs"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(9.5 / 11) and accuracy["ci"][0] == 0.5
    assert report["pairs"]["per_person"]["Ada_Stone"]["mean"] == 1.0 and not report["valid"]


@pytest.mark.parametrize("value", [0.3, 1.0, "high"])
def test_a_bad_threshold_is_a_one_line_error_naming_the_key(value):
    raw = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    raw["judge"]["validity_min"] = value
    with pytest.raises(UserError, match=r"judge\.validity_min") as err:
        parse_persona_params(raw)
    assert "\n" not in str(err.value)


def test_a_question_from_a_training_chunk_cannot_be_judged():
    chunks, _ = board()
    train, held = (next(c for c in chunks if c.split == s) for s in (TRAIN, HELD_OUT))
    check_references([{"id": "q", "persona": held.persona, "chunk": held.id}], chunks)
    with pytest.raises(UserError, match=r"comes from Ada_Stone/0/0 \(train\).*rerun persona-extract"):
        check_references([{"id": "q", "persona": train.persona, "chunk": train.id}], chunks)


@pytest.fixture(scope="module")
def first_position_judge(tmp_path_factory, build_tiny_persona_model, always_prefer):
    """A tiny Gemma whose weights put the most probability on " A" after any prompt."""
    root = tmp_path_factory.mktemp("check_judge")
    chunks, profiles = board()
    texts = [c.text for c in chunks] * 5 + list(profiles.values()) * 5 + [PAIR_CHECK_PREFIX, CHOICE_PREFIX] * 5 \
        + ["Answer: A B", "Passage: A B", "Person: A B C D", "Score: 1 2 3 4 5"] * 50
    weights = build_tiny_persona_model(root / "weights", texts, vocab=300)
    download(str(always_prefer(weights, root / "first_w", " A")), "main", root / "first")
    return root / "first"


def test_a_judge_that_always_says_a_is_at_chance_and_its_verdicts_are_not_interpretable(first_position_judge):
    chunks, profiles = board()
    judge = load_causal_lm(first_position_judge, device="cpu")
    make = lambda options: TokenScorer(judge, options, 8)  # noqa: E731
    validity, _ = run_check(make, chunks, profiles, min_mass=0.01)
    assert validity["pairs"]["accuracy"]["mean"] == 0.5 and validity["pairs"]["accuracy"]["ci"] == [0.5, 0.5]
    assert validity["pairs"]["p_correct_order_averaged"]["mean"] == 0.5
    assert validity["multiple_choice"]["accuracy"]["mean"] == pytest.approx(1 / 4, abs=1e-12)
    assert not validity["valid"]
    held = [c for c in chunks if c.split == HELD_OUT and c.persona == "Ada_Stone"]
    items = [{"id": f"{c.id}/belief", "persona": c.persona, "chunk": c.id, "chunk_text": c.text,
              "profile": profiles[c.persona], "question": "What about the fees?",
              "answers": {TUNED: "Cut the permit fees.", BASE_PROFILE: "Fees are fine."}} for c in held]
    report, _ = judge_all(judge, items, settings(min_mass=0.01), validity)
    assert report["interpretable"] is False and report["overall"]["interpretable"] is False
    verdict = report["overall"]["pairwise"][f"{TUNED} vs {BASE_PROFILE}"]
    assert verdict["interpretable"] is False and verdict["p_tuned_preferred"]["mean"] == 0.5
    assert verdict["diagnostics"]["position_flip_rate"]["mean"] == 1.0


def test_the_stage_says_the_judge_cannot_tell_people_apart(tmp_path, first_position_judge, call_stage, monkeypatch):
    chunks, profiles = board()
    write_chunks(chunks, profiles, "board", tmp_path / "chunks")
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"] = {"path": "board", "personas": list(PEOPLE)}
    params["judge"].update(min_mass=0.01, bootstrap=200)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    root = yaml.safe_load((REPO / "params.yaml").read_text())
    root["teacher"]["device"] = "cpu"
    (tmp_path / "root.yaml").write_text(yaml.safe_dump(root))
    (tmp_path / "answers").mkdir()
    for person in PEOPLE:
        c = next(c for c in chunks if c.persona == person and c.split == HELD_OUT)
        item = {"id": f"{c.id}/belief", "persona": person, "chunk": c.id, "chunk_text": c.text,
                "profile": profiles[person], "question": "Why?", "answers": {TUNED: "Because.", BASE_PROFILE: "No."}}
        (tmp_path / "answers" / f"{person}.json").write_text(json.dumps({"items": [item]}))
    args = ["--judge", str(first_position_judge),
            "--answers", str(tmp_path / "answers"), "--chunks", str(tmp_path / "chunks"),
            "--rows", str(tmp_path / "rows.json"), "--check-rows", str(tmp_path / "check.json"),
            "--metrics", str(tmp_path / "judge.json"), "--params", str(tmp_path / "p.yaml"),
            "--teacher-params", str(tmp_path / "root.yaml")]
    out = call_stage("stages/persona_judge.py", *args)
    assert out.code == 0, out.stderr
    assert "The judge cannot tell the people apart" in out.stdout and "expected score" not in out.stdout
    report = json.loads((tmp_path / "judge.json").read_text())
    assert report["interpretable"] is False and report["validity"]["validity_min"] == 0.5
    assert len(json.loads((tmp_path / "check.json").read_text())) == 8 + 8  # 8 pairs, 8 held-out chunks
    # teacher.chat_template reaches the judge: this tokenizer has no template, which stops the stage.
    root["teacher"]["chat_template"] = True
    (tmp_path / "root.yaml").write_text(yaml.safe_dump(root))
    out = call_stage("stages/persona_judge.py", *args)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.code == 2 and errors == ["error: teacher.chat_template: this tokenizer has no chat template; "
                                        "set it to false"]
