"""The answer cache's keys, pinned to the exact hex they had before the package layout changed
(issue 24): a refactor of how a readout's settings reach `answer_keys` must build the very same
key dict, or every cached teacher and SLM answer would be asked again. The library versions are
fixed here (they are part of every key, and an upgrade is meant to change it)."""

from __future__ import annotations

import json

import pytest

from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.personas import cache_keys as persona_keys_module
from decision_distill.slm.answers import slm_answers
from decision_distill.teacher import ask as ask_module
from decision_distill.teacher.ask import Prompts, Readout, answer_keys, teacher_answers

SCENARIO = load_scenario("scenarios/ice_cream.yaml")
STATES = SCENARIO.sample_states(2, seed=0)
SOFTWARE = {"scorer": 2, "torch": "T", "transformers": "TF", "tokenizers": "TK"}


class RecordingCache:
    """An answer cache that holds every key asked (so no model is loaded) and records them."""

    def __init__(self):
        self.keys: list[str] = []
        self.path = "recording"

    def get_many(self, keys):
        self.keys += list(keys)
        return {k: {"ok": True, "probs": [0.5, 0.5], "option_mass": 1.0, "logodds": 0.0} for k in keys}


@pytest.fixture(autouse=True)
def fixed_software(monkeypatch):
    monkeypatch.setattr(ask_module, "software_versions", lambda: SOFTWARE)
    monkeypatch.setattr(persona_keys_module, "software_versions", lambda: SOFTWARE)


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"source": "hub", "path": ".", "fingerprint": "fp-123"}))
    return tmp_path


def params(**sections):
    raw = {"teacher": {"device": "cpu"}, "slm": {"device": "cpu"}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_params(raw)


def test_teacher_token_keys_are_unchanged(model_dir):
    cache = RecordingCache()
    teacher_answers(model_dir, SCENARIO, STATES, params(), cache, report=False)
    assert cache.keys[:2] == ["69f72db9528e372be8e1f142af5975cd8d117895d45519da31d0300663fd82c3",
                              "28d15b1adb7c7009e6380f1c1701d33509993a8c234d4c9c002378ffae63c7e3"]


@pytest.mark.parametrize("quantize, pinned", [
    ("none", "97948d905cb44807b0bdf8fc6e59477500827af261436c9441f39de8de76d9ad"),
    ("4bit", "ac6f39a0a3be4061245eba02ed4c1cbce93459d7e59168f846b8fa155b37951a"),
])
def test_slm_keys_are_unchanged(model_dir, quantize, pinned):
    cache = RecordingCache()
    slm_answers(model_dir, SCENARIO, STATES, params(slm={"quantize": quantize, "batch_size": 3}), cache)
    assert cache.keys[0] == pinned


def test_sampled_verbalized_keys_are_unchanged():
    p = params(stability={"temperature": 0.7})
    # as the stability stage builds it: a token-readout teacher sampled verbally (read_sampling)
    reader = Readout.teacher(p).with_(readout="verbalized", temperature=p.stability.temperature,
                                      max_new_tokens=p.teacher.max_new_tokens)
    prompts = Prompts("prefix ", [("head", " tail"), ("other", " tail")])
    keys = answer_keys("fp-123", prompts, SCENARIO, reader, [{"repeat": 0, "seed": 7}, {"repeat": 1, "seed": 7}])
    assert keys == ["12e515d220545515ae33a123676fa55a345d958df26a4860c758375b38500381",
                    "4c3503644903bc9db67f5c8f61daf77a4084dca2791e8a5c6f74f03d8c29afb9"]


def test_token_keys_through_a_readout_copy_are_unchanged():
    p = params(teacher={"batch_size": 5, "dtype": "bfloat16"})
    prompts = Prompts("prefix ", [("head", " tail")])
    assert answer_keys("fp-123", prompts, SCENARIO, Readout.teacher(p).with_(readout="tokens")) == [
        "7c2d303efa8f54b605c2907e239d52f10283e4da78df1cbf110344597822ff82"]


def test_persona_keys_are_unchanged():
    # chat_template=None (text that is no prompt: perplexity's chunks) keeps the key it had before the setting.
    key = persona_keys_module.persona_key("p_yes", "fp-123", "auto", "cpu", "prompt", chat_template=None,
                                          max_new_tokens=4)
    assert key == "dbea37882d8c819a94b4dde2a97a4a313b7eabb299a203afc60b626768080ec6"
    asked = {on: persona_keys_module.persona_key("p_yes", "fp-123", "auto", "cpu", "prompt", chat_template=on,
                                                 max_new_tokens=4) for on in (False, True)}
    assert len({key, *asked.values()}) == 3  # a prompt's key says whether the chat template was around it
