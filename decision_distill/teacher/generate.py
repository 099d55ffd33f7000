"""The generate stage: ask the teacher about every sampled state, through the cache.

Resumable by construction: answers are committed to the answer cache chunk by chunk
(decision_distill.teacher.ask), and the dataset is written (atomically) only from the
cache at the end. A killed run loses at most one chunk; the rerun asks only what is
missing, and the dataset can hold no lost or duplicated row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from ..core.atomic import write_json, write_parquet
from ..core.errors import UserError
from ..core.params import Params
from ..data.scenario import Scenario, State, state_key
from ..lm.answer_cache import AnswerCache
from ..lm.runtime import pick_device, resolve_dtype
from .ask import teacher_answers

MIN_USEFUL_P_STD = 0.05


# (n, keys to leave out, answer cache) -> (up to n states, summary): simulation.rollouts.rollout_states,
# handed in by the stage so that this package does not depend on the simulation one
Rollouts = Callable[[int, set, AnswerCache], tuple[list[State], dict]]


def generate(params: Params, scenario: Scenario, teacher_dir: str | Path, out_dataset: str | Path,
             out_schema: str | Path, out_metrics: str | Path, rollouts: Rollouts | None = None) -> dict:
    """With generate.rollouts.share above 0, `rollouts` gives that share of the states; the
    rest are the seeded random sequence's first states (the same whatever the share)."""
    t = params.teacher
    if t.readout == "verbalized" and len(scenario.options) != 2:
        raise UserError("teacher.readout: verbalized needs a two-option scenario; use tokens")
    g = params.generate
    cache = AnswerCache(g.cache)
    reserved = rollout_summary = None
    from_rollouts = 0
    try:
        if g.strategy == "active":  # imported here: the default random run needs none of it
            from .active import active_states
            states, answers, reserved = active_states(
                scenario, g.states, g.seed, g.active,
                lambda some: teacher_answers(teacher_dir, scenario, some, params, cache))
        else:
            wanted = round(g.states * g.rollouts.share)
            if wanted and rollouts is None:
                raise UserError("generate.rollouts.share: no rollouts were handed to generate; run stages/generate.py")
            states = scenario.sample_states(g.states - wanted, g.seed)
            if wanted:
                extra, rollout_summary = rollouts(wanted, {state_key(s) for s in states}, cache)
                states, from_rollouts = states + extra, len(extra)
            answers = teacher_answers(teacher_dir, scenario, states, params, cache)
    finally:
        cache.close()
    questions = [scenario.describe(s) for s in states]
    frame = decisions_frame(scenario, states, questions, answers, t.readout)
    if reserved is not None:  # the split stage puts exactly these random states in test
        frame["reserved_test"] = reserved
    if rollout_summary is not None:  # which states a simulation's rollouts gave (the last ones)
        frame["from_rollout"] = [i >= len(states) - from_rollouts for i in range(len(states))]
    # the runtime the answers were computed in (teacher.dtype and .device as resolved on this machine)
    metrics = teacher_metrics(frame, scenario, t.readout) | {"dtype": resolve_dtype(t.dtype, t.device),
                                                             "device": pick_device(t.device).type}
    if rollout_summary is not None:
        metrics["rollouts"] = rollout_summary
    write_parquet(frame, out_dataset)
    scenario.schema().save(out_schema)
    write_json(metrics, out_metrics)
    if metrics["p_std"] is not None and metrics["p_std"] < MIN_USEFUL_P_STD:
        print(f"warning: the teacher's P(action) barely varies across states (p_std={metrics['p_std']:.3f}); "
              "every student will look perfect. Improve the prompt or use a stronger teacher.", flush=True)
    return metrics


def decisions_frame(scenario: Scenario, states: list[State], questions: list[str], answers: list[dict],
                    readout: str) -> pd.DataFrame:
    """The dataset contract of decision_distill.data.schema, one row per state."""
    rows = []
    for state_id, (state, question, a) in enumerate(zip(states, questions, answers)):
        row = {"state_id": state_id, **state}
        probs = a["probs"] or [None] * len(scenario.options)
        row.update({f"p_{o.id}": p for o, p in zip(scenario.options, probs)})
        row.update(ok=a["ok"], option_mass=a["option_mass"], logodds=a["logodds"], question=question)
        if readout == "verbalized":
            row.update(explanation=a["explanation"], raw=a["raw"], error=a["error"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in [f"p_{o.id}" for o in scenario.options] + ["option_mass", "logodds"]:
        frame[col] = frame[col].astype("float64")
    return frame


def teacher_metrics(frame: pd.DataFrame, scenario: Scenario, readout: str) -> dict:
    ok = frame[frame["ok"]]
    p_action = ok[f"p_{scenario.options[0].id}"]
    return {
        "states": int(len(frame)),
        "readout": readout,
        "p_std": float(p_action.std(ddof=0)) if len(ok) else None,
        "p_mean": float(p_action.mean()) if len(ok) else None,
        "option_mass_mean": float(ok["option_mass"].mean()) if readout == "tokens" and len(ok) else None,
        "parse_failures": int((~frame["ok"]).sum()),
    }
