"""merge, perplexity and the SLM rows of evaluate, on the tiny in-process Gemma-3."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from scipy.special import rel_entr

from decision_distill.core.atomic import write_parquet
from decision_distill.core.errors import UserError
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.evaluation.evaluate import SLMStudents, evaluate_students
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.load import LoadedModel, load_causal_lm
from decision_distill.lm.scorer import TokenScorer
from decision_distill.lm.source import is_model_marker, read_model_json
from decision_distill.lm.tokens import right_pad
from decision_distill.lora.adapter import SKIPPED_JSON
from decision_distill.lora.merge import merge_adapter
from decision_distill.slm.answers import SLM_BASE, SLM_TUNED, slm_answers, slm_prompts
from decision_distill.slm.perplexity import held_out_text, text_scores, token_rows
from decision_distill.stats.metrics import ce, gap_closed

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = load_scenario(ROOT / "scenarios/ice_cream.yaml")
OPTION_TEXTS = [o.text for o in SCENARIO.options]
METRIC_KEYS = ["mse", "mae", "pearson", "spearman", "kl", "ce", "brier", "ece", "agreement"]
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def teacher_frame(n: int, seed: int = 0, explanations: bool = False) -> pd.DataFrame:
    """Decisions in the dataset layout for the ice-cream scenario; the teacher's
    probabilities are drawn at random (they are data here, not a model)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(SCENARIO.sample_states(n, seed))
    p = rng.uniform(0.05, 0.95, n)
    frame.insert(0, "state_id", np.arange(n))
    frame["p_yes"], frame["p_no"], frame["ok"] = p, 1 - p, True
    if explanations:  # every other state, as parse failures leave some without one
        frame["explanation"] = [None if i % 2 else "Loves sweets on a hot summer day" for i in range(n)]
    return frame


def adapter_model(base_dir: Path, adapter_dir: Path) -> LoadedModel:
    """The base SLM with the adapter applied (not merged), as a scorer reads it."""
    base = load_causal_lm(base_dir, device="cpu")
    peft_model = PeftModel.from_pretrained(base.model, adapter_dir).eval()
    return LoadedModel(peft_model.get_base_model(), base.tokenizer, "adapter", base.device)


