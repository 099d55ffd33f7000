"""The persona corpus: the shipped example meets the issue's bar, bad corpora are one-line
errors naming the file, and the split never puts one monologue on both sides."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from decision_distill.core.errors import UserError
from decision_distill.personas.chunks import HELD_OUT, TRAIN, cut, load_chunks, load_profiles, split_corpus
from decision_distill.personas.corpus import load_corpus

REPO = Path(__file__).resolve().parents[1]

EXAMPLE = REPO / "examples/board"


def test_the_example_board_is_five_people_with_enough_words_and_mixed_votes():
    corpus = load_corpus(EXAMPLE)
    assert len(corpus.personas) >= 5
    assert all(corpus.words(p) >= 2500 for p in corpus.personas)
    questions = {v.question for v in corpus.votes}
    assert len(questions) >= 30
    # every member votes on every question, and the votes are not all Aye (nor nearly so)
    assert Counter(v.persona for v in corpus.votes) == {p: len(questions) for p in corpus.personas}
    aye = sum(v.vote == "Aye" for v in corpus.votes) / len(corpus.votes)
    assert 0.3 < aye < 0.75
    assert set(corpus.profiles) == set(corpus.personas)
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    assert sorted(params["corpus"]["personas"]) == corpus.personas


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "board"
    shutil.copytree(EXAMPLE, target)
    return target


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "Walter_Henning.txt").write_text("  \n\n"), "Walter_Henning.txt: the file is empty"),
    (lambda d: (d / "Walter_Henning.txt").write_bytes("caf\xe9".encode("latin-1")), "Walter_Henning.txt: not UTF-8"),
    (lambda d: (d / "votes.csv").write_text("question,persona,vote\nQ?,Nobody,Aye\n"),
     "votes.csv: line 2: persona 'Nobody' has no text"),
    (lambda d: (d / "votes.csv").write_text("question,persona,vote\nQ?,Walter_Henning,yes\nQ?,Lucia_Brandt,Maybe\n"),
     "votes.csv: line 3: vote 'Maybe' is not an accepted spelling; write Aye, Yes or For; Nay, No or Against; "
     "Abstain, Absent or blank"),
    (lambda d: (d / "Walter_Henning.txt").rename(d / "Walter Henning.txt"),
     "Walter Henning.txt: persona name 'Walter Henning' may hold only letters, digits, _ and -"),
    (lambda d: (d / "Walter_Henning.txt").rename(d / "W.Henning.txt"),
     "W.Henning.txt: persona name 'W.Henning' may hold only letters, digits, _ and -"),
    (lambda d: (d / "profiles.yaml").write_text("Walter_Henning: farmer\nNobody: ghost\n"),
     "profiles.yaml: Nobody has no text in the corpus"),
    (lambda d: shutil.copy(d / "Walter_Henning.txt", d / "walter_henning.txt"),
     "persona 'walter_henning' already comes from Walter_Henning.txt"),
])
def test_a_bad_corpus_is_a_one_line_error_naming_the_file_and_writes_nothing(tmp_path, breakage, message, call_stage):
    corpus = _copy(tmp_path)
    breakage(corpus)
    with pytest.raises(UserError, match=message.replace("?", r"\?").replace("(", r"\(")):
        load_corpus(corpus)
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"]["path"] = str(corpus)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out/chunks"
    result = call_stage("stages/persona_split.py", "--params", str(tmp_path / "params.yaml"), "--out", str(out),
                        "--metrics", str(tmp_path / "out/split.json"))
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_jsonl_persona_name_with_a_space_is_refused_naming_the_line(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c/talk.jsonl").write_text('{"persona": "Ann", "text": "a"}\n{"persona": "Bo Li", "text": "b"}\n')
    with pytest.raises(UserError, match=r"talk.jsonl: line 2: persona name 'Bo Li' may hold only letters, digits, "
                                        r"_ and -, starting with a letter or digit.*\(e.g. Bo_Li\)"):
        load_corpus(tmp_path / "c")


VOTES = """question,persona,vote
Q1?,Walter_Henning, aye
Q1?,Lucia_Brandt,YES
Q1?,Daniel_Reyes,For
Q1?,Margaret_Okafor,nay
Q1?,Priya_Natarajan,No
Q2?,Walter_Henning,AGAINST
Q2?,Lucia_Brandt,Abstain
Q2?,Daniel_Reyes,absent
Q2?,Margaret_Okafor,
"""


def test_votes_accept_the_common_spellings_and_count_the_rows_with_no_vote(tmp_path, call_stage):
    corpus_dir = _copy(tmp_path)
    (corpus_dir / "votes.csv").write_text(VOTES)
    corpus = load_corpus(corpus_dir)
    assert [(v.question, v.persona, v.vote) for v in corpus.votes] == [
        ("Q1?", "Walter_Henning", "Aye"), ("Q1?", "Lucia_Brandt", "Aye"), ("Q1?", "Daniel_Reyes", "Aye"),
        ("Q1?", "Margaret_Okafor", "Nay"), ("Q1?", "Priya_Natarajan", "Nay"), ("Q2?", "Walter_Henning", "Nay")]
    assert [(v.persona, v.vote) for v in corpus.no_votes] == [
        ("Lucia_Brandt", "Abstain"), ("Daniel_Reyes", "Absent"), ("Margaret_Okafor", "blank")]
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"]["path"] = str(corpus_dir)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = call_stage("stages/persona_split.py", "--params", str(tmp_path / "params.yaml"),
                        "--out", str(tmp_path / "chunks"), "--metrics", str(tmp_path / "split.json"))
    assert result.code == 0, result.stderr
    metrics = json.loads((tmp_path / "split.json").read_text())
    assert (metrics["votes"], metrics["vote_questions"], metrics["aye_share"]) == (6, 2, 0.5)
    assert metrics["no_votes"] == {"abstain": 1, "absent": 1, "blank": 1}


def test_an_abstention_still_counts_as_the_persons_row_on_the_question(tmp_path):
    corpus_dir = _copy(tmp_path)
    (corpus_dir / "votes.csv").write_text("question,persona,vote\nQ?,Walter_Henning,Abstain\nQ?,Walter_Henning,Aye\n")
    with pytest.raises(UserError, match="line 3: Walter_Henning already has a row on this question"):
        load_corpus(corpus_dir)


def test_duplicate_personas_in_a_jsonl_corpus_differing_in_case_are_refused(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c/talk.jsonl").write_text('{"persona": "Ann", "text": "a b c"}\n{"persona": "ann", "text": "d e"}\n')
    with pytest.raises(UserError, match="talk.jsonl: personas 'Ann' and 'ann' differ only in case"):
        load_corpus(tmp_path / "c")


def test_a_jsonl_corpus_loads_one_monologue_per_row(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c/talk.jsonl").write_text('{"persona": "Ann", "text": "one two"}\n\n'
                                           '{"persona": "Bo", "text": "three"}\n{"persona": "Ann", "text": "four"}\n')
    corpus = load_corpus(tmp_path / "c")
    assert corpus.monologues == {"Ann": ["one two", "four"], "Bo": ["three"]}


def test_the_persona_list_must_match_the_corpus(tmp_path, call_stage):
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"]["personas"] = params["corpus"]["personas"][:-1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = call_stage("stages/persona_split.py", "--params", str(tmp_path / "params.yaml"),
                        "--out", str(tmp_path / "chunks"), "--metrics", str(tmp_path / "m.json"))
    assert result.code == 2 and "corpus.personas must list exactly" in result.stderr
    assert not (tmp_path / "chunks").exists()


def test_the_split_stage_writes_one_file_per_person_that_load_chunks_reads_back(tmp_path, call_stage):
    corpus = load_corpus(EXAMPLE)
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"]["path"] = str(EXAMPLE)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "chunks"
    (out / "Gone.json").parent.mkdir()
    (out / "Gone.json").write_text("{}")  # a person of an earlier corpus: the directory is replaced
    result = call_stage("stages/persona_split.py", "--params", str(tmp_path / "params.yaml"), "--out", str(out),
                        "--metrics", str(tmp_path / "m.json"))
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{p}.json" for p in corpus.personas]
    c = params["chunks"]
    expected = split_corpus(corpus, c["words"], c["held_out"], c["seed"])
    assert load_chunks(out) == expected
    one = corpus.personas[2]
    assert load_chunks(out, [one]) == [x for x in expected if x.persona == one]
    assert load_profiles(out, [one]) == {one: corpus.profiles[one]}
    with pytest.raises(UserError, match="Nobody.json: missing or not JSON"):
        load_chunks(out, ["Nobody"])


@pytest.mark.parametrize("change, message", [
    (lambda p: p["lora"].update(rnak=4), "unknown key 'lora.rnak'; did you mean 'rank'?"),
    (lambda p: p["chunks"].update(held_out=float("nan")), "chunks.held_out: must be a finite number"),
    (lambda p: p["corpus"]["personas"].append(p["corpus"]["personas"][0]),
     "corpus.personas: Value error, lists a name twice"),
    (lambda p: p["votes"].update(content_free=["N/A", "N/A"]),
     "votes.content_free: Value error, lists a question twice"),
    (lambda p: p["votes"]["profile_check"].update(max_df=0), "votes.profile_check.max_df: Input should be greater than 0"),
])
def test_bad_persona_params_are_one_line_errors_naming_the_key(tmp_path, change, message, call_stage):
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    change(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = call_stage("stages/persona_split.py", "--params", str(tmp_path / "params.yaml"),
                        "--out", str(tmp_path / "chunks"), "--metrics", str(tmp_path / "m.json"))
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_chunks_are_about_the_chunk_size_and_cover_the_monologue():
    text = " ".join(f"w{i}" for i in range(450))
    pieces = cut(text, 200)
    assert [len(p.split()) for p in pieces] == [225, 225]
    assert " ".join(pieces) == text
    assert cut("a b c", 200) == ["a b c"]


@pytest.mark.parametrize("seed", range(8))
def test_no_monologue_is_split_across_train_and_held_out(seed):
    corpus = load_corpus(EXAMPLE)
    chunks = split_corpus(corpus, 200, 0.2, seed)
    sides: dict[tuple[str, int], set[str]] = {}
    for c in chunks:
        sides.setdefault((c.persona, c.monologue), set()).add(c.split)
    assert all(len(s) == 1 for s in sides.values())
    for persona in corpus.personas:
        mine = [c for c in chunks if c.persona == persona]
        held = sum(c.words for c in mine if c.split == HELD_OUT)
        assert {TRAIN, HELD_OUT} <= {c.split for c in mine}
        assert 0.2 <= held / corpus.words(persona) < 0.5  # whole monologues until a fifth of the words
    # every word of every monologue is in exactly one chunk
    assert sum(c.words for c in chunks) == sum(corpus.words(p) for p in corpus.personas)
    assert split_corpus(corpus, 200, 0.2, seed) == chunks  # seeded


def test_different_seeds_hold_out_different_monologues():
    corpus = load_corpus(EXAMPLE)
    held = {tuple(sorted((c.persona, c.monologue) for c in split_corpus(corpus, 200, 0.2, s) if c.split == HELD_OUT))
            for s in range(5)}
    assert len(held) > 1
