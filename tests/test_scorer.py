import warnings

import numpy as np
import pytest
import torch

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.scorer import TokenScorer
from decision_distill.lm.load import load_causal_lm


@pytest.fixture(scope="module")
def setup(tiny_teacher):
    teacher = load_causal_lm(tiny_teacher, device="cpu")
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


def test_rows_with_and_without_a_shared_head_mix_in_one_batch(setup):
    teacher, scenario, prefix, suffixes = setup
    # Heads of different lengths, computed over several head batches (batch_size 2 < 4 heads),
    # and whole-text suffixes (no head) in the same scoring batches as rows that share a head.
    heads = list(dict.fromkeys(h for h, _ in suffixes))[:4]
    assert len({len(h) for h in heads}) > 1
    shared = [(head, tail) for head in heads for _, tail in suffixes[:5]]
    mixed = [x for pair in zip(shared, ["".join(s) for s in suffixes[5:25]]) for x in pair]
    scorer = TokenScorer(teacher, [o.text for o in scenario.options], batch_size=2)
    fast, naive = scorer.score(prefix, mixed), scorer.score_naive(prefix, mixed)
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


# ---- the fast path checks itself --------------------------------------------------

def test_a_segment_boundary_inside_a_word_is_refused(setup):
    teacher, scenario, prefix, suffixes = setup
    scorer = TokenScorer(teacher, [o.text for o in scenario.options])
    scorer.score(prefix, suffixes)  # the scenario's own segments end at spaces and newlines
    split_word = [("Customer: loves sweets\nMoment: hot sum", "mer day\nBought ice cream:")]
    with pytest.raises(UserError, match=r"boundary between the case head and the case tail .*hot sum' \| 'mer day"):
        scorer.score(prefix, split_word)
    with pytest.raises(UserError, match=r"boundary between the prefix and the case head"):
        scorer.score(prefix + "Cust", [("omer: loves sweets\nMoment:", " hot summer day\nBought ice cream:")])


def test_a_head_the_fast_readout_does_not_know_falls_back_to_the_models_logits(setup, tiny_variant):
    # Cohere's head scales the logits (config.logit_scale): final_logits alone would read other probabilities.
    cohere = tiny_variant("cohere", architecture="cohere")
    _, scenario, prefix, suffixes = setup
    scorer = TokenScorer(cohere, [o.text for o in scenario.options], batch_size=8)
    with pytest.warns(UserWarning, match="LM head"):
        fast = scorer.score(prefix, suffixes)
    naive = scorer.score_naive(prefix, suffixes)
    np.testing.assert_allclose(fast.probs, naive.probs, atol=1e-5)
    np.testing.assert_allclose(fast.option_mass, naive.option_mass, atol=1e-5)
    assert naive.probs[:, 0].std() > 1e-4


def test_a_head_the_fast_readout_knows_keeps_the_fast_path(setup):
    teacher, scenario, prefix, suffixes = setup
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warning would fail the test
        TokenScorer(teacher, [o.text for o in scenario.options]).score(prefix, suffixes[:4])


def test_shared_heads_past_a_sliding_window_take_the_flat_path(setup, build_tokenizer, tiny_variant):
    _, scenario, _, _ = setup

    tokenizer = build_tokenizer(scenario)
    count = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    prefix = "Shop records.\n\n"
    long_head = "Customer: " + ", ".join(["loves sweets, big spender, impulsive"] * 6) + "\nMoment:"
    short_head = "Customer: stingy\nMoment:"
    long_rests = [" " + ", ".join([c] * 12) + "\nBought ice cream:" for c in ("hungry", "after lunch", "after work")]
    short_rests = [" hot summer day\nBought ice cream:", " on a diet\nBought ice cream:", " hungry\nBought ice cream:"]
    suffixes = [(long_head, r) for r in short_rests * 2] + [(short_head, r) for r in long_rests * 2]
    built = 1 + count(prefix) + count(long_head) + max(map(count, long_rests))  # <bos>, prefix, widest head, rest
    longest = max(count(h) + count(r) for h, r in suffixes)
    window = built - 10
    assert 1 + count(prefix) + longest + 8 < window  # the old guard, prefix + longest suffix, lets it pass
    small = tiny_variant("window", sliding_window=window)
    scorer = TokenScorer(small, [o.text for o in scenario.options], batch_size=len(suffixes))
    fast, naive = scorer.score(prefix, suffixes), scorer.score_naive(prefix, suffixes)
    np.testing.assert_allclose(fast.probs, naive.probs, atol=1e-5)
    np.testing.assert_allclose(fast.option_mass, naive.option_mass, atol=1e-5)
