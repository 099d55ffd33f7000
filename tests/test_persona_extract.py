"""Profile extraction reads P(Yes) from answer tokens (a tiny model with a built-in
preference gives the expected decision), honours its cap, and the review CLI's edits,
driven by scripted input, reach the reviewed-questions file."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.source import download
from decision_distill.personas.chunks import HELD_OUT, TRAIN, split_corpus
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.extract import (OPTIONS, PREFIX, cached_lines, decision_suffix, extract, first_line,
                                               line_prompts, p_yes)
from decision_distill.personas.reviewed_questions import load_reviewed
from decision_distill.lm.load import load_causal_lm

REPO = Path(__file__).resolve().parents[1]

TWO = ["Daniel_Reyes", "Lucia_Brandt"]
CATEGORIES = ["belief", "memory", "personality trait"]


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("board")
    for name in TWO:
        shutil.copy(REPO / "examples/board" / f"{name}.txt", root / f"{name}.txt")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory, persona_weights, always_prefer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("extract_models")
    weights = persona_weights
    out = {"random": weights, "yes": always_prefer(weights, root / "yes_w", OPTIONS[0]),
           "no": always_prefer(weights, root / "no_w", OPTIONS[1])}
    for name, path in out.items():
        download(str(path), "main", root / name)
    return {name: root / name for name in out}


def _chunks(board):
    return split_corpus(load_corpus(board), 60, 0.25, 0)


def test_the_decision_is_the_answer_token_probability(models, board, tmp_path):
    teacher = load_causal_lm(models["random"], device="cpu")
    chunks = [c for c in _chunks(board) if c.split == TRAIN][:3]
    probs = p_yes(teacher, chunks, CATEGORIES, AnswerCache(tmp_path / "answers.sqlite"))
    tok = teacher.tokenizer
    yes, no = (tok(o, add_special_tokens=False).input_ids[0] for o in OPTIONS)
    for i, c in enumerate(chunks):
        for j, cat in enumerate(CATEGORIES):
            head, tail = decision_suffix(c, cat)
            ids = tok(PREFIX).input_ids + tok(head, add_special_tokens=False).input_ids \
                + tok(tail, add_special_tokens=False).input_ids
            with torch.no_grad():
                logits = teacher.model(torch.tensor([ids])).logits[0, -1]
            expected = torch.softmax(logits[[yes, no]].double(), 0)[0].item()
            assert probs[i, j] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("cap", [1, 3])
def test_a_model_that_prefers_yes_keeps_exactly_the_cap_and_one_that_prefers_no_keeps_none(models, board, cap,
                                                                                           tmp_path):
    chunks = _chunks(board)
    cache = AnswerCache(tmp_path / "answers.sqlite")
    teacher = load_causal_lm(models["yes"], device="cpu")
    profiles, questions, metrics = extract(teacher, chunks, CATEGORIES, 0.5, cap, 4, TWO, cache)
    for person in TWO:
        n_held = sum(c.persona == person and c.split == HELD_OUT for c in chunks)
        assert n_held > cap
        for cat in CATEGORIES:
            assert len(profiles[person][cat]) == cap  # every chunk passed; the cap held
            assert metrics["categories"][cat][person]["above_threshold"] == n_held
            assert all(item["p_yes"] > 0.9 for item in profiles[person][cat])
    assert len(questions) == cap * len(TWO) * len(CATEGORIES)
    assert len({q["id"] for q in questions}) == len(questions)
    # Questions come from held-out chunks only: the judge takes a question's chunk as its reference,
    # which must be text no answerer trained on or was shown.
    held_out = {c.id for c in chunks if c.split == HELD_OUT}
    assert {q["chunk"] for q in questions} <= held_out
    teacher = load_causal_lm(models["no"], device="cpu")
    profiles, questions, metrics = extract(teacher, chunks, CATEGORIES, 0.5, cap, 4, TWO, cache)
    assert questions == [] and all(v == [] for p in profiles.values() for v in p.values())
    assert all(metrics["categories"][c][p]["above_threshold"] == 0 for c in CATEGORIES for p in TWO)


@pytest.mark.parametrize("batch_size, kill_at, finished", [(1, 6, 5), (4, 3, 8)])
def test_a_killed_extraction_resumes_without_repeating_a_generation(models, board, tmp_path, monkeypatch,
                                                                    batch_size, kill_at, finished):
    chunks, cap = _chunks(board), 2
    teacher = load_causal_lm(models["yes"], device="cpu")
    whole = extract(teacher, chunks, CATEGORIES, 0.5, cap, 4, TWO, AnswerCache(tmp_path / "a.sqlite"))
    generations = 2 * cap * len(TWO) * len(CATEGORIES)  # a summary and a question per kept chunk
    real, rows, kill = teacher.model.generate, [], [kill_at]

    def generate(*args, **kwargs):  # the real generate, its prompts counted; a kill on call `kill_at`
        rows.append(len(kwargs["input_ids"]))
        if len(rows) in kill:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    forwards = []
    teacher.model.register_forward_hook(lambda *_: forwards.append(1))
    monkeypatch.setattr(teacher.model, "generate", generate)
    cache = AnswerCache(tmp_path / "b.sqlite")
    with pytest.raises(KeyboardInterrupt):
        extract(teacher, chunks, CATEGORIES, 0.5, cap, 4, TWO, cache, batch_size)
    assert rows[:-1] == [batch_size] * (kill_at - 1)
    rows.clear(), kill.clear(), forwards.clear()
    assert extract(teacher, chunks, CATEGORIES, 0.5, cap, 4, TWO, cache, batch_size) == whole
    assert sum(rows) == generations - finished  # the batches finished before the kill are not generated again
    rows.clear(), forwards.clear()
    assert extract(teacher, chunks, CATEGORIES, 0.5, cap, 4, TWO, cache, batch_size) == whole
    assert rows == [] and forwards == []  # everything, P(yes) included, came from the cache


def test_greedy_lines_do_not_depend_on_the_batch_size(models, board, tmp_path, monkeypatch):
    """Summaries and questions generated four at a time, left-padded beside prompts of other
    lengths, are the text each prompt gets alone (transformers' generate on its own tokens, as
    extraction generated before it batched). The random tiny model writes a different line for
    almost every prompt, so equal lines are no accident of a constant output."""
    teacher = load_causal_lm(models["random"], device="cpu")
    held = [c for c in _chunks(board) if c.split == HELD_OUT][::7]  # both people, chunks of 56 to 63 words
    prompts = [text for c in held for cat in CATEGORIES for text in line_prompts(c, cat)]
    tok, real, masks = teacher.tokenizer, teacher.model.generate, []
    alone = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        out = real(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        alone.append(first_line(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))

    def generate(*args, **kwargs):
        masks.append(kwargs["attention_mask"])
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher.model, "generate", generate)
    lines = {b: cached_lines(teacher, prompts, 6, AnswerCache(tmp_path / f"{b}.sqlite"), b) for b in (1, 4)}
    assert lines[1] == alone and lines[4] == alone
    assert len(set(alone)) > len(prompts) // 2
    batched = masks[len(prompts):]  # the batch-4 run's calls
    assert len(batched) == -(-len(prompts) // 4) and any((m == 0).any() for m in batched)  # padding was there


def _questions(tmp_path) -> Path:
    items = [{"id": f"Daniel_Reyes/0/{i}/belief", "persona": "Daniel_Reyes", "category": "belief",
              "chunk": f"Daniel_Reyes/0/{i}", "p_yes": 0.8, "summary": f"summary {i}", "question": f"question {i}?"}
             for i in range(3)]
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(items))
    return path


@pytest.fixture
def review(tmp_path, monkeypatch, call_stage):
    """(script, *extra args) -> StageResult: the review CLI on tmp_path/questions.json with
    `script` as its input."""
    def run_review(script: str, *extra: str):
        monkeypatch.setattr("sys.stdin", io.StringIO(script))
        return call_stage("stages/review.py", "--questions", str(tmp_path / "questions.json"),
                          "--out", str(tmp_path / "reviewed"), *extra)
    return run_review


def test_review_edits_reach_the_reviewed_questions_file(tmp_path, review):
    _questions(tmp_path)
    # accept the first; edit the second (new question, keep summary); drop the third
    result = review("a\ne\nWhat did room 114 teach you?\n\nd\n")
    assert result.code == 0, result.stderr
    saved = json.loads((tmp_path / "reviewed/Daniel_Reyes.json").read_text())["items"]
    assert [i["status"] for i in saved] == ["accepted", "edited", "dropped"]
    assert saved[1]["question"] == "What did room 114 teach you?" and saved[1]["summary"] == "summary 1"
    assert saved[1]["generated_question"] == "question 1?"
    reviewed = load_reviewed(tmp_path / "reviewed", "Daniel_Reyes")
    kept = [item for _, item in sorted(reviewed.items()) if item["status"] != "dropped"]
    assert [k["question"] for k in kept] == ["question 0?", "What did room 114 teach you?"]
    # nothing left to review: a second session asks nothing and changes nothing
    before = (tmp_path / "reviewed/Daniel_Reyes.json").read_bytes()
    assert review("").code == 0
    assert (tmp_path / "reviewed/Daniel_Reyes.json").read_bytes() == before


def test_quitting_keeps_what_was_decided_and_the_rest_comes_back(tmp_path, review):
    _questions(tmp_path)
    assert review("x\nd\nq\n").code == 0  # an unknown key is asked again
    saved = json.loads((tmp_path / "reviewed/Daniel_Reyes.json").read_text())["items"]
    assert [(i["id"][-8:], i["status"]) for i in saved] == [("0/belief", "dropped")]
    result = review("a\na\n")
    assert "2 accepted" in result.stdout
    assert len(json.loads((tmp_path / "reviewed/Daniel_Reyes.json").read_text())["items"]) == 3


def test_the_extract_stage_writes_profiles_and_questions(tmp_path, models, board, call_stage):
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"] = {"path": str(board), "personas": TWO}
    params["chunks"] = {"words": 60, "held_out": 0.25, "seed": 0}
    params["extract"] = {"categories": CATEGORIES, "threshold": 0.5, "cap": 2, "max_new_tokens": 4}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    root = yaml.safe_load((REPO / "params.yaml").read_text())
    root["teacher"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(root))
    assert call_stage("stages/persona_split.py", "--params", str(tmp_path / "p.yaml"), "--out",
                      str(tmp_path / "chunks"), "--metrics", str(tmp_path / "s.json")).code == 0
    result = call_stage("stages/persona_extract.py", "--params", str(tmp_path / "p.yaml"), "--teacher-params",
                        str(tmp_path / "params.yaml"), "--teacher", str(models["yes"]), "--chunks",
                        str(tmp_path / "chunks"), "--profiles", str(tmp_path / "profiles.json"),
                        "--questions", str(tmp_path / "questions.json"), "--metrics", str(tmp_path / "e.json"))
    assert result.code == 0, result.stderr
    questions = json.loads((tmp_path / "questions.json").read_text())
    assert len(questions) == 2 * len(TWO) * len(CATEGORIES)
    profiles = json.loads((tmp_path / "profiles.json").read_text())
    assert set(profiles) == set(TWO) and all(len(profiles[p]["belief"]) == 2 for p in TWO)
