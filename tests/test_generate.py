import numpy as np
import pandas as pd
import pytest

from decision_distill.lm import scorer as scorer_module
from decision_distill.teacher.generate import generate
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm.verbalized import VerbalizedReader, parse_verbalized

SCENARIO = "scenarios/ice_cream.yaml"


def params_for(tmp_path, **generate_overrides):
    raw = {"teacher": {"batch_size": 4, "device": "cpu"},
           "generate": {"states": 40, "cache": str(tmp_path / "cache.sqlite"), **generate_overrides}}
    return raw, parse_params(raw)


def run_generate(params, teacher_dir, out):
    return generate(params, load_scenario(SCENARIO), teacher_dir, out / "d.parquet", out / "f.json", out / "m.json")


def test_more_states_later_asks_only_the_new_ones(tmp_path, tiny_teacher, monkeypatch):
    asked = []
    real = scorer_module.TokenScorer._score_batch
    monkeypatch.setattr(scorer_module.TokenScorer, "_score_batch",
                        lambda self, rows, *rest: asked.append(len(rows)) or real(self, rows, *rest))
    _, small = params_for(tmp_path, states=20)
    _, large = params_for(tmp_path, states=40)
    run_generate(small, tiny_teacher, tmp_path / "a")
    assert sum(asked) == 20
    metrics = run_generate(large, tiny_teacher, tmp_path / "b")
    assert sum(asked) == 40  # only the 20 new states were asked
    first, second = pd.read_parquet(tmp_path / "a/d.parquet"), pd.read_parquet(tmp_path / "b/d.parquet")
    pd.testing.assert_frame_equal(first, second.iloc[:20])
    assert metrics["states"] == 40 and metrics["parse_failures"] == 0
    assert 0 < metrics["option_mass_mean"] <= 1
    run_generate(large, tiny_teacher, tmp_path / "c")
    assert sum(asked) == 40  # a full cache loads no model and asks nothing


def test_dataset_follows_the_contract(tmp_path, tiny_teacher):
    _, params = params_for(tmp_path, states=12)
    run_generate(params, tiny_teacher, tmp_path)
    frame = pd.read_parquet(tmp_path / "d.parquet")
    assert list(frame["state_id"]) == list(range(12))
    assert frame.p_yes.std() > 1e-4  # the answers depend on the state
    # the scorer's log-odds (from the two logits) agree with the stored probabilities, column by column
    np.testing.assert_allclose(frame.logodds, np.log(frame.p_yes / frame.p_no), atol=1e-6)
    assert frame.ok.all() and frame.question.str.endswith("Bought ice cream:").all()
    assert isinstance(frame.traits.iloc[0].tolist(), list)


KILLS = 8  # 2 in start-up, 4 while the teacher works, 2 while the dataset is written
STATES = 1200


@pytest.mark.slow
def test_generate_killed_at_8_random_moments_resumes_to_the_identical_dataset(tmp_path, tiny_teacher, generate_runs):
    raw, _ = params_for(tmp_path, states=STATES)
    raw["teacher"]["batch_size"] = 1  # a cache commit every 16 states: many moments in between
    assert generate_runs.run_stage(raw, tmp_path / "clean", tiny_teacher).wait(timeout=300) == 0
    clean = pd.read_parquet(tmp_path / "clean/d.parquet")

    # A moment is "once the cache holds n answers, plus a random delay": n = 0 lands in
    # start-up, 0 < n < STATES while the teacher works, n = STATES while the dataset is written.
    rng = np.random.default_rng(0)
    answers = [0, 0, *sorted(rng.choice(np.arange(1, STATES), KILLS - 4, replace=False)), STATES, STATES]
    delays = rng.uniform(0.0, [3.0, 3.0, *[0.3] * (KILLS - 4), 4.0, 4.0])
    cache = tmp_path / "killed.sqlite"
    killed_raw = {**raw, "generate": {**raw["generate"], "cache": str(cache)}}
    out = tmp_path / "killed"
    kills, progress = 0, []
    for n, delay in zip(answers, delays):
        kills += generate_runs.kill_when(generate_runs.run_stage(killed_raw, out, tiny_teacher), cache, n, delay)
        progress.append(generate_runs.cached(cache))
        if (out / "d.parquet").exists():  # only ever a complete dataset, never a half-written one
            pd.testing.assert_frame_equal(pd.read_parquet(out / "d.parquet"), clean)
    print(f"{kills} of {KILLS} runs killed; answers cached after each: {progress}")
    assert kills >= KILLS - 4
    assert sum(0 < n < STATES for n in progress) >= KILLS // 2  # most kills interrupted the teacher's work

    assert generate_runs.run_stage(killed_raw, out, tiny_teacher).wait(timeout=300) == 0
    resumed = pd.read_parquet(out / "d.parquet")
    pd.testing.assert_frame_equal(resumed, clean)
    assert resumed.state_id.is_unique and len(resumed) == STATES
    assert generate_runs.cached(cache) == STATES


