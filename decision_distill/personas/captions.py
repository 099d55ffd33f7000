"""Meeting captions -> a persona corpus: one NAME.txt per person, one speaking turn a monologue.

Inputs, by suffix:
  .vtt    WebVTT; a line's speaker is its <v Name> voice tag or a NAME: prefix
  .srt    SubRip; a line's speaker is a NAME: prefix
  .json   diarized segments: a list of {"speaker", "text", "start"?, "end"?} (or {"segments": [...]},
          as WhisperX writes it), in spoken order
A caption line without a label continues the current speaker (captions name a speaker when the
speaker changes); lines before the first label are counted as unattributed and left out.

A speaker map (YAML, label -> person name, e.g. `SPEAKER_01: Margaret Okafor`) names the labels;
a label not in it is kept as its own person, dropped, or refused (`unmapped`). A name becomes
the corpus's file name by corpus.file_name ("Margaret Okafor" -> Margaret_Okafor). Consecutive
lines of one person join into one monologue; another speaker in between, even a dropped one,
ends it, and no turn runs on from one input file into the next.

Every input is read and checked before anything is written; each file is written atomically.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import srt
import webvtt
from ruamel.yaml import YAML, YAMLError
from webvtt.errors import MalformedCaptionError, MalformedFileError

from ..core.atomic import atomic_path
from ..core.errors import UserError
from .corpus import file_name, read_utf8

UNMAPPED = ("keep", "drop", "error")
# A NAME: prefix: an optional ">>" or "-" speaker-change mark, then a candidate label up to the
# first colon, which a space must follow ("At 10:30 we" is no label). _is_label then decides.
_PREFIX = re.compile(r"(?:>>|-)?\s*(?P<label>[^:\n]{1,60}?):\s+(?P<text>\S.*)", re.S)
_LABEL_PUNCT = set("_.'’-")


@dataclass(frozen=True)
class Line:
    label: str | None  # None: no label, the current speaker goes on
    text: str
    where: str  # "cue 12", "segment 3": for error messages


@dataclass
class Conversion:
    monologues: dict[str, list[str]] = field(default_factory=dict)  # person (file name) -> monologues
    unattributed_words: int = 0  # before any label in a file
    dropped: Counter = field(default_factory=Counter)  # label -> words left out (unmapped: drop)


def _is_label(candidate: str, speaker_map: dict[str, str]) -> bool:
    """A label in the map, or one to four words each starting with a capital or a digit
    (Margaret Okafor, MS. OKAFOR, SPEAKER_01): "The point is this:" is speech, not a label.
    One capitalised word ("Okay: ...") still reads as a label: --unmapped error catches it."""
    if candidate in speaker_map:
        return True
    words = candidate.split(" ")
    return 1 <= len(words) <= 4 and all(
        w and (w[0].isupper() or w[0].isdigit()) and all(c.isalnum() or c in _LABEL_PUNCT for c in w[1:])
        for w in words)


def _prefixed(text: str, where: str, speaker_map: dict[str, str]) -> Line:
    match = _PREFIX.fullmatch(text)
    if match and _is_label(" ".join(match["label"].split()), speaker_map):
        return Line(" ".join(match["label"].split()), match["text"], where)
    return Line(None, text, where)


def read_vtt(path: Path, speaker_map: dict[str, str]) -> list[Line]:
    text = read_utf8(path)
    try:
        # strict: a malformed cue block is an error, not silently skipped text
        captions = webvtt.from_buffer(io.StringIO(text), strict=True).captions
    except (MalformedFileError, MalformedCaptionError) as err:
        detail = " ".join(str(err).split())[:120]
        raise UserError(f"{path}: not valid WebVTT ({detail}); it must start with WEBVTT and hold "
                        "cues of '00:00:01.000 --> 00:00:04.000' and text") from None
    lines = []
    for number, caption in enumerate(captions, 1):
        # raw_text keeps the tags, text drops them: line by line, they align
        for raw, plain in zip(caption.raw_text.split("\n"), caption.text.split("\n")):
            plain = plain.strip()
            if not plain:
                continue
            voice = webvtt.Caption.VOICE_SPAN_PATTERN.match(raw.strip())
            where = f"cue {number}"
            lines.append(Line(" ".join(voice[1].split()), plain, where) if voice
                         else _prefixed(plain, where, speaker_map))
    return lines


def read_srt(path: Path, speaker_map: dict[str, str]) -> list[Line]:
    text = read_utf8(path)
    try:
        subtitles = list(srt.parse(text))
    except srt.SRTParseError as err:
        line = text[:err.expected_start].count("\n") + 1  # where the unparsable text begins
        raise UserError(f"{path}: not valid SRT at line {line}; each block is a number, a "
                        "'00:00:01,000 --> 00:00:04,000' line and text, blocks separated by a blank line") from None
    except srt.TimestampParseError as err:
        raise UserError(f"{path}: not valid SRT ({err}); write times as 00:00:01,000") from None
    lines = []
    for subtitle in subtitles:
        # webvtt's Caption drops <i>, <b>, <font ...> markup, which SRT files carry too
        plain = webvtt.Caption(text=subtitle.content).text
        for part in plain.split("\n"):
            if part.strip():
                lines.append(_prefixed(part.strip(), f"cue {subtitle.index}", speaker_map))
    return lines


def read_segments(path: Path) -> list[Line]:
    text = read_utf8(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON (line {err.lineno}); write a list of "
                        '{"speaker": ..., "text": ...} segments') from None
    segments = raw.get("segments") if isinstance(raw, dict) else raw
    if not isinstance(segments, list):
        raise UserError(f'{path}: must be a list of {{"speaker": ..., "text": ...}} segments '
                        '(or an object whose "segments" is that list)')
    lines = []
    for number, seg in enumerate(segments, 1):
        where = f"{path}: segment {number}"
        if not isinstance(seg, dict) or not isinstance(seg.get("text"), str):
            raise UserError(f'{where} needs a string "text"')
        speaker = seg.get("speaker")
        if isinstance(speaker, bool) or not isinstance(speaker, (str, int)) or not str(speaker).strip():
            raise UserError(f'{where} needs a "speaker" (a label such as SPEAKER_01)')
        times = [seg[k] for k in ("start", "end") if k in seg]
        if any(isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0
               for t in times):
            raise UserError(f'{where}: "start" and "end" must be seconds (numbers >= 0) when given')
        if len(times) == 2 and times[1] < times[0]:
            raise UserError(f'{where}: "end" ({times[1]}) is before "start" ({times[0]}); fix the times')
        if seg["text"].strip():
            lines.append(Line(" ".join(str(speaker).split()), seg["text"].strip(), f"segment {number}"))
    return lines


def read_speaker_map(path: Path) -> dict[str, str]:
    try:
        raw = YAML(typ="safe", pure=True).load(read_utf8(path))
    except YAMLError:
        raise UserError(f"{path}: not valid YAML; write one 'LABEL: Person Name' line per speaker") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: must map each speaker label to a person's name ('SPEAKER_01: Margaret Okafor')")
    out = {}
    for label, name in raw.items():
        if not isinstance(name, str) or not file_name(name):
            raise UserError(f"{path}: '{label}' must map to a person's name holding letters or digits, "
                            f"not {name!r}")
        out[" ".join(str(label).split())] = name
    return out


def read_lines(path: Path, speaker_map: dict[str, str]) -> list[Line]:
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass caption files (.vtt, .srt) or diarized segments (.json)")
    readers = {".vtt": lambda: read_vtt(path, speaker_map), ".srt": lambda: read_srt(path, speaker_map),
               ".json": lambda: read_segments(path)}
    if path.suffix.lower() not in readers:
        raise UserError(f"{path}: unknown kind of file; name it .vtt (WebVTT), .srt (SubRip) "
                        "or .json (diarized segments)")
    return readers[path.suffix.lower()]()


def convert(inputs: list[Path], speaker_map: dict[str, str], unmapped: str = "keep",
            map_source: str = "the speaker map") -> Conversion:
    """Every input's lines, attributed and joined into monologues, inputs in the order given."""
    result, persons = Conversion(), {}  # casefolded file name -> file name
    for path in inputs:
        speaker, previous = None, None  # the current label; the person of the last line kept or dropped
        for line in read_lines(path, speaker_map):
            speaker = line.label if line.label is not None else speaker
            words = len(line.text.split())
            if speaker is None:
                result.unattributed_words += words
                continue
            person = _person(speaker, speaker_map, unmapped, f"{path}: {line.where}", map_source)
            if person is None:
                result.dropped[speaker] += words
                previous = ("dropped", speaker)
                continue
            known = persons.setdefault(person.casefold(), person)
            if known != person:
                raise UserError(f"{path}: {line.where}: speaker '{speaker}' becomes persona {person}, and another "
                                f"speaker {known}: names that differ only in case; spell the person one way "
                                f"in {map_source}")
            text = " ".join(line.text.split())
            if person == previous:
                result.monologues[person][-1] += " " + text
            else:
                result.monologues.setdefault(person, []).append(text)
            previous = person
    if not result.monologues:
        raise UserError(f"{', '.join(map(str, inputs))}: no labelled speech to keep; label speakers with "
                        "<v Name> tags, NAME: prefixes or a \"speaker\" field, and map them in the speaker map")
    return result


