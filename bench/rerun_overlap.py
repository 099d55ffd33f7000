"""Do two runs of the simulate stage agree within their intervals? Decider by decider.

    python -m bench.rerun_overlap [--a REV] (--b REV | --b-dir DIR) [--file metrics/simulate.json]

A rerun on the same machine type with the same seeds is bit-identical (bench/reproduce.py
checks that), so the useful rerun is one that changes what a user's rerun could change:
the students' training seeds and the simulated days, e.g.

    dvc exp run -n reseeded -S train.seed=1000 -S simulate.seed=1000
    python -m bench.rerun_overlap --a HEAD --b-dir .   # the experiment's results are in the workspace

(`dvc exp branch reseeded BRANCH` turns the experiment into a branch that `--b BRANCH` reads.)

For every decider of every simulation, and for the teacher's own total, it prints each run's
point estimate and interval for the headline numbers (total, total_diff, and each trait
group's buy-rate difference) and whether the two intervals overlap. An interval that
leaves out a source of variation (one training seed, few days) is what makes two reruns
exclude one another; the intervals here are over training seeds x days.

Exit 1 when any total_diff interval of the two runs fails to overlap; a group's
non-overlap is printed and counted, not failed (with ~50 intervals, 95 % each, one
miss is expected by chance).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def load(rev: str | None, directory: str | None, path: str) -> dict:
    if directory:
        return json.loads((Path(directory) / path).read_text())
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if shown.returncode:
        sys.exit(f"rerun_overlap: no {path} at {rev}: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def overlap(a: list | None, b: list | None) -> bool | None:
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def headline(block: dict) -> dict[str, tuple[float, list | None]]:
    """name -> (point, interval) of the numbers two reruns should agree on."""
    out = {k: (block[k], block.get(f"{k}_ci")) for k in ("total", "total_diff") if k in block}
    for group, g in (block.get("groups") or {}).items():
        out[f"groups.{group}.diff"] = (g["diff"], g.get("diff_ci"))
    return out


def show(point, ci) -> str:
    return f"{point:9.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f"{point:9.4g} [no interval]"


def compare(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """(printed rows, failures): every simulation and decider present in both runs."""
    rows, failures, misses, checked = [], [], 0, 0
    for sim in sorted(a.keys() & b.keys()):
        if not all(isinstance(run[sim], dict) and "deciders" in run[sim] for run in (a, b)):
            continue  # a top-level number ("seconds") or a skipped simulation
        blocks = {"teacher": (a[sim]["teacher"], b[sim]["teacher"])}
        blocks |= {d: (a[sim]["deciders"][d], b[sim]["deciders"][d])
                   for d in a[sim]["deciders"] if d in b[sim]["deciders"]}
        for name, (x, y) in blocks.items():
            hx, hy = headline(x), headline(y)
            for key in hx.keys() & hy.keys():
                ok = overlap(hx[key][1], hy[key][1])
                if ok is None:
                    continue
                checked += 1
                misses += not ok
                mark = "overlap" if ok else "APART"
                if key == "total_diff" or not ok:
                    rows.append(f"{mark:8} {sim}.{name}.{key}: {show(*hx[key])}  vs {show(*hy[key])}")
                if key == "total_diff" and not ok:
                    failures.append(f"{sim}.{name}.total_diff")
    rows.append(f"{checked - misses} of {checked} intervals overlap")
    return rows, failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="HEAD", help="git revision of the first run (default HEAD)")
    ap.add_argument("--b", help="git revision (commit or branch) of the second run")
    ap.add_argument("--b-dir", help="directory holding the second run (instead of --b)")
    ap.add_argument("--file", default="metrics/simulate.json")
    args = ap.parse_args(argv)
    if not args.b and not args.b_dir:
        ap.error("give --b REV or --b-dir DIR")
    rows, failures = compare(load(args.a, None, args.file), load(args.b, args.b_dir, args.file))
    print("\n".join(rows))
    if failures:
        print("FAIL: total_diff intervals apart: " + ", ".join(failures))
        return 1
    print("PASS: every decider's total_diff interval overlaps between the two runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
