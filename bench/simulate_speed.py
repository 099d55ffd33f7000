"""How fast does a student decide inside a simulation, and how many times cheaper is it than
the teacher deciding the same evening?

One Christmas-market evening (simulations/christmas_market.yaml) with --visitors visitors
(10,000) is run with the MLP student deciding: every decision of the evening, through the
Mesa model's ticks, one batched Policy.prob call per tick. The rate counts the whole run
(visitors' situations, the model's step, encoding, network, sampling): decisions / seconds,
best of --repeats runs (on a shared machine the least disturbed run is the most repeatable).

The teacher is timed on the same evening's states: the first --teacher-states distinct states
the evening's visitors were in, answered by the teacher (the pipeline's scorer, through
TeacherPolicy) with an empty answer cache, after a warm-up that loads the model. That is what
each decision costs a simulation that asks the LLM directly; the answer cache lowers the
teacher's cost to one call per distinct state, which `distinct_states` shows.

Without --student an MLP is trained first (train_student, default hyper-parameters, a few
epochs) on synthetic decisions over the ice-cream scenario's states (tests/support/sim_students.py):
the network has the pipeline MLP's shape, so it costs what the pipeline's costs. Without
--teacher the packaged Gemma-3-270M is converted into a temporary directory.

Last line: sim_decisions_per_s=<n> teacher_decisions_per_s=<m> ratio=<n/m>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from decision_distill.core.params import load_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.simulation.config import load_simulation
from decision_distill.simulation.market import MarketModel
from decision_distill.simulation.policy import Policy
from decision_distill.simulation.prompt_policy import TeacherPolicy


def evening(config, scenario, decider, visitors: int, seed: int):
    """(decisions, seconds, the model) of one evening."""
    model = MarketModel(config, scenario, decider, population=visitors, rng=seed, log_decisions=True)
    start = time.perf_counter()
    model.run_model()
    seconds = time.perf_counter() - start
    decisions = int(model.datacollector.get_model_vars_dataframe()["decisions"].sum())
    return decisions, seconds, model


def distinct_states(model: MarketModel) -> list[dict]:
    log = model.decision_log()
    first = log.drop_duplicates(["traits", "contexts"])
    return [{"traits": model.trait_sets[t], "contexts": model.context_table[c]}
            for t, c in zip(first["traits"], first["contexts"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, help="a trained MLP directory (default: train one)")
    parser.add_argument("--teacher", type=Path, help="teacher directory (default: the packaged Gemma-3-270M)")
    parser.add_argument("--visitors", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--teacher-states", type=int, default=48)
    parser.add_argument("--simulation", default="simulations/christmas_market.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(ROOT / args.params)
    scenario = load_scenario(ROOT / params.scenario)
    config = load_simulation(ROOT / args.simulation)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        student = args.student
        if student is None:
            from tests.support.sim_students import train_students, write_splits
            splits = write_splits(str(ROOT / params.scenario), tmp / "splits", n=2000)
            student = train_students(splits, tmp / "students", archs=("mlp",), epochs=5) / "mlp"
        mlp = Policy.load(student)
        runs = [evening(config, scenario, mlp, args.visitors, seed=0) for _ in range(args.repeats)]
        decisions, seconds, model = min(runs, key=lambda r: r[1])
        sim_rate = decisions / seconds
        states = distinct_states(model)
        print(f"mlp evening: {args.visitors} visitors, {config.clock.ticks} ticks, {decisions} decisions in "
              f"{seconds:.3f} s (best of {args.repeats}); {len(states)} distinct states", flush=True)

        teacher_dir = args.teacher
        if teacher_dir is None:
            from decision_distill.lm.source import download
            teacher_dir = tmp / "teacher"
            download("packaged", "main", teacher_dir)
        cache = AnswerCache(tmp / "cache.sqlite")
        teacher = TeacherPolicy(teacher_dir, scenario, params, cache)
        timed = states[2 : 2 + args.teacher_states]
        teacher.prob(states[:2])  # warm-up: loads the model, builds the shared prefix
        start = time.perf_counter()
        teacher.prob(timed)
        teacher_rate = len(timed) / (time.perf_counter() - start)
        cache.close()
        print(f"teacher: {len(timed)} of the evening's distinct states, empty cache: {teacher_rate:.2f} decisions/s; "
              f"with the answer cache the evening needs {len(states)} teacher calls for {decisions} decisions",
              flush=True)
    print(f"sim_decisions_per_s={sim_rate:.0f} teacher_decisions_per_s={teacher_rate:.2f} "
          f"ratio={sim_rate / teacher_rate:.0f}")


if __name__ == "__main__":
    main()
