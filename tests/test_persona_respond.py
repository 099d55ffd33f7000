"""persona-respond: seeded answers go through the answer cache (a second run generates nothing
and returns the same text), and a person with no review file stops with the command to run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.core.errors import UserError
from decision_distill.lm.source import download
from decision_distill.personas.chunks import TRAIN, Chunk
from decision_distill.personas.respond import BASE_CHUNKS, BASE_PROFILE, TUNED, prompts_for, respond
from decision_distill.personas.reviewed_questions import reviewed_for
from decision_distill.lm.load import load_causal_lm

CHUNKS = [Chunk("Ada_Stone", 0, i, TRAIN, 8, text) for i, text in enumerate([
    "Fees keep small shops from opening on Main Street.", "I ran a hardware store for thirty years.",
    "Every new rule costs a shop owner an afternoon."])]
QUESTION = {"id": "Ada_Stone/0/0/belief", "persona": "Ada_Stone", "category": "belief", "chunk": CHUNKS[0].id,
            "summary": "wants lower fees", "question": "What do you think of the permit fee?"}


def test_a_rerun_takes_every_answer_from_the_cache(tmp_path, build_tiny_persona_model):
    weights = build_tiny_persona_model(tmp_path / "w", [c.text for c in CHUNKS] * 20 + [QUESTION["question"]] * 5,
                                       vocab=200)
    download(str(weights), "main", tmp_path / "model")
    loads = []

    def load(directory):
        loads.append(directory)
        return load_causal_lm(directory, device="cpu")

    settings = SimpleNamespace(context_chunks=1, max_new_tokens=5, temperature=0.7, top_p=0.95, seed=0)
    reviewed = {"persona": "Ada_Stone", "questions": [QUESTION], "stale_reviews_left_out": 0, "not_reviewed": 0}
    models = {m: tmp_path / "model" for m in (TUNED, BASE_PROFILE, BASE_CHUNKS)}
    cache = AnswerCache(tmp_path / "answers.sqlite")
    first = respond(reviewed, "a shop owner", CHUNKS, models, load, cache, settings, "float32", "cpu")
    assert first["generated"] == 3 and len(cache) == 3
    loads.clear()
    again = respond(reviewed, "a shop owner", CHUNKS, models, load, cache, settings, "float32", "cpu")
    assert again["generated"] == 0 and loads == []  # nothing generated, no model even loaded
    assert again["items"] == first["items"]
    hotter = SimpleNamespace(**{**vars(settings), "temperature": 1.3})
    assert respond(reviewed, "a shop owner", CHUNKS, models, load, cache, hotter, "float32", "cpu")["generated"] == 3


def test_the_chunks_baseline_never_sees_the_questions_own_chunk():
    for seed in range(5):
        prompt = prompts_for("Ada_Stone", None, QUESTION, CHUNKS, 2, seed)[BASE_CHUNKS]
        assert CHUNKS[0].text not in prompt and CHUNKS[1].text in prompt and CHUNKS[2].text in prompt


def test_no_review_file_names_the_review_command(tmp_path):
    (tmp_path / "questions.json").write_text(json.dumps([{**QUESTION, "p_yes": 0.9}]))
    with pytest.raises(UserError, match=r"run `python stages/review\.py --persona Ada_Stone`"):
        reviewed_for(tmp_path / "reviewed", tmp_path / "questions.json", "Ada_Stone")


def test_reviewed_counts_kept_dropped_stale_and_unreviewed_questions_apart(tmp_path):
    ids = [f"Ada_Stone/0/{i}/belief" for i in range(5)]
    generated = [{**QUESTION, "id": i, "question": f"q{n}?", "summary": f"s{n}", "p_yes": 0.9} for n, i in enumerate(ids)]
    (tmp_path / "questions.json").write_text(json.dumps(generated))
    def item(n, status, question=None):
        g = generated[n]
        return {"id": g["id"], "persona": "Ada_Stone", "category": "belief", "chunk": g["chunk"], "status": status,
                "summary": g["summary"], "question": question or g["question"],
                "generated_summary": g["summary"], "generated_question": g["question"]}
    stale = {**item(3, "accepted"), "generated_question": "an older q3?"}  # extract changed q3 since
    (tmp_path / "reviewed").mkdir()
    (tmp_path / "reviewed/Ada_Stone.json").write_text(json.dumps(
        {"persona": "Ada_Stone", "items": [item(0, "accepted"), item(1, "edited", "Why q1?"), item(2, "dropped"), stale]}))
    out = reviewed_for(tmp_path / "reviewed", tmp_path / "questions.json", "Ada_Stone")
    assert [q["question"] for q in out["questions"]] == ["q0?", "Why q1?"]
    assert (out["dropped"], out["stale_reviews_left_out"], out["not_reviewed"]) == (1, 1, 2)  # q3 (stale) and q4
