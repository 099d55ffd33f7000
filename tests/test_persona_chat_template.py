"""The persona stages' chat settings (teacher.chat_template for extract, the teacher's vote arms
and the judge; agents.chat_template for respond and the agents' vote arms): with the setting on,
the prompt a stage sends is its completion prompt inside the tokenizer's chat template, read
where the model's reply begins; the answer cache never serves an answer asked the other way; a
tokenizer without a template is a one-line error naming the setting."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from decision_distill.core.errors import UserError
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import download
from decision_distill.personas.chunks import HELD_OUT, TRAIN, Chunk, split_corpus, write_chunks
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.extract import OPTIONS, PREFIX, decision_suffix, extract, p_yes
from decision_distill.personas.judge import RATINGS, RUBRICS, rating_suffix, ratings
from decision_distill.personas.respond import BASE_CHUNKS, BASE_PROFILE, TUNED, respond
from decision_distill.personas.votes import OPTIONS as VOTE_OPTIONS, PREFIX as VOTE_PREFIX, cached_logodds, vote_suffix

REPO = Path(__file__).resolve().parents[1]
TWO = ["Daniel_Reyes", "Lucia_Brandt"]
CATEGORIES = ["belief", "memory", "personality trait"]
TEACHER_KEY, AGENTS_KEY = "teacher.chat_template", "agents.chat_template"
OPEN, REPLY = "<bos><start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"  # tiny_teacher.CHAT_TEMPLATE


@pytest.fixture(scope="module")
def chat_model(persona_chat_model):
    return load_causal_lm(persona_chat_model, device="cpu")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory, persona_weights):
    root = tmp_path_factory.mktemp("plain")
    download(str(persona_weights), "main", root / "model")
    return load_causal_lm(root / "model", device="cpu")


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> list[Chunk]:
    root = tmp_path_factory.mktemp("board")
    for name in TWO:
        shutil.copy(REPO / "examples/board" / f"{name}.txt", root / f"{name}.txt")
    return split_corpus(load_corpus(root), 60, 0.25, 0)


def reply_distribution(model, content: str, replies: list[str]) -> torch.Tensor:
    """An independent reading: P(each reply's first token), full vocabulary, after the chat
    template's generation prompt around `content`."""
    tok = model.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model.model(torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits.double(), 0)[[tok(r, add_special_tokens=False).input_ids[0] for r in replies]]


def recorded_prompts(model, monkeypatch) -> list[str]:
    """The text of every row `model.generate` is given from now on, padding left out."""
    sent, real = [], model.model.generate

    def generate(*args, **kwargs):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]):
            sent.append(model.tokenizer.decode(ids[mask.bool()]))
        return real(*args, **kwargs)

    monkeypatch.setattr(model.model, "generate", generate)
    return sent


def test_extraction_reads_the_reply_inside_the_chat_template(chat_model, chunks, tmp_path):
    held = [c for c in chunks if c.split == HELD_OUT][:2]
    on = p_yes(chat_model, held, CATEGORIES, AnswerCache(tmp_path / "a.sqlite"), chat=TEACHER_KEY)
    off = p_yes(chat_model, held, CATEGORIES, AnswerCache(tmp_path / "b.sqlite"))
    for i, c in enumerate(held):
        for j, cat in enumerate(CATEGORIES):
            head, tail = decision_suffix(c, cat)
            p = reply_distribution(chat_model, PREFIX + head + tail, [o.lstrip() for o in OPTIONS])
            assert on[i, j] == pytest.approx((p[0] / p.sum()).item(), abs=1e-5)
    assert np.abs(on - off).min() > 1e-4  # another prompt, another reading, for every chunk and category


def test_extraction_generates_inside_the_template_and_never_takes_answers_asked_without_it(chat_model, chunks,
                                                                                           tmp_path, monkeypatch):
    sent = recorded_prompts(chat_model, monkeypatch)
    cache = AnswerCache(tmp_path / "answers.sqlite")
    forwards = []
    chat_model.model.register_forward_hook(lambda *_: forwards.append(1))
    held = [c for c in chunks if c.split == HELD_OUT][::5]  # both people's
    run = dict(chunks=held, categories=CATEGORIES, threshold=1e-9, cap=1, max_new_tokens=4, personas=TWO,
               cache=cache, batch_size=4)
    plain = extract(chat_model, **run)
    lines = 2 * len(TWO) * len(CATEGORIES)
    assert len(sent) == lines and not any("<start_of_turn>" in s for s in sent)
    sent.clear(), forwards.clear()
    wrapped = extract(chat_model, **run, chat=TEACHER_KEY)
    # The same cache: had the keys ignored the setting, every answer would have come from it.
    assert len(sent) == lines and forwards
    for text in sent:
        assert text.startswith(OPEN) and text.endswith(REPLY) and text.count("<bos>") == 1 and "Passage: " in text
    assert [q["p_yes"] for q in wrapped[1]] != [q["p_yes"] for q in plain[1]]
    sent.clear(), forwards.clear()
    assert extract(chat_model, **run, chat=TEACHER_KEY) == wrapped and sent == [] and forwards == []