@pytest.fixture(scope="module")
def adapted(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """A LoRA adapter with random B weights (so it changes the answers), and its merge."""
    root = tmp_path_factory.mktemp("adapted")
    base = load_causal_lm(tiny_teacher, device="cpu")
    torch.manual_seed(1)
    model = get_peft_model(base.model, LoraConfig(**LORA))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(root / "adapter")
    info = merge_adapter(tiny_teacher, root / "adapter", root / "merged", device="cpu")
    return {"base": tiny_teacher, "adapter": root / "adapter", "merged": root / "merged", "info": info}


def test_merged_model_answers_like_the_adapter_model(adapted):
    states = SCENARIO.sample_states(40, seed=3)
    prompts = slm_prompts(SCENARIO, states)

    def answers(model: LoadedModel) -> np.ndarray:
        return TokenScorer(model, OPTION_TEXTS, batch_size=8).score(prompts.prefix, prompts.suffixes).probs

    merged = load_causal_lm(adapted["merged"], device="cpu")
    with_adapter = answers(adapter_model(adapted["base"], adapted["adapter"]))
    base = answers(load_causal_lm(adapted["base"], device="cpu"))
    assert np.abs(answers(merged) - with_adapter).max() < 1e-4
    assert np.abs(with_adapter - base).max() > 0.02  # the adapter really changes the answers
    assert sorted(p.name for p in adapted["merged"].glob("*.safetensors")) == ["model.safetensors"]
    assert not list(adapted["merged"].glob("*.bin"))
    fingerprint = read_model_json(adapted["merged"])["fingerprint"]
    assert fingerprint != read_model_json(adapted["base"])["fingerprint"] == adapted["info"]["base"]


def test_merge_of_a_marker_adapter_writes_a_marker(tiny_teacher, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / SKIPPED_JSON).write_text(json.dumps({"skipped": True}))
    merge_adapter(tiny_teacher, tmp_path / "adapter", tmp_path / "merged")
    assert is_model_marker(tmp_path / "merged")
    assert [p.name for p in (tmp_path / "merged").iterdir()] == ["model.json"]


def test_merge_refuses_a_missing_or_unsafe_adapter(adapted, tmp_path):
    with pytest.raises(UserError, match="run the lora-train stage first"):
        merge_adapter(adapted["base"], tmp_path / "no_adapter", tmp_path / "merged")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((adapted["adapter"] / "adapter_config.json").read_text())
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="safetensors"):
        merge_adapter(adapted["base"], pickled, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_perplexity_matches_transformers_loss_and_the_scorer(tiny_teacher):
    model = load_causal_lm(tiny_teacher, device="cpu")
    text = held_out_text(teacher_frame(12, explanations=True), SCENARIO)
    report = text_scores(model, text, OPTION_TEXTS, batch_size=5)
    # Every state's answer and explanation tokens, scored by transformers' own loss.
    rows = token_rows(TokenScorer(model, OPTION_TEXTS), text)
    nll = tokens = 0
    with torch.no_grad():
        for context, answer, note in rows:
            ids = torch.tensor([context + answer + note])
            labels = ids.clone()
            labels[0, : len(context)] = -100
            n = len(answer + note)
            nll += model.model(input_ids=ids, labels=labels).loss.item() * n
            tokens += n
    assert report["tokens"] == tokens
    assert report["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert report["explanation_perplexity"] is not None
    scores = TokenScorer(model, OPTION_TEXTS).score(text.prompts.prefix, text.prompts.suffixes)
    assert report["answer_ce"] == pytest.approx(ce(text.P, scores.probs), rel=1e-6)


def test_perplexity_drops_on_text_the_model_was_trained_on(tiny_teacher, tmp_path):
    text = held_out_text(teacher_frame(16, seed=5, explanations=True), SCENARIO)
    base = load_causal_lm(tiny_teacher, device="cpu")
    before = text_scores(base, text, OPTION_TEXTS)
    rows = token_rows(TokenScorer(base, OPTION_TEXTS), text)
    ids, mask = right_pad([c + a + e for c, a, e in rows], pad_id=0)
    labels = ids.masked_fill(mask == 0, -100)
    for row, (context, _, _) in enumerate(rows):
        labels[row, : len(context)] = -100  # next-token loss on the teacher's words only
    torch.manual_seed(0)
    model = get_peft_model(base.model, LoraConfig(**LORA))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(tmp_path / "adapter")
    merge_adapter(tiny_teacher, tmp_path / "adapter", tmp_path / "merged", device="cpu")
    after = text_scores(load_causal_lm(tmp_path / "merged", device="cpu"), text, OPTION_TEXTS)
    assert after["perplexity"] < 0.5 * before["perplexity"]
    assert after["explanation_perplexity"] < before["explanation_perplexity"]
    assert after["tokens"] == before["tokens"]


def test_gap_closed_counts_only_states_with_a_real_gap():
    P = np.array([[0.50, 0.50], [0.80, 0.20], [0.30, 0.70]])
    base = np.array([[0.48, 0.52], [0.40, 0.60], [0.60, 0.40]])  # gaps 0.02, 0.40, -0.30
    tuned = np.array([[0.90, 0.10], [0.60, 0.40], [0.45, 0.55]])  # the first would give a ratio of 21
    result = gap_closed(P, base, tuned, gap_min=0.05)
    assert result["states"] == 2
    assert result["p_action"] == pytest.approx((0.2 / 0.4 + 0.15 / 0.3) / 2)
    none = gap_closed(P[:1], base[:1], tuned[:1], gap_min=0.05)
    assert none["p_action"] is None and none["states"] == 0
    assert none["divergence"] is not None  # the divergence version is always reported


def test_gap_closed_divergence_by_hand():
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    base = np.array([[0.3, 0.3, 0.4], [0.4, 0.3, 0.3]])
    tuned = np.array([[0.6, 0.25, 0.15], [0.2, 0.5, 0.3]])
    kl_base = rel_entr(P, base).sum(axis=1).mean()
    kl_tuned = rel_entr(P, tuned).sum(axis=1).mean()
    assert gap_closed(P, base, tuned, 0.05)["divergence"] == pytest.approx(1 - kl_tuned / kl_base)
    assert gap_closed(P, P, tuned, 0.05)["divergence"] is None  # base already matches: no gap to close


@pytest.fixture
def slm_splits(tmp_path) -> Path:
    splits = tmp_path / "splits"
    frame = teacher_frame(30, seed=2)
    SCENARIO.schema().save(splits / "features.json")
    write_parquet(frame.iloc[:24], splits / "test.parquet")
    write_parquet(frame.iloc[24:], splits / "ood.parquet")  # a holdout named "ood"
    return splits


def test_evaluate_adds_slm_rows_through_the_answer_cache(adapted, slm_splits, tmp_path, monkeypatch):
    params = parse_params({"scenario": str(ROOT / "scenarios/ice_cream.yaml"),
                           "slm": {"device": "cpu", "batch_size": 4, "dtype": "float32"},  # compared in float32
                           "generate": {"cache": str(tmp_path / "answers.sqlite")}})
    slm = SLMStudents(params, {SLM_BASE: adapted["base"], SLM_TUNED: adapted["merged"]})
    metrics, predictions = evaluate_students(slm_splits, tmp_path / "students", (), 10, slm, gap_min=0.05,
                                             holdouts=["ood"])
    assert list(metrics) == [SLM_BASE, SLM_TUNED]
    assert list(metrics[SLM_BASE]) == [*METRIC_KEYS, "holdouts"] and list(metrics[SLM_BASE]["holdouts"]) == ["ood"]
    assert list(metrics[SLM_TUNED]) == [*METRIC_KEYS, "holdouts", "gap_closed"]
    gap = metrics[SLM_TUNED]["gap_closed"]
    assert set(gap) == {"p_action", "states", "gap_min", "divergence", "holdouts"} and 0 <= gap["states"] <= 24
    assert set(gap["holdouts"]["ood"]) == {"p_action", "states", "gap_min", "divergence"}
    assert len(predictions) == 2 * 30
    json.dumps(metrics, allow_nan=False)

    # The rows are the models' answers to the short prompt...
    tuned_test = predictions[(predictions.student == SLM_TUNED) & (predictions.split == "test")]
    states = SCENARIO.sample_states(30, seed=2)[:24]
    prompts = slm_prompts(SCENARIO, states)
    direct = TokenScorer(load_causal_lm(adapted["merged"], device="cpu"), OPTION_TEXTS).score(
        prompts.prefix, prompts.suffixes).probs
    assert np.abs(tuned_test[["student_yes", "student_no"]].to_numpy() - direct).max() < 1e-6

    # ...and a rerun asks no model anything: every answer comes from the cache.
    def no_model(*args, **kwargs):
        raise AssertionError("a cached SLM was loaded again")

    monkeypatch.setattr("decision_distill.slm.answers.load_causal_lm", no_model)
    again, _ = evaluate_students(slm_splits, tmp_path / "students", (), 10, slm, gap_min=0.05, holdouts=["ood"])
    assert again == metrics


def test_slm_answers_are_keyed_by_model(adapted, tmp_path):
    """The merged model's fingerprint keeps its answers apart from the base model's."""
    params = parse_params({"slm": {"device": "cpu"}, "generate": {"cache": str(tmp_path / "a.sqlite")}})
    states = SCENARIO.sample_states(6, seed=4)
    cache = AnswerCache(tmp_path / "a.sqlite")
    base = slm_answers(adapted["base"], SCENARIO, states, params, cache)
    tuned = slm_answers(adapted["merged"], SCENARIO, states, params, cache)
    assert len(cache) == 12 and np.abs(base - tuned).max() > 0.02


def run_stage(name: str, argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def test_stages_write_markers_when_the_slm_is_disabled(tiny_teacher, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("slm: {enabled: false}\n")
    run_stage("merge", ["--base", str(tiny_teacher), "--adapter", str(tmp_path / "none"),
                        "--out", str(tmp_path / "merged"), "--params", str(params)])
    assert is_model_marker(tmp_path / "merged")
    run_stage("perplexity", ["--splits", str(tmp_path / "none"), "--merged", str(tmp_path / "merged"),
                             "--metrics", str(tmp_path / "perplexity.json"), "--params", str(params)])
    assert "skipped" in json.loads((tmp_path / "perplexity.json").read_text())


def test_merge_stage_error_is_one_line_and_exit_2(tiny_teacher, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("slm: {device: cpu}\n")
    with pytest.raises(SystemExit) as exit_info:
        run_stage("merge", ["--base", str(tiny_teacher), "--adapter", str(tmp_path / "none"),
                            "--out", str(tmp_path / "merged"), "--params", str(params)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "lora-train" in err and "\n" not in err


def test_perplexity_refuses_a_head_it_would_apply_wrongly(tmp_path, tiny_model_dir):
    # Cohere scales its logits; perplexity applies the head itself, so it would measure other numbers.

    cohere = load_causal_lm(tiny_model_dir(tmp_path, architecture="cohere"), device="cpu")
    text = held_out_text(teacher_frame(4, explanations=True), SCENARIO)
    with pytest.raises(UserError, match="slm.model: CohereForCausalLM's LM head"):
        text_scores(cohere, text, OPTION_TEXTS)
