"""Check a run's metrics against the committed baseline, number by number.

    python -m bench.reproduce [--baseline REV] [--run DIR] [--failures]

Reads every metrics file that dvc.yaml declares (the stages' `metrics:`, foreach expanded),
the baseline's with `git show REV:path` (REV defaults to HEAD) and the run's from DIR (the
working tree by default), flattens them to keys such as `metrics/students.json:mlp.kl`
(list items get their index: `..._ci.0`) and prints for each leaf: status, baseline, run,
difference, tolerance, class and key. Exit 1 when any fails. The first rule whose regex
matches the key (list index left out) gives the class. A number passes when
|run - baseline| <= abs + rel * |ref - ideal|, ref being the baseline value itself or a
named sibling (ideal 0 unless stated).

On the machine type that made the baseline, with the same torch and float32 answers, the
run is deterministic (fixed seeds and threads): every compared number should be exactly
equal, and the summary counts how many are. The tolerances are for another CPU
(AVX2 vs AVX-512), whose float32 kernels differ from the baseline's in the last bits. They
are estimates sized for the default run, not measured across CPUs:

  exact         0. Counts, sizes and values set by params: the same on any CPU. Keys
                no rule names are held exact too, until someone reasons a tolerance.
  teacher       abs 1e-5 + rel 1e-4. Statistics of the teacher's float32 answers (and of
                the untrained SLM's): another CPU moves an answer by ~1e-6 (the order
                stability's numerics check measures between batch sizes). Sampled
                answers (stability sampling.*) too: should a draw land within ~1e-6 of a
                token boundary, one answer is rewritten whole and sampling.* fail.
  teacher-sim   rel 1%. Teacher-driven simulation: the seeded draws are the same, so a
                decision changes only where a draw lands within ~1e-6 of a probability.
  student       rel 10%. Trained students (and what is computed from them): trained on
                answers ~1e-6 apart with the same seeds, the trajectories can part and
                early stopping can pick another epoch; student metrics are expected to
                move a few percent. 10% keeps a margin and still catches a real change
                (bfloat16 answers moved kl / noise floor by 56-92%).
  student-ce    rel 10% of the sibling kl (brier: mse). ce = teacher entropy + kl and
                brier = teacher variance + mse: only the student's part can move.
  student-1     rel 10% of (1 - value): pearson, spearman, agreement, gap closed; the
                student's distance from perfect moves like its error.
  sim           rel 3% of the teacher-driven counterpart (total_teacher,
                buy_rate_teacher, the teacher's Monte Carlo value): a retrained student
                moves many probabilities by ~1e-3, and the seeded draws between old and
                new move a day's sales. 3% (~33 sales a day) covers the largest move of a
                decider's bias between past baselines (tuned SLM -8 -> +21, 2.6%), made
                by answer changes 10^4 times larger. Differences to the teacher use it too.
  sim-distance  rel 50%. wasserstein and jsd between a student's and the teacher's days:
                small numbers that move with total_diff, whose tolerance (~33) is 60% of
                logreg's +54 and more than the other deciders' whole difference.
  verdict       reported, not failed: yes/no answers and counts read off numbers near a
                threshold (values whose effect differs, CI covers 0, the effects verdict,
                its joint test's p-value and rejection, FQE days out of range, rank
                agreement, the early-stopping epoch); the numbers behind them are checked.
  timing        not compared: measured by a clock.
  cache         not compared: teacher_calls counts answers missing from the answer cache
                (0 when warm, ~370 from a cold one), not a property of the run's results.
  version       reported: versions and timestamps.
  runtime       must be equal: dtype and device (metrics/teacher.json), and all of
                data/runtime.json (the runtime stage's record: each model's resolved dtype
                and device, the torch/transformers/tokenizers and scorer versions). A run
                in another runtime (bfloat16 vs float32, another torch) is not expected to
                match, and fails with that said.

Strings and nulls must be equal in every compared class; a key (or file) on one side only
fails: metrics were added or removed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

# (regex over "file:key" with list indices removed, class, rel, abs, ref (re.sub template), ideal)
SIM = r"^(metrics/simulate\.json:"
RULES = [
    (r"^data/runtime\.json:", "runtime"),
    (r"(seconds|per_second|per_s|throughput|elapsed|duration|_time)$", "timing"),
    (r"teacher_calls$", "cache"),
    (r"(version|versions\.[^.]+|timestamp|date)$", "version"),
    (r"[.:](dtype|device)$", "runtime"),
    (r"(values_differing|diff_ci_covers_0|fqe_days_out_of_range|rank_agreement_spearman|best_epoch"
     r"|epochs_run)$|^dvclive/[^/]+/metrics\.json:step$"
     r"|^metrics/effects\.json:.*\.(verdict|joint_test\.(p_value|rejects))$", "verdict"),
    (r"[.:](states|readings|missing_readings|parse_failures|parse_failure_rate|icc_states"
     r"|population|replicates|decisions|fallback_decisions|values|parameters|steps|total_steps"
     r"|train_rows|val_rows|tokens|explanations|gap_min|tolerance|temperature|df_num|df_denom)$", "exact"),
    (SIM + r".*)(\.teacher\.|_teacher$)", "teacher-sim", 0.01),
    (r"^metrics/(teacher|stability)\.json:|^metrics/perplexity\.json:base\."
     r"|^metrics/students\.json:slm_base\.|^dvclive/lora/metrics\.json:base_val_", "teacher", 1e-4, 1e-5),
    (r"^(metrics/students\.json:.+)\.ce$", "student-ce", 0.1, 0.0, r"\1.kl"),
    (r"^(metrics/students\.json:.+)\.brier$", "student-ce", 0.1, 0.0, r"\1.mse"),
    (r"^metrics/perplexity\.json:tuned\.answer_ce$", "student-ce", 0.1, 0.0,
     "metrics/students.json:slm_tuned.kl"),
    (r"^(dvclive/[^/]+/metrics\.json:)(train\.loss|val\.loss|best_val_loss|final_train_loss|val_loss)$",
     "student-ce", 0.1, 0.0, r"\1val.kl"),
    (r"^metrics/students\.json:.*\.(pearson|spearman|agreement|p_action|divergence)$",
     "student-1", 0.1, 0.0, None, 1.0),
    (SIM + r".*\.deciders\.[^.]+\.)(total|total_diff)(_ci)?$", "sim", 0.03, 0.0, r"\1total_teacher"),
    (SIM + r".*\.groups\.[^.]+\.)(buy_rate|diff)(_ci)?$", "sim", 0.03, 0.0, r"\1buy_rate_teacher"),
    (SIM + r"[^.]+\.fqe\.).*relative_bias$", "sim", 0.0, 0.03),
    (SIM + r"[^.]+\.fqe\.).*is_max_weight$", "student", 0.1),
    (SIM + r"[^.]+\.fqe\.).*(fqe|monte_carlo|abs_error|is|dr|bias)(_ci)?$", "sim", 0.03, 0.0,
     r"\1deciders.teacher.monte_carlo"),
    (SIM + r").*(wasserstein|jsd)(_ci)?$", "sim-distance", 0.5),
    (r"^metrics/(students|effects|perplexity|simulate)\.json:|^dvclive/", "student", 0.1),
]
NOT_COMPARED = {"timing": "timing, not compared", "cache": "answer cache, not compared"}
REPORTED = {"verdict", "version"}
COUNTED = {"EQUAL": "equal", "WITHIN": "within", "SKIP": "not compared", "NOTE": "reported"}
DEFAULT = (None, "exact", 0.0, 0.0, None, 0.0)  # pattern, class, rel, abs, ref, ideal; no rule: exact


RUNTIME = "data/runtime.json"  # the runtime stage's record: dtype and device per model, library versions


def rule_for(name: str) -> tuple:
    for rule in RULES:
        if re.search(rule[0], name):
            return rule + DEFAULT[len(rule):]
    return DEFAULT


def metric_paths(dvc_yaml: str | None) -> set[str]:
    """Every metrics file a dvc.yaml declares, `foreach` expanded (${key}, ${item}, ${item.x})."""
    doc = yaml.safe_load(dvc_yaml or "") or {}
    paths = {m if isinstance(m, str) else next(iter(m)) for m in doc.get("metrics") or []}
    for stage in (doc.get("stages") or {}).values():
        body, each = stage.get("do", stage), stage.get("foreach")
        pairs = each.items() if isinstance(each, dict) else [(v, v) for v in each] if each else [(None, None)]
        for key, item in pairs:
            def sub(m):
                value = item
                for part in m.group(1).split(".")[1:]:
                    value = value[part]
                return str(key if m.group(1) == "key" else value)
            for m in body.get("metrics") or []:
                path = m if isinstance(m, str) else next(iter(m))
                paths.add(re.sub(r"\$\{\s*((?:key|item)(?:\.\w+)*)\s*\}", sub, path))
    return paths


def flatten(obj, key: str, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{key}{'' if key.endswith(':') else '.'}{k}", out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            flatten(v, f"{key}.{i}", out)
    else:
        out[key] = obj
    return out


def parse(path: str, text: str):
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def show(v) -> str:
    return f"{v:.6g}" if is_number(v) else repr(v)[:14]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="HEAD", help="git revision holding the baseline metrics (default HEAD)")
    ap.add_argument("--run", help="directory holding the run's metrics (default: the working tree's root)")
    ap.add_argument("--failures", action="store_true", help="print only failures and reported changes")
    args = ap.parse_args(argv)
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
    if not root:
        sys.exit("reproduce: not inside a git repository")

    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=root)

    run_dir = Path(args.run or root)
    rev = git("rev-parse", "--short", args.baseline).stdout.strip()
    if not rev:
        sys.exit(f"reproduce: no revision {args.baseline}")
    run_yaml = run_dir / "dvc.yaml"
    paths = sorted(metric_paths(git("show", f"{rev}:dvc.yaml").stdout)
                   | metric_paths(run_yaml.read_text() if run_yaml.exists() else None) | {RUNTIME})
    base, run, failures = {}, {}, []
    for path in paths:
        shown, here = git("show", f"{rev}:{path}"), run_dir / path
        if shown.returncode == 0:
            flatten(parse(path, shown.stdout), path + ":", base)
        if here.exists():
            flatten(parse(path, here.read_text()), path + ":", run)
        if shown.returncode or not here.exists():
            failures.append(f"{path}: metrics file only in the {'run' if shown.returncode else 'baseline'}")
    print(f"baseline {args.baseline} ({rev}) vs run {run_dir}: {len(paths)} metrics files from dvc.yaml")
    print(f"{'status':6} {'baseline':>12} {'run':>12} {'difference':>10} {'tolerance':>9}  {'class':12} key")
    counts = dict.fromkeys(["equal", "within", "not compared", "reported", "failed"], 0)
    runtime = []
    for key in sorted(base.keys() | run.keys()):
        name = re.sub(r"(\.\d+)+$", "", key)
        pattern, cls, rel, tol_abs, ref, ideal = rule_for(name)
        b, r = base.get(key, "<absent>"), run.get(key, "<absent>")
        diff = tol = ""
        if cls in NOT_COMPARED:
            status, note = "SKIP", NOT_COMPARED[cls]
        elif key not in base or key not in run:
            status = "NOTE" if cls in REPORTED else "FAIL"
            note = f"only in the {'run: metric added' if key not in base else 'baseline: metric removed'}"
        elif is_number(b) and is_number(r):
            reference = base.get(re.sub(pattern, ref, name)) if ref else b
            limit = tol_abs + rel * abs(reference - ideal) if is_number(reference) else tol_abs
            diff, tol, note = f"{r - b:+.2e}", f"{limit:.2g}", ""
            same = r == b or (r != r and b != b)  # NaN on both sides is the same NaN
            ok = same or abs(r - b) <= limit * (1 + 1e-9)
            status = "EQUAL" if same else ("WITHIN" if ok else ("NOTE" if cls in REPORTED else "FAIL"))
        else:
            status, note = ("EQUAL", "") if b == r else ("NOTE" if cls in REPORTED else "FAIL", "differs")
        if cls == "runtime" and status == "FAIL":
            runtime.append(f"{key}: {r!r} in the run, {b!r} in the baseline")
            note = "different runtime"
        counts[COUNTED.get(status, "failed")] += 1
        if status == "FAIL":
            message = f"{key}: {note or f'differs by {diff}, tolerance {tol}'}"
            failures.insert(0 if cls == "runtime" else len(failures), message)
        if not args.failures or status in ("FAIL", "NOTE"):
            print(f"{status:6} {show(b):>12} {show(r):>12} {diff:>10} {tol:>9}  {cls:12} {key}  {note}".rstrip())
    legend = __doc__[__doc__.index("  exact "):__doc__.index("Strings and nulls")]
    print("\nclasses (tolerance, reason):\n" + legend.rstrip())
    for line in runtime:
        print(f"\nDIFFERENT RUNTIME: {line}. The run was made in a different runtime; "
              "its numbers are not expected to match the baseline's.")
    compared = counts["equal"] + counts["within"] + counts["failed"]
    print(f"\n{sum(counts.values())} values: {counts['equal']} of {compared} compared exactly equal, "
          f"{counts['within']} within tolerance, {counts['not compared']} not compared, "
          f"{counts['reported']} reported, {len(failures)} failed")
    if failures:
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        print("FAIL: " + "; ".join(failures[:5]) + more)
        return 1
    print(f"PASS: the run reproduces the baseline {rev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