def test_verbalized_readout_keeps_parsed_numbers_and_counts_failures(tmp_path, tiny_teacher, monkeypatch):
    """The tiny model's free text rarely parses, so the model's replies are scripted per state:
    every other state gets a valid JSON answer with its own probability, the rest invalid text.
    The real parser reads them; the dataset must keep each parsed number and each failure's text."""
    scripted = {}  # question -> the reply the "model" gave

    def scripted_answer(self, prefix, suffixes, seed=0):
        replies = []
        for prompt in (prefix + "".join(s) for s in suffixes):
            k = len(scripted)
            reply = (f'{{"buy": {0.05 + 0.1 * (k % 9):.2f}, "explanation": "state {k}"}}' if k % 2 == 0
                     else f"I would say {k}0 percent")
            scripted[prompt] = reply
            replies.append(parse_verbalized(reply, self.key))
        return replies

    monkeypatch.setattr(VerbalizedReader, "answer", scripted_answer)
    raw, _ = params_for(tmp_path, states=6)
    raw["teacher"] |= {"readout": "verbalized", "max_new_tokens": 12}
    metrics = run_generate(parse_params(raw), tiny_teacher, tmp_path)
    frame = pd.read_parquet(tmp_path / "d.parquet")
    replies = [next(r for prompt, r in scripted.items() if prompt.endswith(q)) for q in frame.question]
    valid = [r.startswith("{") for r in replies]
    assert 0 < sum(valid) < len(frame)  # both outcomes are seen
    for (_, row), reply, ok in zip(frame.iterrows(), replies, valid):
        assert row.ok == ok and row.raw == reply
        if ok:
            assert row.p_yes == pytest.approx(float(reply.split(":")[1].split(",")[0]))
            assert row.p_no == pytest.approx(1 - row.p_yes) and row.explanation.startswith("state ")
        else:
            assert np.isnan(row.p_yes) and np.isnan(row.p_no) and row.error
    assert metrics["parse_failures"] == len(frame) - sum(valid)
    assert metrics["p_mean"] == pytest.approx(frame.p_yes[frame.ok].mean())


@pytest.mark.parametrize("text, ok", [
    ('{"buy": 0.7, "explanation": "Hot day."}', True),
    (' {"buy": 1, "explanation": "Sure."}\nmore text', True),
    ('{"buy": 1.2, "explanation": "Too sure."}', False),
    ('{"buy": -0.1, "explanation": "No."}', False),
    ('{"buy": "0.7", "explanation": "String."}', False),
    ('{"buy": true, "explanation": "Bool."}', False),
    ('{"buy": NaN, "explanation": "NaN."}', False),
    ('{"explanation": "No number."}', False),
    ('{"buy": 0.5}', False),
    ('The answer is 0.7', False),
    ('{"buy": 0.7, "explanation": "x", "extra": 1}', False),
    ('{"buy": 0.9, "buy": 0.2, "explanation": "Two answers."}', False),
    ('{"buy": 1e999, "explanation": "Overflows to inf."}', False),
    ('{"buy": {"p": 0.5}, "explanation": "Nested."}', False),
    ('{"buy": 0.5, "explanation": ""}', False),
    ('[0.5, "explanation"]', False),
    ('', False),
])
def test_verbalized_parsing_is_strict(text, ok):
    parsed = parse_verbalized(text, "buy")
    assert parsed["ok"] is ok
    assert parsed["raw"] == text
    if not ok:
        assert parsed["probability"] is None and parsed["error"]
