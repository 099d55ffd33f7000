"""bench/rerun_overlap.py on two simulate.json files written here: intervals that overlap pass,
a decider whose total_diff intervals are apart fails and is named."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "rerun_overlap.py"


def run_file(tmp_path: Path, name: str, mlp_diff_ci: list, group_ci: list) -> Path:
    block = {"total": 300.0, "total_ci": [290.0, 310.0], "total_diff": sum(mlp_diff_ci) / 2,
             "total_diff_ci": mlp_diff_ci,
             "groups": {"cheap": {"diff": sum(group_ci) / 2, "diff_ci": group_ci}}}
    doc = {"market": {"teacher": {"total": 295.0, "total_ci": [288.0, 302.0]},
                      "deciders": {"mlp": block, "logreg": dict(block, total_diff_ci=[5.0, 9.0])}},
           "evening": {"skipped": "written for another scenario"}, "seconds": 12.5}  # as the stage writes them
    directory = tmp_path / name
    (directory / "metrics").mkdir(parents=True)
    (directory / "metrics" / "simulate.json").write_text(json.dumps(doc))
    return directory


def committed(a: Path) -> Path:
    """--a reads a git revision: the first run is committed in a throwaway repository."""
    subprocess.run(["git", "init", "-q"], cwd=a, check=True)
    subprocess.run(["git", "add", "."], cwd=a, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"], cwd=a, check=True)
    return a


def overlap(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--a", "HEAD", "--b-dir", str(b)], cwd=a,
                          capture_output=True, text=True)


def test_overlapping_intervals_pass_and_apart_ones_fail_by_name(tmp_path):
    a = committed(run_file(tmp_path, "a", [-2.0, 6.0], [-0.01, 0.01]))
    close = run_file(tmp_path, "close", [5.0, 12.0], [0.005, 0.02])
    done = overlap(a, close)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout

    apart = run_file(tmp_path, "apart", [7.0, 12.0], [0.02, 0.03])
    done = overlap(a, apart)
    assert done.returncode == 1
    assert "market.mlp.total_diff" in done.stdout.splitlines()[-1]
    assert "APART    market.mlp.groups.cheap.diff" in done.stdout  # reported, not failed
    assert "market.logreg.total_diff" not in done.stdout.splitlines()[-1]
