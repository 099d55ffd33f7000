"""Print the default run's tables of docs/results.md from the metrics files of a run.

    python tools/results_tables.py [--metrics metrics]

`dvc metrics show --md` prints the same numbers one file per row with every key flattened
into a column; this prints them as docs/results.md lays them out (a student per row, the
noise-floor ratio with its interval), so the committed page can be checked against, and
rebuilt from, a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ["mse", "mae", "pearson", "spearman", "kl", "ce", "brier", "ece", "agreement"]


def students_table(students: dict) -> str:
    head = "| student | " + " | ".join(COLUMNS) + " | kl / noise floor [95 % CI] |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, m in students.items():
        ratio = m.get("kl_vs_noise_floor")
        ci = m.get("kl_vs_noise_floor_ci")
        floor = "n/a" if ratio is None else f"{ratio:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        cells = [f"{m[c]:.4f}" if isinstance(m.get(c), (int, float)) else "n/a" for c in COLUMNS]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {floor} |")
    return "\n".join(rows)


def teacher_line(teacher: dict) -> str:
    return (f"{teacher['states']:,} states, P(action) mean {teacher['p_mean']:.3f}, sd {teacher['p_std']:.4f}, "
            f"option mass {teacher['option_mass_mean']:.3f}, parse failures {teacher['parse_failures']}, "
            f"dtype {teacher.get('dtype')}, device {teacher.get('device')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="metrics folder (default: %(default)s)")
    args = parser.parse_args()
    teacher = json.loads((args.metrics / "teacher.json").read_text())
    students = json.loads((args.metrics / "students.json").read_text())
    print("Teacher:", teacher_line(teacher))
    print()
    print(students_table(students))


if __name__ == "__main__":
    main()
