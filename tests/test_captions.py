"""Meeting captions (WebVTT voice tags, SRT NAME: prefixes, diarized JSON segments) become a
corpus that load_corpus reads: one file per person, one speaking turn a monologue; bad input
is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decision_distill.personas.corpus import file_name, load_corpus

SCRIPT = "stages/captions.py"

VTT = """WEBVTT

00:00:01.000 --> 00:00:04.000
<v Margaret Okafor>Thank you, Chair. Three questions on the bus contract.

00:00:04.000 --> 00:00:07.500
<v Margaret Okafor>First, who checked the fuel cards last year?

00:00:07.500 --> 00:00:09.000
Second, why is the renewal <i>not</i> out to bid?

00:00:09.000 --> 00:00:12.000
<v.loud Walter>Nobody else bids out here, Margaret.
<v Margaret Okafor>Then we ask the neighbouring districts.

00:00:12.000 --> 00:00:15.000
<v Walter>Fine. I can live with asking.
"""

SRT = """1
00:00:01,000 --> 00:00:03,000
SPEAKER_01: The point is this: the route map is ten years old.

2
00:00:03,000 --> 00:00:05,000
At 10:30 we take a short break.

3
00:00:05,000 --> 00:00:08,000
- DR. NATARAJAN: The pilot data say <b>otherwise</b>.
- Maria de la Cruz: Which pilot?
"""

SPEAKERS = "SPEAKER_01: Walter Henning\nWalter: Walter Henning\nDR. NATARAJAN: Priya Natarajan\n" \
           "Maria de la Cruz: María de la Cruz\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _files(out: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.iterdir())}


def test_vtt_voice_tags_join_consecutive_turns_and_map_names_to_file_names(tmp_path, call_stage):
    vtt = _write(tmp_path, "m.vtt", VTT)
    speakers = _write(tmp_path, "speakers.yaml", SPEAKERS)
    out = tmp_path / "corpus"
    result = call_stage(SCRIPT, str(vtt), "--speakers", str(speakers), "--out", str(out))
    assert result.code == 0, result.stderr
    # Margaret's three cues are one turn (the unlabelled cue continues her, <i> is dropped); Walter's
    # reply ends it; her line after his, in the same cue, starts a second monologue.
    assert _files(out) == {
        "Margaret_Okafor.txt": "Thank you, Chair. Three questions on the bus contract. First, who checked the fuel "
                               "cards last year? Second, why is the renewal not out to bid?\n\n"
                               "Then we ask the neighbouring districts.\n",
        "Walter_Henning.txt": "Nobody else bids out here, Margaret.\n\nFine. I can live with asking.\n",
    }
    corpus = load_corpus(out)
    assert corpus.monologues["Margaret_Okafor"][1] == "Then we ask the neighbouring districts."
    assert "corpus.personas: [Margaret_Okafor, Walter_Henning]" in result.stdout


def test_srt_name_prefixes_are_read_strictly(tmp_path, call_stage):
    srt = _write(tmp_path, "m.srt", SRT)
    speakers = _write(tmp_path, "speakers.yaml", SPEAKERS)
    out = tmp_path / "corpus"
    result = call_stage(SCRIPT, str(srt), "--speakers", str(speakers), "--out", str(out), "--unmapped", "error")
    assert result.code == 0, result.stderr
    # "The point is this:" and "At 10:30" are speech, not labels; "Maria de la Cruz" is no capitalised
    # label, but the map names it; a dialogue cue holds two speakers; <b> markup is dropped.
    assert load_corpus(out).monologues == {
        "Walter_Henning": ["The point is this: the route map is ten years old. At 10:30 we take a short break."],
        "Priya_Natarajan": ["The pilot data say otherwise."],
        "María_de_la_Cruz": ["Which pilot?"],
    }


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"language": "en", "segments": s}])
def test_json_segments_join_one_person_across_labels_and_a_dropped_speaker_ends_a_turn(tmp_path, call_stage, wrap):
    segments = [
        {"speaker": "SPEAKER_01", "text": "I move we table the item.", "start": 0.0, "end": 2.0},
        {"speaker": "SPEAKER_03", "text": "Until the audit is back.", "start": 2.0, "end": 3.5},  # same person
        {"speaker": "SPEAKER_02", "text": "Is there a second?", "start": 3.5, "end": 4.0},  # the clerk, unmapped
        {"speaker": "SPEAKER_01", "text": "Then I withdraw it.", "start": 4.0, "end": 5.0},
        {"speaker": "SPEAKER_00", "text": "  "},  # no words: nothing to keep
    ]
    data = _write(tmp_path, "d.json", json.dumps(wrap(segments)))
    speakers = _write(tmp_path, "speakers.yaml", "SPEAKER_01: Lucia Brandt\nSPEAKER_03: Lucia Brandt\n")
    out = tmp_path / "corpus"
    result = call_stage(SCRIPT, str(data), "--speakers", str(speakers), "--out", str(out), "--unmapped", "drop")
    assert result.code == 0, result.stderr
    assert _files(out) == {"Lucia_Brandt.txt": "I move we table the item. Until the audit is back.\n\n"
                                               "Then I withdraw it.\n"}
    assert "dropped (not in the speaker map): SPEAKER_02, 4 words" in result.stdout


def test_an_unknown_speaker_is_kept_by_default_and_refused_with_unmapped_error(tmp_path, call_stage):
    data = _write(tmp_path, "d.json", json.dumps([{"speaker": "SPEAKER_01", "text": "Good evening."},
                                                  {"speaker": "SPEAKER_07", "text": "Public comment here."}]))
    speakers = _write(tmp_path, "speakers.yaml", "SPEAKER_01: Lucia Brandt\n")
    kept = call_stage(SCRIPT, str(data), "--speakers", str(speakers), "--out", str(tmp_path / "kept"))
    assert kept.code == 0 and sorted(_files(tmp_path / "kept")) == ["Lucia_Brandt.txt", "SPEAKER_07.txt"]
    out = tmp_path / "refused"
    refused = call_stage(SCRIPT, str(data), "--speakers", str(speakers), "--out", str(out), "--unmapped", "error")
    assert refused.code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "segment 2: speaker 'SPEAKER_07' is not in" in refused.stderr and "speakers.yaml" in refused.stderr
    assert not out.exists()


@pytest.mark.parametrize("name, text, message", [
    ("m.vtt", "00:00:01.000 --> 00:00:02.000\n<v A>Hi.\n", "m.vtt: not valid WebVTT"),
    ("m.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v A>Hi.\n00:00:03.000 --> 00:00:04.000\n<v A>Bye.\n",
     "m.vtt: not valid WebVTT"),  # no blank line between two cues
    ("m.srt", "1\n00:00:01,000 --> 00:00:02,000\nA: Hi.\n\n2\n00:00:0x,000 --> 00:00:03,000\nA: Bye.\n",
     "m.srt: not valid SRT at line 5"),
    ("d.json", '[{"speaker": "A", "text": "Hi."},', "d.json: not JSON"),
    ("d.json", '[{"speaker": "A", "text": "Hi."}, {"text": "Who?"}]', 'd.json: segment 2 needs a "speaker"'),
    ("d.json", '[{"speaker": "A", "text": "Hi.", "start": 5, "end": 2}]', 'd.json: segment 1: "end" (2) is before'),
    ("notes.txt", "A: Hi.\n", "notes.txt: unknown kind of file"),
    ("m.vtt", "WEBVTT\n\nNOTE only a comment\n", "no labelled speech"),
])
def test_a_malformed_input_is_one_line_and_nothing_is_written(tmp_path, call_stage, name, text, message):
    good = _write(tmp_path, "good.vtt", VTT)  # read first: even its people are not written
    bad = _write(tmp_path, name, text)
    out = tmp_path / "corpus"
    result = call_stage(SCRIPT, str(good), str(bad), "--out", str(out)) if "no labelled" not in message \
        else call_stage(SCRIPT, str(bad), "--out", str(out))
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert not out.exists()


def test_an_existing_person_file_is_replaced_only_when_asked(tmp_path, call_stage):
    vtt = _write(tmp_path, "m.vtt", VTT)
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "Margaret_Okafor.txt").write_text("An earlier meeting.\n\nAnd more.\n")
    refused = call_stage(SCRIPT, str(vtt), "--out", str(out))
    assert refused.code == 2 and "Margaret_Okafor.txt: already in the corpus" in refused.stderr
    assert _files(out) == {"Margaret_Okafor.txt": "An earlier meeting.\n\nAnd more.\n"}  # and no Walter yet
    assert call_stage(SCRIPT, str(vtt), "--out", str(out), "--overwrite").code == 0
    assert load_corpus(out).monologues["Margaret_Okafor"][0].startswith("Thank you, Chair.")


def test_two_names_that_differ_only_in_case_are_refused(tmp_path, call_stage):
    data = _write(tmp_path, "d.json", json.dumps([{"speaker": "A", "text": "One."}, {"speaker": "B", "text": "Two."}]))
    speakers = _write(tmp_path, "speakers.yaml", "A: Ann Lee\nB: ann lee\n")
    result = call_stage(SCRIPT, str(data), "--speakers", str(speakers), "--out", str(tmp_path / "c"))
    assert result.code == 2 and "differ only in case" in result.stderr and not (tmp_path / "c").exists()


@pytest.mark.parametrize("spoken, persona", [
    ("Margaret Okafor", "Margaret_Okafor"), ("  Sean  O'Brien ", "Sean_OBrien"), ("MS. OKAFOR", "MS_OKAFOR"),
    ("Anne-Marie Dubois", "Anne-Marie_Dubois"), ("José Núñez", "José_Núñez"), ("-- SPEAKER_01 --", "SPEAKER_01"),
    ("???", ""),
])
def test_spoken_names_become_valid_persona_names(spoken, persona, tmp_path):
    assert file_name(spoken) == persona
    if persona:  # the corpus accepts what the converter writes
        (tmp_path / f"{persona}.txt").write_text("one\n\ntwo\n", encoding="utf-8")
        assert load_corpus(tmp_path).personas == [persona]
