"""Deciders that read each state as a prompt: the teacher (TeacherPolicy) and the tuned
small LM (SLMPolicy), answered through the answer cache, so a simulation swaps a student for
the model it was distilled from by one argument. The Policy interface is policy.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import UserError
from .policy import Policy, States


class PromptPolicy(Policy):
    """A language model that reads each state as a prompt, answered through the answer cache.
    Distinct states are asked once per process (`asked` counts them); repeated states, the
    common case in a simulation, are served from memory."""

    def __init__(self, model_dir: str | Path, scenario, params, cache, name: str):
        self.model_dir, self.scenario, self.params, self.cache = Path(model_dir), scenario, params, cache
        self.schema, self.name = scenario.schema(), name
        self._memo: dict[str, np.ndarray] = {}
        self._loaded: dict = {}  # load arguments -> the model (see _load_once)
        self.asked = 0  # distinct states this policy looked up (in the cache or from the model)
        self.computed = 0  # of those, states the model had to answer (not in the cache before)

    def _load_once(self, *args):
        """load_causal_lm that keeps the model: a simulation asks once per tick, and reloading
        the model on every cache miss would cost more than the answers."""
        if args not in self._loaded:
            from ..lm.load import load_causal_lm

            self._loaded[args] = load_causal_lm(*args)
        return self._loaded[args]

    def probs(self, states: States) -> np.ndarray:
        from ..data.scenario import state_key
        from ..data.states import states_from_frame

        frame = self.frame(states)
        rows = states_from_frame(frame, self.scenario)
        keys = [state_key(s) for s in rows]
        new = {k: s for k, s in zip(keys, rows) if k not in self._memo}
        if new:
            before = len(self.cache)
            answers = self._answer(list(new.values()))
            self.asked += len(new)
            self.computed += len(self.cache) - before
            for key, p in zip(new, answers):
                self._memo[key] = p
        return np.array([self._memo[k] for k in keys], dtype=np.float64).reshape(len(keys), -1)


class TeacherPolicy(PromptPolicy):
    def __init__(self, teacher_dir, scenario, params, cache, name: str = "teacher"):
        super().__init__(teacher_dir, scenario, params, cache, name)

    def _answer(self, states: list[dict]) -> list[np.ndarray]:
        from ..teacher.ask import teacher_answers

        answers = teacher_answers(self.model_dir, self.scenario, states, self.params, self.cache,
                                  desc=self.name, load=self._load_once, report=False)
        bad = [s for s, a in zip(states, answers) if not a["ok"]]
        if bad:
            raise UserError(f"teacher: no readable answer for state {bad[0]}; use teacher.readout: tokens")
        return [np.asarray(a["probs"], dtype=np.float64) for a in answers]


class SLMPolicy(PromptPolicy):
    def __init__(self, model_dir, scenario, params, cache, name: str = "slm_tuned"):
        super().__init__(model_dir, scenario, params, cache, name)

    def _answer(self, states: list[dict]) -> list[np.ndarray]:
        from ..slm.answers import slm_answers

        return list(slm_answers(self.model_dir, self.scenario, states, self.params, self.cache,
                                desc=self.name, load=self._load_once))
