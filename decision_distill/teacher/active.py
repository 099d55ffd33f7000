"""Active sampling (generate.strategy: active): ask the teacher where cheap students disagree.

Plan of a run with generate.states = N answers:
  1. reserve   the first `reserve` states of the seeded random stream (the same states a
               random run starts with). They are asked and marked `reserved_test`; the split
               stage puts exactly them in test. Active selection biases the training set by
               design, so the evaluation set must be a sample it never touched.
  2. seed      the next `seed_states` random states: the first committee's training data.
  3. rounds    the remaining N - reserve - seed_states answers, shared over `rounds` rounds.
               Each round trains a committee of `committee` MLPs, each on a bootstrap
               resample of the non-reserved answers so far, scores `pool` fresh candidate
               states drawn from the scenario's sampler, and asks the teacher about the
               ones with the highest disagreement.

Disagreement is the generalized Jensen-Shannon divergence of the members' distributions,
H(mean p) - mean H(p) = the mean KL from each member to the consensus. The students are
judged by KL to the teacher, so this is the committee's own estimate of the KL error at
a state; unlike vote entropy it works on soft labels, and unlike log-odds variance it
does not chase states where P(action) is near 0 or 1 and every error is cheap.

Reproducible and resumable by replay: the picks are a deterministic function of the seed,
the params and the answers; answers come from the cache, so a rerun after a kill retrains
the same committees (seeded, one thread) and asks the teacher only what is missing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core.errors import UserError
from ..core.params import Active
from ..data.scenario import Scenario, State, state_key
from ..students.encoding import FeatureEncoder
from ..students.models import MLP

Ask = Callable[[list[State]], list[dict]]  # states -> cache records (ok, probs, ...), through the cache
POOL_SEED_OFFSET = 1_000_003  # candidate pools come from a stream apart from the main one


def disagreement(member_probs: np.ndarray) -> np.ndarray:
    """Generalized JS divergence per state; member_probs is [M, N, K]."""
    p = np.clip(member_probs, 1e-12, 1.0)
    mean = p.mean(axis=0)
    entropy_of_mean = -(mean * np.log(mean)).sum(axis=-1)
    mean_entropy = -(p * np.log(p)).sum(axis=-1).mean(axis=0)
    return np.maximum(entropy_of_mean - mean_entropy, 0.0)


def pick(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first; ties broken by index (reproducible)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


def pick_proportional(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices drawn with probability proportional to the score (Gumbel top-k).
    Test KL is a mean over the state distribution; the pool is drawn from it, so drawing in
    proportion to the estimated KL spends answers where the error mass is, while the top-k
    alone piles them on a few odd corners of the space (measured: worse than random)."""
    keys = np.log(np.maximum(scores, 1e-300)) - np.log(-np.log(rng.uniform(size=len(scores))))
    return pick(keys, k)


def train_committee(encoder: FeatureEncoder, frame: pd.DataFrame, targets: np.ndarray, config: Active,
                    seed: int) -> list[torch.nn.Module]:
    """`config.committee` MLPs, each on its own bootstrap resample (full batch, fixed epochs:
    no validation split to spend answers on)."""
    dense = encoder.dense(frame)
    y = torch.as_tensor(targets, dtype=torch.float32)
    members = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and fair on a shared machine
    try:
        for m in range(config.committee):
            gen = torch.Generator().manual_seed(seed * 1000 + m)
            torch.manual_seed(seed * 1000 + m)
            rows = torch.randint(0, len(frame), (len(frame),), generator=gen)
            model = MLP(encoder.vocab_size, len(encoder.options), config.hidden, 2, 0.0)
            opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
            x, t = dense[rows], y[rows]
            for _ in range(config.epochs):
                loss = -(t * torch.log_softmax(model.forward_dense(x), -1)).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            members.append(model.eval())
    finally:
        torch.set_num_threads(previous)
    return members


