import numpy as np
import pytest
import torch

from decision_distill.errors import UserError
from decision_distill.scenario import load_scenario
from decision_distill.teacher import TokenScorer, load_teacher


@pytest.fixture(scope="module")
def setup(tiny_teacher):
    teacher = load_teacher(tiny_teacher, device="cpu")
    scenario = load_scenario("scenarios/ice_cream.yaml")
    states = scenario.sample_states(40, seed=3)
    return teacher, scenario, scenario.token_prefix(), [scenario.describe_parts(s) for s in states]


def manual_probs(teacher, option_ids, prompt_ids):
    """Softmax over the answer tokens of one plain forward pass, written out by hand."""
    with torch.no_grad():
        logits = teacher.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    logp = torch.log_softmax(logits.double(), dim=-1)[option_ids]
    return (logp.exp() / logp.exp().sum()).numpy(), float(logp.exp().sum())


def test_scorer_equals_manual_softmax_with_and_without_prefix_reuse(setup):
    teacher, scenario, prefix, suffixes = setup
    scorer = TokenScorer(teacher, [o.text for o in scenario.options], batch_size=5)
    fast, naive = scorer.score(prefix, suffixes), scorer.score_naive(prefix, suffixes)
    for i, suffix in enumerate(suffixes):
        expected, mass = manual_probs(teacher, scorer.option_ids,
                                      scorer.encode_prefix(prefix) + scorer.encode_suffix(suffix))
        np.testing.assert_allclose(fast.probs[i], expected, atol=1e-5)
        np.testing.assert_allclose(naive.probs[i], expected, atol=1e-5)
        assert fast.option_mass[i] == pytest.approx(mass, abs=1e-5)
        assert fast.logodds[i] == pytest.approx(np.log(expected[0] / expected[1]), abs=1e-4)
    # the answers do depend on the state
    assert fast.probs[:, 0].std() > 1e-4


def test_shared_heads_are_reused_and_change_nothing(setup):
    teacher, scenario, prefix, suffixes = setup
    # many states with few distinct heads, so the grouped path runs
    shared = [(head, tail) for head in {h for h, _ in suffixes[:3]} for _, tail in suffixes[:8]]
    scorer = TokenScorer(teacher, [o.text for o in scenario.options], batch_size=5)
    fast, naive = scorer.score(prefix, shared), scorer.score_naive(prefix, shared)
    np.testing.assert_allclose(fast.probs, naive.probs, atol=1e-5)
    np.testing.assert_allclose(fast.option_mass, naive.option_mass, atol=1e-5)


def test_scores_do_not_depend_on_batch_composition(setup):
    teacher, scenario, prefix, suffixes = setup
    options = [o.text for o in scenario.options]
    together = TokenScorer(teacher, options, batch_size=24).score(prefix, suffixes)
    alone = TokenScorer(teacher, options, batch_size=1).score(prefix, suffixes)
    reversed_ = TokenScorer(teacher, options, batch_size=7).score(prefix, suffixes[::-1])
    np.testing.assert_allclose(together.probs, alone.probs, atol=1e-5)
    np.testing.assert_allclose(together.probs, reversed_.probs[::-1], atol=1e-5)


def test_multi_token_options_are_refused(setup):
    teacher, *_ = setup
    with pytest.raises(UserError, match=r"options\[1\]\.text .* tokens"):
        TokenScorer(teacher, [" Yes", " perhaps maybe"])
