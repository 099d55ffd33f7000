"""Where the default run's time goes: `dvc repro` one stage at a time, timed.

Run it in a project directory (e.g. a fresh clone, after `pip install -e .`):

    python -m bench.repro_profile /path/to/clone [--force] [--target dvc.yaml]

The pipeline order is DVC's own (`dvc repro --dry --force` lists every stage in the order
it would run them); each stage is then run with `dvc repro --single-item <stage>` and its
wall time taken. Prints a table (seconds, share of the total, cumulative) and the total.
Stages that DVC finds up to date take only its check time; --force reruns every stage
(a "cold" profile apart from the user caches: answer cache, converted models).
Stops at the first failing stage and prints the table so far.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

DVC = [sys.executable, "-m", "dvc"]  # the dvc of the interpreter running this script
RUNNING = re.compile(r"Running stage '([^']+)'")


def pipeline_order(project: Path, target: str | None) -> list[str]:
    """Every stage of the pipeline in the order `dvc repro` runs them."""
    cmd = [*DVC, "repro", "--dry", "--force", *([target] if target else [])]
    out = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=True).stdout
    stages = list(dict.fromkeys(RUNNING.findall(out)))
    if not stages:
        sys.exit(f"`{' '.join(cmd)}` in {project} listed no stages:\n{out[-2000:]}")
    return stages


def table(times: list[tuple[str, float, str]]) -> str:
    total = sum(t for _, t, _ in times) or 1.0
    width = max(len(name) for name, _, _ in times)
    lines, running = [f"{'stage':<{width}}  {'seconds':>8}  {'share':>6}  {'cumulative':>10}  result"], 0.0
    for name, seconds, result in times:
        running += seconds
        lines.append(f"{name:<{width}}  {seconds:8.1f}  {seconds / total:6.1%}  {running:10.1f}  {result}")
    lines.append(f"{'total':<{width}}  {running:8.1f}  ({running / 60:.1f} min)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path, help="the project directory to run in (e.g. a fresh clone)")
    parser.add_argument("--target", default=None, help="a dvc.yaml or stage to profile (default: the project's)")
    parser.add_argument("--force", action="store_true", help="rerun stages DVC finds up to date")
    args = parser.parse_args()

    stages = pipeline_order(args.project, args.target)
    print(f"{len(stages)} stages: {' '.join(stages)}", flush=True)
    times: list[tuple[str, float, str]] = []
    for stage in stages:
        cmd = [*DVC, "repro", "--single-item", *(["--force"] if args.force else []), stage]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=args.project, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        result = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
        times.append((stage, seconds, result))
        print(f"{stage}: {seconds:.1f} s {result}", flush=True)
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
            break
    print(table(times))


if __name__ == "__main__":
    main()
