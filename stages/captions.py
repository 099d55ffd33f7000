"""Turn meeting captions into a persona corpus: one NAME.txt per person, one speaking turn a
monologue (docs/personas.md, "From meeting captions"). A tool you run once per corpus, not a
DVC stage.

inputs (by suffix):
  .vtt   WebVTT; speakers as <v Name> voice tags or NAME: prefixes
  .srt   SubRip; speakers as NAME: prefixes
  .json  diarized segments: [{"speaker": "SPEAKER_01", "text": "...", "start": 0.0, "end": 4.2}, ...]
A caption line without a label continues the current speaker. Consecutive lines of one person
join into one monologue. Pass every meeting in one run: a person's file is written once.

speaker map (--speakers, YAML): label -> person name, e.g.
  SPEAKER_01: Margaret Okafor
  MS. OKAFOR: Margaret Okafor
Names become file names: "Margaret Okafor" -> Margaret_Okafor.txt (letters, digits, _ and -).

example:
  python stages/captions.py meetings/2024-03-12.vtt meetings/2024-04-09.json \\
      --speakers meetings/speakers.yaml --unmapped error --out corpora/board
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_distill.core.errors import stage_main
from decision_distill.personas.captions import UNMAPPED, convert, read_speaker_map, write_corpus


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", type=Path, nargs="+", help="caption files (.vtt, .srt) and segment files (.json)")
    parser.add_argument("--out", type=Path, required=True, help="the corpus directory to write NAME.txt files into")
    parser.add_argument("--speakers", type=Path, help="YAML speaker map: label -> person name")
    parser.add_argument("--unmapped", choices=UNMAPPED, default="keep",
                        help="a label not in the speaker map: keep it as its own person (default), drop its "
                             "speech, or stop with an error (use once the map is complete)")
    parser.add_argument("--overwrite", action="store_true", help="replace NAME.txt files already in --out")
    args = parser.parse_args(argv)
    speaker_map = read_speaker_map(args.speakers) if args.speakers else {}
    result = convert(args.inputs, speaker_map, args.unmapped, str(args.speakers or "the speaker map (--speakers)"))
    write_corpus(result.monologues, args.out, args.overwrite)
    for person, monologues in sorted(result.monologues.items()):
        words = sum(len(m.split()) for m in monologues)
        # persona-split holds out whole monologues: one alone leaves nothing to train or test on
        note = "  (fewer than 2 monologues: persona-split will refuse this person)" if len(monologues) < 2 else ""
        print(f"{person}: {len(monologues)} monologue{'s' * (len(monologues) != 1)}, {words} words{note}")
    if result.unattributed_words:
        print(f"left out: {result.unattributed_words} words before the first speaker label of a file")
    for label, words in sorted(result.dropped.items()):
        print(f"dropped (not in the speaker map): {label}, {words} words")
    everyone = sorted(p.stem for p in args.out.glob("*.txt"))  # with people an earlier run wrote
    print(f"wrote {len(result.monologues)} files to {args.out}; in personas/params.yaml set corpus.path: {args.out} "
          f"and corpus.personas: [{', '.join(everyone)}]")


if __name__ == "__main__":
    main()
