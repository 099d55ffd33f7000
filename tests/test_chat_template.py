"""teacher.chat_template: true, the recipe for instruction-tuned teachers: the
completion-style prompt goes into the user turn of the tokenizer's chat template,
and the answer is read where the model's own reply begins."""

import numpy as np
import pytest
import torch
from ruamel.yaml import YAML

from decision_distill.core.errors import UserError
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario, parse_scenario
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.source import download
from decision_distill.teacher.ask import teacher_answers

SCENARIO = "scenarios/ice_cream.yaml"


@pytest.fixture(scope="module")
def chat_teacher(tmp_path_factory, build_tiny_teacher):
    root = tmp_path_factory.mktemp("chat_teacher")
    download(str(build_tiny_teacher(root / "weights", chat=True)), "main", root / "teacher")
    return root / "teacher"


def ask(tmp_path, teacher_dir, scenario, states):
    params = parse_params({"teacher": {"chat_template": True, "device": "cpu", "batch_size": 4, "dtype": "float32"},
                           "generate": {"cache": str(tmp_path / "cache.sqlite")}})
    cache = AnswerCache(params.generate.cache)
    try:
        return teacher_answers(teacher_dir, scenario, states, params, cache)
    finally:
        cache.close()


def test_the_answer_is_the_first_token_of_the_models_reply(tmp_path, chat_teacher):
    scenario = load_scenario(SCENARIO)
    states = scenario.sample_states(12, seed=1)
    answers = ask(tmp_path, chat_teacher, scenario, states)
    teacher = load_causal_lm(chat_teacher, device="cpu")
    tok = teacher.tokenizer
    expected = []
    for state in states:
        asked = [{"role": "user", "content": scenario.token_prefix() + scenario.describe(state)}]
        ids = tok(tok.apply_chat_template(asked, add_generation_prompt=True, tokenize=False),
                  add_special_tokens=False).input_ids
        # The model's turn as the template writes it when the model replies with the option's word.
        replies = [tok(tok.apply_chat_template(asked + [{"role": "assistant", "content": o.text.strip()}],
                                               tokenize=False), add_special_tokens=False).input_ids
                   for o in scenario.options]
        assert all(reply[: len(ids)] == ids for reply in replies)
        with torch.no_grad():
            logits = teacher.model(input_ids=torch.tensor([ids])).logits[0, -1]
        logp = torch.log_softmax(logits.double(), -1)[[reply[len(ids)] for reply in replies]]
        expected.append((logp - torch.logsumexp(logp, 0)).exp().numpy())
    np.testing.assert_allclose([a["probs"] for a in answers], expected, atol=1e-5)
    assert np.std([a["probs"][0] for a in answers]) > 1e-4  # the answers depend on the state


def test_an_option_that_is_no_single_token_as_a_reply_is_refused(tmp_path, chat_teacher):
    raw = YAML(typ="safe", pure=True).load(open(SCENARIO).read())
    raw["options"][0]["text"] = " sweets"  # one token after a space, several as a reply of its own
    scenario = parse_scenario(raw, "sweets.yaml")
    refused = r"^teacher.chat_template: options\[0\]\.text ' sweets' .* reply 'sweets', which is 3 tokens"
    with pytest.raises(UserError, match=refused):
        ask(tmp_path, chat_teacher, scenario, scenario.sample_states(4, seed=0))
