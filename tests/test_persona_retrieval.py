"""The retrieval arms of persona-votes: the passage that obviously matches a question is the one
retrieved (the packaged all-MiniLM-L6-v2), k is respected, every person is embedded in one call;
the passages sit before the question in the prompt (a content-free question's too) and P(Aye) is
the same answer-token readout as an independent forward pass on the whole prompt; answers go
through the answer cache, keyed on the passages as cut; passages are cut to the token budget; a
prompt past the model's context and a bad k are one-line errors; the stage writes both arms and
every reading of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scipy.special import expit

from decision_distill.core.errors import UserError
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.embeddings import embed
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import download
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.params import parse_persona_params
from decision_distill.personas.retrieval import (Passage, nearest, person_passages, retrieval_prompt,
                                                 retrieval_suffixes, retrieve, truncate)
from decision_distill.personas.votes import OPTIONS, PREFIX, score_all, vote_suffix, vote_table

REPO = Path(__file__).resolve().parents[1]
BOARD = REPO / "examples/board"
PASSAGES = [
    "I planted tomatoes and beans in the community garden this spring, and the soil was rich.",
    "The permit fee for a small shop is far too high; it keeps new businesses off Main Street.",
    "My grandson plays the trumpet in the school band and practises every evening.",
    "The rain this autumn flooded the basement of the old library twice.",
]
QUESTIONS = ["Should the board cut the permit fee for small shops?",
             "Should the board pay to repair the flood damage at the library?"]


def test_the_passage_that_obviously_matches_is_retrieved_first_and_k_is_respected():
    own = [Passage(f"Ada/0/{i}", text) for i, text in enumerate(PASSAGES)]
    calls = []

    def counting_embed(texts):
        calls.append(list(texts))
        return embed(texts)

    picked = retrieve({"Ada": own, "Bo": own[:1]}, QUESTIONS, 2, counting_embed)
    assert [row[0].id for row in picked["Ada"]] == ["Ada/0/1", "Ada/0/3"]  # the fee passage, the flood passage
    assert all(len(row) == 2 for row in picked["Ada"])
    assert all(len(row) == 1 for row in picked["Bo"])  # fewer passages than k: all of them
    # One batched call for the questions and one per person: each text embedded once per run.
    assert calls == [QUESTIONS, PASSAGES, PASSAGES[:1]]


def test_nearest_orders_by_cosine_and_breaks_ties_to_the_earlier_passage():
    passages = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
    question = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert nearest(passages, question, 3).tolist() == [[3, 1, 2], [0, 1, 2]]
    assert nearest(passages, question, 1).shape == (2, 1)


def test_passages_are_every_monologue_cut_as_the_split_stage_cuts_them():
    corpus = load_corpus(BOARD)
    monologues = corpus.monologues["Walter_Henning"]
    passages = person_passages("Walter_Henning", monologues, 200)
    assert " ".join(p.text for p in passages).split() == " ".join(monologues).split()
    assert {int(p.id.split("/")[1]) for p in passages} == set(range(len(monologues)))  # held-out ones too


@pytest.fixture(scope="module")
def models(tmp_path_factory, persona_weights, always_prefer):
    """The tiny persona model (random weights: its P(Aye) moves with the prompt) and copies that
    always put the highest logit on " Aye" or " Nay", as model directories the stage accepts."""
    root = tmp_path_factory.mktemp("retrieval_models")
    out = {"random": root / "random"}
    download(str(persona_weights), "main", out["random"])
    for name, token in (("aye", OPTIONS[0]), ("nay", OPTIONS[1])):
        out[name], out[f"{name}_weights"] = root / name, always_prefer(persona_weights, root / f"{name}_w", token)
        download(str(out[f"{name}_weights"]), "main", out[name])
    return out


def test_passages_come_before_the_question_and_the_readout_is_the_answer_tokens(models, tmp_path):
    model = load_causal_lm(models["random"], device="cpu")
    corpus = load_corpus(BOARD)
    own = person_passages("Lucia_Brandt", corpus.monologues["Lucia_Brandt"], 40)
    votes = [v for v in corpus.votes if v.persona == "Lucia_Brandt"][:3]
    table, questions = vote_table(votes, ["Lucia_Brandt"])
    # Most similar first; the content-free question "N/A" has passages of its own.
    rows = [[own[3], own[0]], [own[1], own[5]], [own[2], own[4]], [own[6], own[7]]]
    picked = {"Lucia_Brandt": dict(zip([*questions, "N/A"], rows))}
    arm = {"arm": lambda persona: (model, retrieval_prompt(picked, 1024, 2))}
    cache = AnswerCache(tmp_path / "answers.sqlite")
    scored = score_all(table, questions, {}, arm, 2, cache, ["N/A"])
    assert len(cache) == 4  # three questions and the content-free one
    tok = model.tokenizer
    aye, nay = (tok(o, add_special_tokens=False).input_ids[0] for o in OPTIONS)
    for i, question in enumerate([*questions, "N/A"]):
        head, ask = vote_suffix("Lucia_Brandt", None, question)
        closest, second = rows[i]
        # The member line, the passages (the closest last, next to the question), then the unchanged question.
        prompt = PREFIX + head + f"Lucia Brandt said: {second.text}\nLucia Brandt said: {closest.text}\n" + ask
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([tok(prompt).input_ids])).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        expected = float(probs[aye] / (probs[aye] + probs[nay]))
        if i < len(questions):
            assert expit(scored.logodds["arm"][i]) == pytest.approx(expected, abs=1e-5)
            assert scored.mass["arm"][i] == pytest.approx(float(probs[aye] + probs[nay]), abs=1e-5)
        else:
            assert scored.content_free_by_person["arm"]["Lucia_Brandt"] == [pytest.approx(expected, abs=1e-5)]
    # A tighter budget cuts the passages: other prompts, so other keys (nothing served from the first run).
    cut = {"arm": lambda persona: (model, retrieval_prompt(picked, 2 * 16, 2))}
    tighter = score_all(table, questions, {}, cut, 2, cache, ["N/A"])
    assert len(cache) == 8 and not np.allclose(tighter.logodds["arm"], scored.logodds["arm"])
    # The same passages and budget again: every answer read from the cache.
    again = score_all(table, questions, {}, arm, 2, cache, ["N/A"])
    assert len(cache) == 8
    np.testing.assert_array_equal(again.logodds["arm"], scored.logodds["arm"])


def test_passages_are_cut_to_whole_words_within_the_budget(models):
    tok = load_causal_lm(models["random"], device="cpu").tokenizer
    text = load_corpus(BOARD).monologues["Priya_Natarajan"][0]
    n_tokens = lambda s: len(tok(s, add_special_tokens=False).input_ids)  # noqa: E731
    short = truncate(tok, text, 30)
    words = short.split()
    assert n_tokens(short) <= 30 < n_tokens(" ".join(text.split()[: len(words) + 1]))
    assert text.startswith(short)
    assert truncate(tok, text, n_tokens(text)) == text
    picked = [[Passage("P/0/0", text)]]
    (_, body), = retrieval_suffixes(tok, "P", ["Why?"], picked, 30)
    assert body == f"P said: {short}\nQuestion: Why?\nVote:"


def test_a_prompt_past_the_models_context_is_a_one_line_error(models, tmp_path):
    model = load_causal_lm(models["random"], device="cpu")
    corpus = load_corpus(BOARD)
    long = Passage("Daniel_Reyes/0/0", " ".join(corpus.monologues["Daniel_Reyes"] * 2))
    votes = [v for v in corpus.votes if v.persona == "Daniel_Reyes"][:1]
    table, questions = vote_table(votes, ["Daniel_Reyes"])
    with pytest.raises(UserError, match=r"^votes\.retrieval\.max_tokens: .* past the model's context of 1024; "
                                        r"lower votes\.retrieval\.max_tokens$"):
        score_all(table, questions, {}, {"arm": lambda p: (model, retrieval_prompt({"Daniel_Reyes": {
            questions[0]: [long], "N/A": [long]}}, 4000, 1))}, 2, AnswerCache(tmp_path / "answers.sqlite"), ["N/A"])


@pytest.mark.parametrize("retrieval, key", [({"k": 0}, "votes.retrieval.k"), ({"k": "four"}, "votes.retrieval.k"),
                                            ({"k": 8, "max_tokens": 64}, "votes.retrieval.max_tokens"),
                                            ({"embedder": "bert"}, "votes.retrieval.embedder")])
def test_bad_retrieval_params_are_one_line_errors(retrieval, key):
    with pytest.raises(UserError) as err:
        parse_persona_params({"corpus": {"personas": ["A"]}, "votes": {"retrieval": retrieval}})
    message = str(err.value)
    assert "\n" not in message and key in message


def test_the_stage_writes_both_retrieval_arms(tmp_path, models, load_stage):
    """base: always Aye; every tuned model: always Nay. The retrieval arms follow their own model."""
    board = load_corpus(BOARD)
    people = ["Margaret_Okafor", "Walter_Henning"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in people:
        (corpus / f"{p}.txt").write_text("\n\n".join(board.monologues[p][:3]))
    questions = list(dict.fromkeys(v.question for v in board.votes))[:3]
    rows = [v for v in board.votes if v.persona in people and v.question in questions]
    (corpus / "votes.csv").write_text("question,persona,vote\n" + "".join(
        f'"{v.question}",{v.persona},{v.vote}\n' for v in rows))
    (tmp_path / "params.yaml").write_text(json.dumps({
        "corpus": {"path": str(corpus), "personas": people}, "chunks": {"words": 60},
        "votes": {"bootstrap": 100, "retrieval": {"k": 2, "max_tokens": 128}}}))
    for p in people:
        download(str(models["nay_weights"]), "main", tmp_path / "personas" / p / "merged")
    stage = load_stage("persona_votes")
    stage.main(["--teacher", str(models["aye"]), "--base", str(models["aye"]), "--models", str(tmp_path / "personas"),
                "--votes", str(tmp_path / "votes.json"), "--metrics", str(tmp_path / "metrics.json"),
                "--plot", str(tmp_path / "votes.png"), "--params", str(tmp_path / "params.yaml"),
                "--slm-params", str(REPO / "params.yaml")])
    report = json.loads((tmp_path / "metrics.json").read_text())
    # No profiles.yaml here: the name-only arms stand in for the profile arms (persona-votes).
    assert {m.split("|")[0] for m in report["pooled"]["models"]} == {"teacher+name", "base+name", "tuned",
                                                                     "base+retrieval", "tuned+retrieval"}
    for arm in ("base+retrieval", "tuned+retrieval"):  # every reading, the contrast against base+name
        assert {f"{arm}|{v}" for v in ("cc", "contrast", "loqo")} <= set(report["pooled"]["models"])
        assert report["references"][arm] == "base+name"
        assert set(report["content_free_p_aye"][arm]) == set(people)
    table = json.loads((tmp_path / "votes.json").read_text())
    assert len(table) == len(people) * len(questions)
    for row in table:
        assert row["p_aye[base+retrieval]"] > 0.5 > row["p_aye[tuned+retrieval]"]
        assert len(row["retrieved"]) == 2 and all(i.startswith(row["persona"] + "/") for i in row["retrieved"])