@torch.no_grad()
def committee_probs(members: list[torch.nn.Module], encoder: FeatureEncoder, frame: pd.DataFrame) -> np.ndarray:
    dense = encoder.dense(frame)
    return np.stack([torch.softmax(m.forward_dense(dense), -1).double().numpy() for m in members])


def candidate_pool(scenario: Scenario, n: int, seed: int, round_: int, exclude: set[str]) -> list[State]:
    """Up to n distinct fresh states not asked yet (fewer if the scenario runs out)."""
    rng = np.random.default_rng([seed, POOL_SEED_OFFSET, round_])
    seen, out, misses = set(exclude), [], 0
    while len(out) < n and misses < 2000:
        s = scenario.sample_one(rng)
        key = state_key(s)
        if key in seen:
            misses += 1
            continue
        misses = 0
        seen.add(key)
        out.append(s)
    return out


def plan_budget(total: int, config: Active) -> list[int]:
    """Answers per round after the reserve and the seed states."""
    rest = total - config.reserve - config.seed_states
    if rest < 0:
        raise UserError(f"generate.states: {total} is fewer than generate.active.reserve + seed_states "
                        f"({config.reserve + config.seed_states}); raise generate.states or lower those")
    return [rest // config.rounds + (1 if r < rest % config.rounds else 0) for r in range(config.rounds)]


def active_states(scenario: Scenario, total: int, seed: int, config: Active, ask: Ask,
                  log=print) -> tuple[list[State], list[dict], np.ndarray]:
    """(states, answers, reserved mask) for `total` teacher answers chosen as in the module docstring."""
    first = scenario.sample_states(config.reserve + config.seed_states, seed)
    states, answers = list(first), list(ask(first))
    reserved = np.zeros(len(states), dtype=bool)
    reserved[: config.reserve] = True
    encoder = FeatureEncoder(scenario.schema())
    for round_, k in enumerate(plan_budget(total, config)):
        if k == 0:
            continue
        train_idx = [i for i in range(len(states)) if not reserved[i] and answers[i]["ok"]]
        frame = pd.DataFrame([states[i] for i in train_idx])
        targets = np.array([answers[i]["probs"] for i in train_idx], dtype=float)
        members = train_committee(encoder, frame, targets, config, seed * 100 + round_)
        pool = candidate_pool(scenario, config.pool, seed, round_, {state_key(s) for s in states})
        if not pool:
            log(f"active round {round_}: the scenario has no unasked states left")
            break
        scores = disagreement(committee_probs(members, encoder, pd.DataFrame(pool)))
        picked = (pick(scores, k) if config.pick == "top"
                  else pick_proportional(scores, k, np.random.default_rng([seed, round_])))
        chosen = [pool[i] for i in picked]
        states += chosen
        answers += ask(chosen)
        reserved = np.concatenate([reserved, np.zeros(len(chosen), dtype=bool)])
        log(f"active round {round_}: committee of {len(members)} on {len(train_idx)} answers, "
            f"pool {len(pool)}, asked {len(chosen)} (mean disagreement {scores[picked].mean():.4f}, "
            f"pool mean {scores.mean():.4f})")
    return states, answers, reserved


def cached_ask(answer_fn: Callable[[State], list[float]], cache, name: str) -> Ask:
    """An Ask for a teacher given as a function state -> probabilities (a synthetic teacher
    with known effects, for tests and bench/active_vs_random.py), through the answer cache
    like a real one: each state is answered once per `name`, whatever run asks it."""
    from ..lm.answer_cache import answer_key

    def ask(states: list[State]) -> list[dict]:
        keys = [answer_key(model=name, state=state_key(s)) for s in states]
        known = cache.get_many(keys)
        for k, s in zip(keys, states):
            if k not in known:  # committed one by one: a kill loses no answer already given
                known[k] = {"ok": True, "probs": [float(p) for p in answer_fn(s)]}
                cache.put_many({k: known[k]})
        return [known[k] for k in keys]

    return ask
