"""Per-person LoRA on a tiny in-process Gemma-3: it lowers perplexity on the person's own
held-out text, resumes after a kill to the same adapter, and the whole persona flow runs
through the stage scripts in a temporary copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.source import download
from decision_distill.personas.chunks import HELD_OUT, load_chunks, split_corpus
from decision_distill.personas.corpus import load_corpus
from decision_distill.personas.params import PersonaLoRA
from decision_distill.personas.perplexity import BASE, chunk_nll, matrix_report
from decision_distill.personas.train import train_persona

REPO = Path(__file__).resolve().parents[1]

TWO = ["Margaret_Okafor", "Walter_Henning"]
FAST = dict(rank=4, alpha=8, dropout=0.0, lr=0.02, epochs=4, batch_size=4, max_tokens=96, checkpoint_every=2)


@pytest.fixture(scope="module")
def small_board(tmp_path_factory) -> Path:
    """Two members of the example board: short chunks keep the tiny model fast."""
    root = tmp_path_factory.mktemp("board")
    for name in TWO:
        shutil.copy(REPO / "examples/board" / f"{name}.txt", root / f"{name}.txt")
    return root


@pytest.fixture(scope="module")
def tiny_slm(tmp_path_factory, persona_weights) -> Path:
    root = tmp_path_factory.mktemp("tiny_slm")
    download(str(persona_weights), "main", root / "slm")
    return root / "slm"


def test_a_persona_adapter_lowers_perplexity_on_its_own_held_out_text(tmp_path, small_board, tiny_slm):
    chunks = split_corpus(load_corpus(small_board), 60, 0.25, 0)
    person = TWO[0]
    summary = train_persona(chunks, person, PersonaLoRA(**FAST), tiny_slm, tmp_path / "adapter", tmp_path / "ckpt")
    assert summary["steps"] == summary["total_steps"] > 0 and summary["final_loss"] < summary["first_loss"]
    from decision_distill.lora.merge import merge_adapter

    merge_adapter(tiny_slm, tmp_path / "adapter", tmp_path / "merged")
    held = [c for c in chunks if c.split == HELD_OUT]
    cache = AnswerCache(tmp_path / "answers.sqlite")
    nll = {BASE: chunk_nll(tiny_slm, held, "float32", "cpu", False, cache),
           person: chunk_nll(tmp_path / "merged", held, "float32", "cpu", False, cache)}
    report = matrix_report(nll, held, TWO, 200, 0.95, 0)
    own = report["own_text"][person]
    assert own["tuned"]["perplexity"] < own["base"]["perplexity"]
    assert own["ratio_ci"][0] <= own["ratio_tuned_to_base"] <= own["ratio_ci"][1]
    assert own["helped"]  # the whole interval below 1


def test_a_killed_persona_run_resumes_to_the_same_adapter(tmp_path, small_board, tiny_slm):
    chunks = split_corpus(load_corpus(small_board), 60, 0.25, 0)
    lora = PersonaLoRA(**{**FAST, "epochs": 2, "dropout": 0.1})
    person = TWO[1]
    whole = train_persona(chunks, person, lora, tiny_slm, tmp_path / "a", tmp_path / "ckpt_a")

    def kill_at_5(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_persona(chunks, person, lora, tiny_slm, tmp_path / "b", tmp_path / "ckpt_b", after_step=kill_at_5)
    assert not (tmp_path / "b").exists()  # nothing half-written
    steps_after = []
    resumed = train_persona(chunks, person, lora, tiny_slm, tmp_path / "b", tmp_path / "ckpt_b",
                            after_step=steps_after.append)
    assert steps_after[0] == 5  # the checkpoint at step 4 was used: step 5 is redone, 1-4 are not
    assert resumed["final_loss"] == whole["final_loss"]
    a, b = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_persona_bfloat16_trains_float32_lora_weights_and_never_resumes_a_float32_checkpoint(
        tmp_path, small_board, tiny_slm):
    chunks = split_corpus(load_corpus(small_board), 60, 0.25, 0)
    lora = PersonaLoRA(**{**FAST, "max_steps": 4})
    runs, steps = {}, {}
    for dtype in ("float32", "bfloat16"):  # one checkpoint folder: the bfloat16 run must start over
        steps[dtype] = []
        runs[dtype] = train_persona(chunks, TWO[0], lora, tiny_slm, tmp_path / dtype, tmp_path / "ckpt", dtype, "cpu",
                                    after_step=steps[dtype].append)
    assert steps["bfloat16"] == steps["float32"] == [1, 2, 3, 4]
    assert runs["bfloat16"]["fingerprint"] != runs["float32"]["fingerprint"]
    weights = {d: load_file(tmp_path / d / "adapter_model.safetensors") for d in runs}
    assert {w.dtype for w in weights["bfloat16"].values()} == {torch.float32}  # autocast, float32 master weights
    assert any(not torch.equal(weights["float32"][k], weights["bfloat16"][k]) for k in weights["float32"])


def test_a_killed_perplexity_run_recomputes_nothing_finished(tmp_path, small_board, tiny_slm, monkeypatch):
    import decision_distill.personas.perplexity as perplexity

    held = [c for c in split_corpus(load_corpus(small_board), 60, 0.25, 0) if c.split == HELD_OUT]
    whole = chunk_nll(tiny_slm, held, "float32", "cpu", False, AnswerCache(tmp_path / "a.sqlite"))
    real, calls, kill_at = perplexity.sequence_nll, [], [4]

    def sequence_nll(*args, **kwargs):  # the real one, counted; a kill on the fourth chunk
        calls.append(1)
        if len(calls) in kill_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(perplexity, "sequence_nll", sequence_nll)
    cache = AnswerCache(tmp_path / "b.sqlite")
    with pytest.raises(KeyboardInterrupt):
        chunk_nll(tiny_slm, held, "float32", "cpu", False, cache)
    calls.clear(), kill_at.clear()
    resumed = chunk_nll(tiny_slm, held, "float32", "cpu", False, cache)
    assert len(held) > 4 and len(calls) == len(held) - 3  # the three finished chunks are not recomputed
    assert np.array_equal(resumed, whole)
    calls.clear()
    assert np.array_equal(chunk_nll(tiny_slm, held, "float32", "cpu", False, cache), whole) and calls == []


@pytest.mark.slow
def test_the_persona_flow_runs_through_the_stage_scripts(tmp_path, small_board, tiny_slm, monkeypatch, call_stage):
    params = yaml.safe_load((REPO / "personas/params.yaml").read_text())
    params["corpus"] = {"path": str(small_board), "personas": TWO}
    params["chunks"] = {"words": 60, "held_out": 0.25, "seed": 0}
    params["lora"] = {**FAST}
    params["perplexity"]["bootstrap"] = 200
    (tmp_path / "personas.yaml").write_text(yaml.safe_dump(params))
    root = yaml.safe_load((REPO / "params.yaml").read_text())
    root["slm"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(root))
    monkeypatch.chdir(tmp_path)
    common = ["--params", "personas.yaml"]
    assert call_stage("stages/persona_split.py", *common, "--out", "chunks", "--metrics", "split.json").code == 0
    for person in TWO:
        out = call_stage("stages/persona_train.py", *common, "--slm-params", "params.yaml", "--persona", person,
                         "--chunks", "chunks", "--slm", str(tiny_slm), "--out", f"models/{person}/adapter",
                         "--checkpoints", f"models/{person}/checkpoints")
        assert out.code == 0, out.stderr
        out = call_stage("stages/merge.py", "--params", "params.yaml", "--base", str(tiny_slm),
                         "--adapter", f"models/{person}/adapter", "--out", f"models/{person}/merged")
        assert out.code == 0, out.stderr
    out = call_stage("stages/persona_perplexity.py", *common, "--slm-params", "params.yaml", "--chunks", "chunks",
                     "--base", str(tiny_slm), "--models", "models", "--metrics", "ppl.json", "--heatmap", "ppl.png")
    assert out.code == 0, out.stderr
    report = json.loads(Path("ppl.json").read_text())
    assert report["models"] == [BASE, *TWO] and set(report["own_text"]) == set(TWO)
    for text in TWO:
        for model in report["models"]:
            cell = report["matrix"][text][model]
            assert cell["ci"][0] <= cell["perplexity"] <= cell["ci"][1]
    assert Path("ppl.png").read_bytes()[:4] == b"\x89PNG"
    assert {p: report["training"][p]["train_chunks"] for p in TWO} == \
        {p: sum(c.split == "train" and c.persona == p for c in load_chunks("chunks")) for p in TWO}
    split = json.loads(Path("split.json").read_text())
    assert all(split["personas"][p]["train_chunks"] > 0 for p in TWO)