def test_respond_asks_inside_the_template_under_its_own_key(persona_chat_model, tmp_path, monkeypatch):
    model = load_causal_lm(persona_chat_model, device="cpu")
    sent = recorded_prompts(model, monkeypatch)
    chunks = [Chunk("Ada_Stone", 0, i, TRAIN, 8, text) for i, text in
              enumerate(["We need more buses for the rural routes.", "I taught fourth grade for years."])]
    question = {"id": "Ada_Stone/0/0/belief", "persona": "Ada_Stone", "category": "belief", "chunk": chunks[0].id,
                "summary": "buses", "question": "What do you think of the school buses?"}
    reviewed = {"persona": "Ada_Stone", "questions": [question], "stale_reviews_left_out": 0, "not_reviewed": 0}
    settings = SimpleNamespace(context_chunks=1, max_new_tokens=4, temperature=0.7, top_p=0.95, seed=0)
    models = {m: persona_chat_model for m in (TUNED, BASE_PROFILE, BASE_CHUNKS)}
    cache = AnswerCache(tmp_path / "answers.sqlite")

    def ask(chat):
        return respond(reviewed, "a bus driver", chunks, models, lambda d: model, cache, settings, "float32", "cpu",
                       chat)

    assert ask(None)["generated"] == 3 and not any("<start_of_turn>" in s for s in sent)
    plain = list(sent)
    sent.clear()
    assert ask(AGENTS_KEY)["generated"] == 3  # not served the answers asked without the template
    assert all(p.startswith("<bos>Transcript") for p in plain)
    assert sent == [OPEN + p.removeprefix("<bos>") + REPLY for p in plain]  # one BOS: the template's
    sent.clear()
    assert ask(AGENTS_KEY)["generated"] == 0 and ask(None)["generated"] == 0 and sent == []


def test_a_vote_is_the_replys_first_token_and_keyed_apart(chat_model, tmp_path):
    suffixes = [vote_suffix("Ada_Stone", "a shop owner", q) for q in
                ["Should the board cut the permit fee?", "Should the board rebuild the gym?"]]
    cache = AnswerCache(tmp_path / "answers.sqlite")
    plain, _ = cached_logodds(chat_model, suffixes, cache, 4)
    forwards = []
    hook = chat_model.model.register_forward_hook(lambda *_: forwards.append(1))
    wrapped, mass = cached_logodds(chat_model, suffixes, cache, 4, chat=AGENTS_KEY)
    hook.remove()
    assert forwards  # scored again, not taken from the answers read without the template
    for (head, tail), lo, m in zip(suffixes, wrapped, mass):
        p = reply_distribution(chat_model, VOTE_PREFIX + head + tail, [o.lstrip() for o in VOTE_OPTIONS])
        assert lo == pytest.approx((p[0].log() - p[1].log()).item(), abs=1e-5)
        assert m == pytest.approx(p.sum().item(), rel=1e-4)
    assert np.abs(wrapped - plain).min() > 1e-4


def test_the_judge_rates_inside_the_template(chat_model):
    item = {"id": "Ada_Stone/0/0/belief", "persona": "Ada_Stone", "profile": "a bus driver", "chunk": "Ada_Stone/0/0",
            "chunk_text": "We need more buses for the rural routes.", "question": "What about the buses?",
            "answers": {TUNED: "More buses, now.", BASE_PROFILE: "Buses are fine."}}
    models = [TUNED, BASE_PROFILE]
    on = ratings(chat_model, [item], models, "levels", min_mass=1e-9, chat=TEACHER_KEY)
    off = ratings(chat_model, [item], models, "levels", min_mass=1e-9)
    for j, m in enumerate(models):
        head, tail = rating_suffix(item, item["answers"][m])
        p = reply_distribution(chat_model, RUBRICS["levels"] + head + tail, RATINGS)
        p = p / p.sum()
        assert on["expected"][0, j] == pytest.approx(sum((k + 1) * p[k].item() for k in range(5)), abs=1e-5)
        assert on["expected"][0, j] != pytest.approx(off["expected"][0, j], abs=1e-6)


@pytest.mark.parametrize("key", [TEACHER_KEY, AGENTS_KEY])
def test_a_tokenizer_without_a_template_is_a_one_line_error_naming_the_setting(plain_model, chunks, tmp_path, key):
    message = rf"^{key}: this tokenizer has no chat template; set it to false$"
    with pytest.raises(UserError, match=message):
        extract(plain_model, chunks, CATEGORIES, 0.5, 1, 4, TWO, AnswerCache(tmp_path / "a.sqlite"), chat=key)
    with pytest.raises(UserError, match=message):
        cached_logodds(plain_model, [vote_suffix("Ada_Stone", None, "Why?")], AnswerCache(tmp_path / "b.sqlite"), 4,
                       chat=key)


def test_the_extract_stage_reads_teacher_chat_template(tmp_path, persona_weights, chunks, call_stage):
    download(str(persona_weights), "main", tmp_path / "teacher")
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"] = {"path": str(REPO / "examples/board"), "personas": TWO}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    root = yaml.safe_load((REPO / "params.yaml").read_text())
    root["teacher"].update(device="cpu", chat_template=True)
    root["generate"]["cache"] = str(tmp_path / "answers.sqlite")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(root))
    write_chunks(chunks, {}, str(REPO / "examples/board"), tmp_path / "chunks")
    out = call_stage("stages/persona_extract.py", "--params", str(tmp_path / "p.yaml"), "--teacher-params",
                     str(tmp_path / "params.yaml"), "--teacher", str(tmp_path / "teacher"), "--chunks",
                     str(tmp_path / "chunks"), "--profiles", str(tmp_path / "profiles.json"), "--questions",
                     str(tmp_path / "questions.json"), "--metrics", str(tmp_path / "e.json"))
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.code == 2 and errors == [f"error: {TEACHER_KEY}: this tokenizer has no chat template; set it to false"]
    assert not (tmp_path / "questions.json").exists()
