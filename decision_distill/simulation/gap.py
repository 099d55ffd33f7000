"""Where a decider's market departs from the teacher's, read off the teacher run's own decision
log: no new teacher call (each logged decision holds the teacher's P(buy) in its `p` column).

Per-decision KL averages over the test split's states and grows with the square of an error;
a simulation's total adds the errors with their sign, over the states its visitors are in.
Per decider, over every decision the teacher-driven days logged (so each state weighs as
often as the simulation visits it):

  kl                   mean KL(teacher || decider) of the Bernoulli P(buy), in nats (clipped
                       as stats.metrics.kl_per_state clips, so it reads beside kl_per_decision)
  signed_error         mean of p_decider - p_teacher
  by_persona           signed_error and decisions per persona (its trait set, "a+b")
  by_context           signed_error and decisions per context value (decisions whose state holds it)
  direct               per day, sum over the teacher day's decisions of p_decider - p_teacher:
                       the expected extra sales had the decider decided for the same visitors
                       in the same situations, mean over days (the series' units, per day)
  feedback             total_diff - direct: the part of the decider's total_diff that comes
                       from its own decisions changing who is still there to decide (under
                       until_bought a visitor who bought decides no more)

Overall, `state_shift`: where the simulated decisions lie against the generate stage's
states (data/decisions.parquet, readable answers: the states students learn from):
`values` (per trait and per context, its share among simulated decisions and among
generated states), `sizes` (the same for the number of traits, and of contexts, in a state),
`numbers` (a market with number features: each one's percentiles, simulated and generated)
and `never_generated` (share of simulated decisions on a state, as sets of traits and
contexts and number values, that no generated state equals; with the distinct states behind it).

Each decider is asked once per distinct logged state (persona, context code, weather, numbers):
in the discrete market a few hundred, not once per decision: the cost is one batched call per decider plus numpy over the log.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats.metrics import kl_per_state
from .market import context_table

SET_FEATURES = ("traits", "contexts")  # the market's state: a persona's traits, the moment's contexts


class LogStates:
    """The teacher run's decisions pooled over days, and its distinct states.

    rows: one per decision (seed index `day`, teacher's `p`); states: one per distinct
    (traits, contexts, weather) code and number values, with its trait and context ids; `inverse` maps each
    decision to its state, `visits` counts decisions per state."""

    def __init__(self, teacher_logs: dict[int, pd.DataFrame], scenario, trait_sets: list[list[str]]):
        self.seeds = sorted(teacher_logs)
        frames = [teacher_logs[s].assign(day=i) for i, s in enumerate(self.seeds)]
        log = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {c: [] for c in ("traits", "contexts", "weather", "p", "day")})
        self.n = len(log)
        self.day = log["day"].to_numpy(int)
        self.p = log["p"].to_numpy(float)
        traits, contexts = log["traits"].to_numpy(np.int64), log["contexts"].to_numpy(np.int64)
        weather_code, weathers = pd.factorize(log["weather"])
        n_contexts = int(contexts.max()) + 1 if self.n else 1
        key = (traits * n_contexts + contexts) * max(len(weathers), 1) + weather_code
        # A state is also its number features' values (a market with `numbers`): number the distinct rows
        self.numbers = [f.name for f in scenario.features if f.kind == "number" and f.name in log]
        if self.numbers and self.n:
            key = log.assign(_key=key).groupby(["_key", *self.numbers], sort=True).ngroup().to_numpy()
        unique, first, self.inverse, self.visits = np.unique(key, return_index=True, return_inverse=True,
                                                             return_counts=True)
        self.states = pd.DataFrame({"traits": traits[first], "contexts": contexts[first],
                                    "weather": np.asarray(weathers, dtype=object)[weather_code[first]],
                                    **{n: log[n].to_numpy()[first] for n in self.numbers}})
        tables = {w: context_table(scenario, w) for w in weathers}
        self.trait_ids = [trait_sets[t] for t in self.states["traits"]]
        self.context_ids = [tables[w][c] for w, c in zip(self.states["weather"], self.states["contexts"])]
        self.persona = ["+".join(t) for t in self.trait_ids]

    def per_state(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-decision array over each distinct state's decisions."""
        return np.bincount(self.inverse, weights=values, minlength=len(self.states))

    def membership(self, feature: str, values: list[str]) -> np.ndarray:
        """[states, values]: whether each distinct state holds each value of a set feature."""
        ids = self.trait_ids if feature == "traits" else self.context_ids
        index = {v: j for j, v in enumerate(values)}
        held = np.zeros((len(self.states), len(values)), dtype=bool)
        for i, row in enumerate(ids):
            held[i, [index[v] for v in row]] = True
        return held


def _bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return kl_per_state(np.stack([p, 1 - p], axis=1), np.stack([q, 1 - q], axis=1))


def _grouped(labels: list[str], errors: np.ndarray, visits: np.ndarray) -> dict:
    """label -> {signed_error, decisions} from per-state error sums and visit counts."""
    codes, names = pd.factorize(pd.Series(labels, dtype=object))
    sums = np.bincount(codes, weights=errors, minlength=len(names))
    counts = np.bincount(codes, weights=visits, minlength=len(names))
    return {str(n): {"signed_error": float(s / c), "decisions": int(c)}
            for n, s, c in zip(names, sums, counts) if c > 0}


def decider_gap(states: LogStates, q_states: np.ndarray, total_diff: float | None,
                context_values: list[str]) -> dict:
    """The per-decider block (see the module docstring) from the decider's P(buy) per distinct state."""
    q = np.asarray(q_states, dtype=float)[states.inverse]
    error = q - states.p
    error_sums = states.per_state(error)
    held = states.membership("contexts", context_values)
    context_sums, context_counts = held.T.astype(float) @ error_sums, held.T.astype(float) @ states.visits
    direct = float(np.bincount(states.day, weights=error, minlength=len(states.seeds)).mean())
    return {
        "kl": float(_bernoulli_kl(states.p, q).mean()),
        "signed_error": float(error.mean()),
        "by_persona": _grouped(states.persona, error_sums, states.visits),
        "by_context": {v: {"signed_error": float(s / c), "decisions": int(c)}
                       for v, s, c in zip(context_values, context_sums, context_counts) if c > 0},
        "total_diff": total_diff,
        "direct": direct,
        "feedback": None if total_diff is None else float(total_diff - direct),
    }


def _state_key(traits, contexts, numbers=()) -> tuple:
    return (tuple(sorted(str(v) for v in traits)), tuple(sorted(str(v) for v in contexts)),
            tuple(round(float(v), 6) for v in numbers))


def state_shift(states: LogStates, generated: pd.DataFrame, feature_values: dict[str, list[str]]) -> dict:
    """Simulated decisions against the generate stage's states: value and size shares, each
    number feature's 5th, 50th and 95th percentiles, and the share of decisions on a state never
    generated (exact match of both sets, order ignored, and of every number)."""
    n, g = states.n, len(generated)
    values, sizes = {}, {}
    for feature, names in feature_values.items():
        sim_share = states.membership(feature, names).T.astype(float) @ states.visits / n
        gen_counts = generated[feature].explode().value_counts()
        values[feature] = {v: {"simulated": float(s), "generated": float(gen_counts.get(v, 0) / g)}
                           for v, s in zip(names, sim_share)}
        ids = states.trait_ids if feature == "traits" else states.context_ids
        sim_sizes = np.bincount([len(i) for i in ids], weights=states.visits)
        gen_sizes = generated[feature].map(len).value_counts()
        every = sorted(set(np.flatnonzero(sim_sizes)) | set(gen_sizes.index))
        sizes[feature] = {str(k): {"simulated": float(sim_sizes[k] / n) if k < len(sim_sizes) else 0.0,
                                   "generated": float(gen_sizes.get(k, 0) / g)} for k in every}
    percentiles = [5, 50, 95]
    numbers = {name: {"simulated": np.percentile(np.repeat(states.states[name].to_numpy(float), states.visits),
                                                 percentiles).tolist(),
                      "generated": np.percentile(generated[name].to_numpy(float), percentiles).tolist()}
               for name in states.numbers}
    generated_numbers = zip(*(generated[name] for name in states.numbers)) if states.numbers else [()] * g
    known = {_state_key(t, c, v) for t, c, v in zip(generated["traits"], generated["contexts"], generated_numbers)}
    simulated_numbers = zip(*(states.states[name] for name in states.numbers)) if states.numbers else [()] * len(
        states.states)
    new = np.array([_state_key(t, c, v) not in known
                    for t, c, v in zip(states.trait_ids, states.context_ids, simulated_numbers)])
    return {"values": values, "sizes": sizes, **({"numbers": numbers} if numbers else {}),
            "never_generated": float(states.visits[new].sum() / n),
            "never_generated_states": int(new.sum()), "distinct_states": len(states.states),
            "generated_states": g}


def gap_report(teacher_logs: dict[int, pd.DataFrame], decider_probs: dict, total_diffs: dict[str, float | None],
               generated: pd.DataFrame | None, scenario, trait_sets: list[list[str]]) -> dict:
    """Per decider and overall (module docstring), from the teacher-driven days' decision logs
    (seed -> MarketModel.decision_log()). decider_probs: name -> prob(log rows) -> P(buy) per row
    (it reads the rows' traits, contexts and weather codes); total_diffs: name -> its total_diff
    (fidelity.compare); generated: the generate stage's states (None: no state_shift)."""
    states = LogStates(teacher_logs, scenario, trait_sets)
    report = {"decisions": states.n, "days": len(states.seeds), "distinct_states": len(states.states)}
    if not states.n:
        return report
    feature_values = {f.name: list(f.texts) for f in scenario.features if f.name in SET_FEATURES}
    report["deciders"] = {
        name: decider_gap(states, prob(states.states), total_diffs.get(name), feature_values["contexts"])
        for name, prob in decider_probs.items()}
    if generated is not None and len(generated):
        report["state_shift"] = state_shift(states, generated, feature_values)
    return report
