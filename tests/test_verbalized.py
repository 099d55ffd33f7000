"""The verbalized reader generates on top of the shared prefix's cache: what it writes
must be what the model writes for each whole prompt on its own."""

import pytest
import torch

from decision_distill.core.errors import UserError
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.verbalized import VerbalizedReader

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def prompts():
    scenario = load_scenario("scenarios/ice_cream.yaml")
    states = scenario.sample_states(40, seed=5)
    suffixes = [scenario.describe_parts(s) for s in states]
    # rows of different lengths in one batch, so the padding between prefix and suffix varies
    by_length = sorted(suffixes, key=lambda s: len("".join(s)))
    return scenario, scenario.verbalized_prefix(), by_length[:3] + by_length[-3:]


class StepLogits:
    """The next-token distribution at every generation step ([rows, vocab] per step),
    recorded from the model's forward passes."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def __enter__(self):
        self.hook = self.model.register_forward_hook(
            lambda module, args, out: self.steps.append(out.logits[:, -1].float().softmax(-1).clone()))
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def alone(teacher, prompt: str) -> tuple[str, list[torch.Tensor]]:
    """Greedy generation from one whole prompt, unpadded, no cache handed in: the reply
    and the next-token distribution at each of its steps."""
    ids = teacher.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode(), StepLogits(teacher.model) as recorded:
        out = teacher.model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, top_k=None, top_p=None,
                                     stop_strings=["\n"], tokenizer=teacher.tokenizer,
                                     pad_token_id=teacher.tokenizer.pad_token_id)
    return (teacher.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True),
            [step[0] for step in recorded.steps])


def assert_same_generation(teacher, reader, prefix, suffixes):
    with StepLogits(teacher.model) as recorded:
        shared = [a["raw"] for a in reader.answer(prefix, suffixes)]
    for row, suffix in enumerate(suffixes):
        reply, steps = alone(teacher, prefix + "".join(suffix))
        assert shared[row] == reply
        for k, expected in enumerate(steps):  # every step's whole distribution, not only its argmax
            torch.testing.assert_close(recorded.steps[k][row], expected, atol=1e-5, rtol=0)
    firsts = torch.stack([alone(teacher, prefix + "".join(s))[1][0] for s in suffixes])
    assert (firsts - firsts[0]).abs().max() > 1e-3  # the premise: the distributions depend on the prompt


def test_generation_on_the_shared_prefix_is_each_prompt_generated_alone(tiny_teacher, prompts):
    scenario, prefix, suffixes = prompts
    teacher = load_causal_lm(tiny_teacher, device="cpu")
    reader = VerbalizedReader(teacher, scenario.verbalized_key, NEW_TOKENS, 0.0, batch_size=len(suffixes))
    assert reader.fits_window(len(reader.encode_prefix(prefix)) + 60 + NEW_TOKENS)  # the shared path
    assert_same_generation(teacher, reader, prefix, suffixes)


def test_a_cache_past_the_sliding_window_generates_from_whole_prompts(prompts, tiny_variant):
    scenario, prefix, suffixes = prompts
    teacher = tiny_variant("verbalized_window", sliding_window=48)
    reader = VerbalizedReader(teacher, scenario.verbalized_key, NEW_TOKENS, 0.0, batch_size=len(suffixes))
    assert not reader.fits_window(len(reader.encode_prefix(prefix)) + NEW_TOKENS)  # the premise
    assert_same_generation(teacher, reader, prefix, suffixes)


def test_sampled_answers_are_seeded_and_vary(tiny_teacher, prompts):
    scenario, prefix, suffixes = prompts
    teacher = load_causal_lm(tiny_teacher, device="cpu")
    reader = VerbalizedReader(teacher, scenario.verbalized_key, NEW_TOKENS, 1.0, batch_size=len(suffixes))
    repeated = [suffixes[0]] * 6
    first, again = reader.answer(prefix, repeated, seed=7), reader.answer(prefix, repeated, seed=7)
    assert [a["raw"] for a in first] == [a["raw"] for a in again]
    assert len({a["raw"] for a in first}) > 1  # six samples of one prompt differ


def test_a_prompt_cut_inside_a_token_is_refused(tiny_teacher, prompts):
    scenario, prefix, suffixes = prompts
    teacher = load_causal_lm(tiny_teacher, device="cpu")
    reader = VerbalizedReader(teacher, scenario.verbalized_key, NEW_TOKENS, 0.0)
    head, tail = suffixes[0]
    with pytest.raises(UserError, match="tokenized piece by piece"):
        reader.answer(prefix + head[:3], [(head[3:], tail)])


@pytest.mark.parametrize("size, at", [(6, [0, 1, 2, 3, 5]), (1500, [3, 511, 512, 1100, 1499])])
def test_the_sampler_draws_from_the_tempered_distribution(size, at):
    """Tokens at `at` carry the mass (spread over several of the sampler's blocks in the larger
    vocabulary, at block edges); every other token has probability 0."""
    from scipy.stats import chisquare

    from decision_distill.lm.verbalized import sample_tokens

    logits = torch.full((size,), float("-inf"))
    logits[at] = torch.tensor([2.0, 0.5, -1.0, 1.0, 0.0])
    temperature, draws = 0.7, 20000
    generator = torch.Generator().manual_seed(3)
    tokens = sample_tokens(logits.expand(draws, -1), temperature, generator)
    counts = torch.bincount(tokens, minlength=size).double()
    expected = torch.softmax(logits.double() / temperature, -1) * draws
    assert counts[expected == 0].sum() == 0  # a token of probability 0 is never drawn
    assert chisquare(counts[at].numpy(), expected[at].numpy()).pvalue > 1e-3
    assert (sample_tokens(logits.expand(3, -1), 0.0, generator) == at[0]).all()  # temperature 0: the argmax
