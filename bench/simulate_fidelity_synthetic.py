"""Per-decision fidelity vs population fidelity, on a known teacher (no LLM needed).

The "teacher" is the known logistic policy behind tests/support/sim_students.py (P(buy) = sigmoid of a
sum of per-value weights). Students are trained (train_student, 30 epochs) on 600 of its
states, scored per decision on the held-out split (evaluate_students: KL), then each decides
8 seeded Christmas-market days of 400 visitors, compared with the same days decided by the
known teacher (decision_distill.simulation.fidelity.compare). One line per student:
per-decision KL beside the market's total-sales difference with its 95% interval, spread
ratio, Wasserstein, JSD and per-trait-group buy-rate differences. docs/simulate.md quotes it.
"""
from pathlib import Path
import tempfile

import numpy as np
from decision_distill.data.scenario_file import load_scenario
from decision_distill.evaluation.evaluate import evaluate_students
from decision_distill.simulation.config import load_simulation
from decision_distill.simulation.fidelity import compare
from decision_distill.simulation.policy import Policy
from decision_distill.simulation.run import run_replicates
from tests.support.sim_students import synthetic_weights, train_students, write_splits


def main() -> None:
    sc = load_scenario("scenarios/ice_cream.yaml"); cfg = load_simulation("simulations/christmas_market.yaml")
    weight = synthetic_weights(sc, seed=0)  # the policy write_splits(seed=0) labels its states with
    class Truth(Policy):
        name = "truth"; schema = sc.schema()
        def probs(self, states):
            f = self.frame(states)
            logit = np.array([sum(weight[("traits", v)] for v in t) + sum(weight[("contexts", v)] for v in c) for t, c in zip(f.traits, f.contexts)])
            p = 1 / (1 + np.exp(-logit)); return np.stack([p, 1 - p], 1)
    root = Path(tempfile.mkdtemp())
    splits = write_splits("scenarios/ice_cream.yaml", root / "splits", n=600)
    students = train_students(splits, root / "students", archs=("logreg", "mlp", "encoder"), epochs=30)
    metrics, _ = evaluate_students(splits, students, ["logreg", "mlp", "encoder"], 10)
    seeds = list(range(8))
    t_rows, _ = run_replicates(cfg, sc, Truth(), 400, seeds)
    for n in ("logreg", "mlp", "encoder"):
        rows, _ = run_replicates(cfg, sc, Policy.load(students / n), 400, seeds)
        b = compare(t_rows, rows, "sales", 1000, 0.95, 0)
        g = {k: round(v["diff"], 3) for k, v in b["groups"].items()}
        print(n, "kl", round(metrics[n]["kl"], 4), "total", round(b["total"], 1), "teacher", round(b["total_teacher"], 1), "diff", round(b["total_diff"], 1), [round(x, 1) for x in b["total_diff_ci"]], "spread", round(b["spread_ratio"], 2), [round(x, 2) for x in b["spread_ratio_ci"]], "W", round(b["wasserstein"], 2), "jsd", round(b["jsd"], 4), "groups", g)


if __name__ == "__main__":
    main()