def _person(label: str, speaker_map: dict[str, str], unmapped: str, where: str, map_source: str) -> str | None:
    if label in speaker_map:
        return file_name(speaker_map[label])
    if unmapped == "drop":
        return None
    if unmapped == "error":
        raise UserError(f"{where}: speaker '{label}' is not in {map_source}; add '{label}: Person Name' "
                        "to it, or pass --unmapped keep or --unmapped drop")
    if not file_name(label):
        raise UserError(f"{where}: speaker label '{label}' holds no letter or digit to name a persona; "
                        f"map it in {map_source}")
    return file_name(label)


def write_corpus(monologues: dict[str, list[str]], out: Path, overwrite: bool = False) -> list[Path]:
    """NAME.txt per person (monologues separated by a blank line, as corpus.load_corpus reads them).
    Checks every target before writing any."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a directory; pass --out a corpus directory")
    if out.is_dir() and any(out.glob("*.jsonl")):
        raise UserError(f"{out}: holds a .jsonl corpus; NAME.txt files beside it would mix two formats: "
                        "pass another --out")
    existing = {p.stem.casefold(): p for p in out.glob("*.txt")} if out.is_dir() else {}
    for person in monologues:
        old = existing.get(person.casefold())
        if old is not None and (not overwrite or old.stem != person):
            fix = "pass --overwrite to replace it" if old.stem == person else "rename or remove it"
            raise UserError(f"{old}: already in the corpus (persona {person}); convert every meeting in one run "
                            f"and {fix}, or pass another --out")
    written = []
    for person in sorted(monologues):
        target = out / f"{person}.txt"
        with atomic_path(target) as tmp:
            tmp.write_text("\n\n".join(monologues[person]) + "\n", encoding="utf-8")
        written.append(target)
    return written
