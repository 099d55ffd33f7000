"""Print the votes table of docs/personas.md from metrics/personas/votes.json.

    python tools/persona_tables.py [--votes metrics/personas/votes.json]

One row per baseline and per arm (each decision rule a row of its own: raw P(Aye) >= 0.5,
`|cc` contextually calibrated, `|contrast` against the arm without the person's words,
`|loqo` the leave-one-question-out fit), pooled over persons, intervals over questions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cell(block: dict, metric: str) -> str:
    value, ci = block.get(metric), block.get(f"{metric}_ci")
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def votes_table(report: dict) -> str:
    pooled = report["pooled"]
    best = pooled["headline_baseline"]
    rows = ["| arm or baseline | accuracy [95 % CI] | balanced accuracy [95 % CI] | AUROC [95 % CI] | predicted Aye "
            f"| option mass | balanced accuracy − {best} [95 % CI] | sign test over questions (better / worse, p) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, b in pooled["baselines"].items():
        label = f"{name} (privileged)" if b["privileged"] else f"{name}{' (headline)' if name == best else ''}"
        rows.append(f"| {label} | {cell(b, 'accuracy')} | {cell(b, 'balanced_accuracy')} | {cell(b, 'auroc')} | "
                    f"{b['predicted_aye_share']:.0%} | | | |")
    for name, m in pooled["models"].items():
        h = m.get("headline") or {}
        diff = (f"{h['balanced_accuracy_diff']:+.3f} [{h['balanced_accuracy_diff_ci'][0]:+.3f}, "
                f"{h['balanced_accuracy_diff_ci'][1]:+.3f}]") if h.get("balanced_accuracy_diff_ci") else ""
        sign = h.get("sign_test") or {}
        test = (f"{sign['questions_arm_better']} / {sign['questions_baseline_better']}, p = {sign['p_value']:.2g}"
                if sign else "")
        mass = f"{m['option_mass_mean']:.2f}" if "option_mass_mean" in m else ""
        rows.append(f"| {name} | {cell(m, 'accuracy')} | {cell(m, 'balanced_accuracy')} | {cell(m, 'auroc')} | "
                    f"{m['predicted_aye_share']:.0%} | {mass} | {diff} | {test} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=Path, default=Path("metrics/personas/votes.json"))
    args = parser.parse_args()
    print(votes_table(json.loads(args.votes.read_text())))


if __name__ == "__main__":
    main()
