"""lora-train on the tiny in-process Gemma-3: it learns a known policy, resumes after
SIGKILL to the same adapter, and refuses the GPU-only paths in one line."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from decision_distill.core.atomic import write_parquet
from decision_distill.core.errors import UserError
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.data.schema import teacher_probs
from decision_distill.data.states import states_from_frame
from decision_distill.lm.load import load_causal_lm
from decision_distill.lm.scorer import TokenScorer
from decision_distill.lora.adapter import SKIPPED_JSON
from decision_distill.lora.checkpoints import clear_stale, usable_checkpoints
from decision_distill.slm.answers import slm_prompts
from decision_distill.lora.adapter import with_lora
from decision_distill.slm.lora import INPUTS, AnswerReadout, build_examples, select_group, train_lora
from decision_distill.students.train import torch_threads

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios/ice_cream.yaml"


def known_policy(state: dict) -> float:
    """P(yes | state): sweet tooth buys, sweet hater does not, the rest in between."""
    if "likes_sweets" in state["traits"]:
        return 0.9
    if "dislikes_sweets" in state["traits"]:
        return 0.1
    return 0.4 if "hot_summer_day" in state["contexts"] else 0.6


@pytest.fixture(scope="module")
def policy_splits(tmp_path_factory) -> Path:
    states = load_scenario(SCENARIO).sample_states(300, seed=1)
    rows = [{"state_id": i, **s, "p_yes": known_policy(s), "p_no": 1 - known_policy(s), "ok": True,
             "agent": "even" if i % 2 == 0 else "odd"} for i, s in enumerate(states)]
    frame = pd.DataFrame(rows)
    directory = tmp_path_factory.mktemp("splits")
    write_parquet(frame.iloc[:240], directory / "train.parquet")
    write_parquet(frame.iloc[240:], directory / "val.parquet")
    return directory


def make_params(tiny_teacher: Path, slm: dict | None = None, **lora) -> dict:
    weights = yaml.safe_load((tiny_teacher / "model.json").read_text())["path"]
    return {"scenario": str(SCENARIO),
            "slm": {"model": weights, "device": "cpu", "batch_size": 32, "dtype": "float32", **(slm or {})},
            "lora": {"rank": 4, "alpha": 8, "lr": 0.01, "batch_size": 8, "max_steps": 30, "checkpoint_every": 10,
                     **lora}}


def run_in_process(tmp_path: Path, tiny_teacher: Path, splits: Path, slm: dict | None = None, **lora) -> dict:
    params = parse_params(make_params(tiny_teacher, slm, **lora))
    with torch_threads(1):
        return train_lora(params, splits, tiny_teacher, tmp_path / "adapter", tmp_path / "ckpt", tmp_path / "live")


def kl_of_scorer(slm, model, splits: Path) -> float:
    """Mean KL(teacher || model) on the validation states, read by the pipeline's scorer."""
    scenario = load_scenario(SCENARIO)
    frame = pd.read_parquet(splits / "val.parquet")
    prompts = slm_prompts(scenario, states_from_frame(frame, scenario))
    probs = TokenScorer(dataclasses.replace(slm, model=model), [o.text for o in scenario.options], 32).score(
        prompts.prefix, prompts.suffixes).probs
    target = teacher_probs(frame, [o.id for o in scenario.options])
    return float(np.mean(np.sum(target * np.log(target / probs), axis=1)))


def test_lora_learns_a_known_policy_and_the_saved_adapter_answers_like_it(tmp_path, tiny_teacher, policy_splits):
    from peft import PeftModel

    summary = run_in_process(tmp_path, tiny_teacher, policy_splits)
    assert summary["steps"] == 30
    assert summary["val_loss"] < 0.8 * summary["base_val_loss"]
    # The saved adapter, loaded by peft and read by the scorer, is what was trained.
    slm = load_causal_lm(tiny_teacher, device="cpu")
    base_kl = kl_of_scorer(slm, slm.model, policy_splits)
    tuned = PeftModel.from_pretrained(slm.model, tmp_path / "adapter").eval().get_base_model()
    tuned_kl = kl_of_scorer(slm, tuned, policy_splits)
    assert base_kl == pytest.approx(summary["base_val_kl"], rel=1e-4)
    assert tuned_kl == pytest.approx(summary["val_kl"], rel=1e-4)
    assert tuned_kl < 0.5 * base_kl
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    logged = pd.read_csv(tmp_path / "live/plots/metrics/train/loss.tsv", sep="\t")
    assert logged["step"].tolist() == list(range(1, 31))


def test_bfloat16_trains_under_autocast_with_float32_master_weights(tmp_path, tiny_teacher, policy_splits):
    runs = {dtype: run_in_process(tmp_path / dtype, tiny_teacher, policy_splits, {"dtype": dtype}, max_steps=20)
            for dtype in ("float32", "bfloat16")}
    assert runs["bfloat16"]["val_loss"] < 0.8 * runs["bfloat16"]["base_val_loss"]  # it learns in bf16 too
    # ... through bf16 matrix products (other numbers than float32's), kept in float32 weights
    assert runs["bfloat16"]["base_val_loss"] != runs["float32"]["base_val_loss"]
    weights = {d: load_file(tmp_path / d / "adapter/adapter_model.safetensors") for d in runs}
    assert {w.dtype for w in weights["bfloat16"].values()} == {torch.float32}
    assert any(not torch.equal(weights["float32"][k], weights["bfloat16"][k]) for k in weights["float32"])
    fingerprints = {d: yaml.safe_load((tmp_path / d / "adapter/lora_train.json").read_text())["fingerprint"]
                    for d in runs}
    assert fingerprints["float32"] != fingerprints["bfloat16"]  # a checkpoint never resumes across dtypes


def test_explanations_add_a_next_token_loss_that_training_lowers(tmp_path, tiny_teacher, policy_splits):
    from peft import PeftModel

    splits = tmp_path / "explained"
    splits.mkdir()
    for name in ("train", "val"):
        frame = pd.read_parquet(policy_splits / f"{name}.parquet")
        frame["explanation"] = ["a sweet tooth" if "likes_sweets" in t else "no appetite" for t in frame["traits"]]
        write_parquet(frame, splits / f"{name}.parquet")
    run_in_process(tmp_path, tiny_teacher, splits, explanation_weight=1.0)

    slm = load_causal_lm(tiny_teacher, device="cpu")
    scenario = load_scenario(SCENARIO)
    scorer = TokenScorer(slm, [o.text for o in scenario.options])
    val = build_examples(pd.read_parquet(splits / "val.parquet"), scenario, scorer, with_explanations=True)
    batch = val.batch(list(range(len(val))), scorer.pad_id)
    inputs = {k: batch[k] for k in INPUTS}
    readout = AnswerReadout(PeftModel.from_pretrained(slm.model, tmp_path / "adapter"), scorer.option_ids).eval()
    with torch.no_grad():
        tuned_nll = readout(**inputs)[1].item()
        with readout.lm.disable_adapter():
            base_nll = readout(**inputs)[1].item()
    assert tuned_nll < 0.85 * base_nll


def test_the_shared_prefix_gives_the_whole_prompts_answers_and_gradients(tiny_teacher, policy_splits):
    """A step runs the prompt's prefix once for the batch; the option log-probs, the
    explanation loss and the LoRA gradients must be those of the whole prompts run row by row."""
    torch.manual_seed(0)
    slm = load_causal_lm(tiny_teacher, device="cpu")
    scenario = load_scenario(SCENARIO)
    scorer = TokenScorer(slm, [o.text for o in scenario.options])
    frame = pd.read_parquet(policy_splits / "val.parquet").head(6)
    frame["explanation"] = ["a sweet tooth" if i % 2 else "" for i in range(len(frame))]
    examples = build_examples(frame, scenario, scorer, with_explanations=True)
    assert len(examples.prefix) > 3 and len({len(r) for r in examples.ids}) > 1  # a real prefix, ragged rows
    params = parse_params(make_params(tiny_teacher, dropout=0.0))
    module = AnswerReadout(with_lora(slm.model, params.lora, "lora.target_modules"), scorer.option_ids)
    for name, weight in module.named_parameters():  # LoRA B starts at zero: give the adapter an effect
        if weight.requires_grad:
            torch.nn.init.normal_(weight, std=0.2)
    batch = examples.batch(list(range(len(examples))), scorer.pad_id)
    inputs = {k: batch[k] for k in INPUTS}

    def run(share: bool):
        module.share_prefix = share
        module.zero_grad()
        logp, nll = module(**inputs)
        (logp[:, 0].sum() + nll).backward()
        grads = {n: w.grad.clone() for n, w in module.named_parameters() if w.requires_grad}
        return logp.detach(), nll.detach(), grads

    shared, whole = run(True), run(False)
    torch.testing.assert_close(shared[0], whole[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared[1], whole[1], atol=1e-5, rtol=1e-4)
    assert any(g.abs().max() > 1e-3 for g in whole[2].values())
    for name in whole[2]:
        torch.testing.assert_close(shared[2][name], whole[2][name], atol=1e-5, rtol=1e-3, msg=name)


def test_absurd_learning_rate_is_a_one_line_error_naming_the_step(tmp_path, tiny_teacher, policy_splits):
    with pytest.raises(UserError) as err:
        run_in_process(tmp_path, tiny_teacher, policy_splits, lr=1e30, checkpoint_every=100)
    assert "\n" not in str(err.value)
    assert "lora-train: loss became nan at step 2" in str(err.value) and "lora.lr" in str(err.value)
    assert not (tmp_path / "adapter").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_qlora_without_cuda_is_a_one_line_error(tmp_path, tiny_teacher, policy_splits):
    params = parse_params(make_params(tiny_teacher, slm={"quantize": "4bit"}))
    with pytest.raises(UserError, match=r"^slm\.quantize: 4bit .* needs a CUDA GPU[^\n]*$"):
        train_lora(params, policy_splits, tiny_teacher, tmp_path / "adapter", tmp_path / "ckpt", tmp_path / "live")
    assert not (tmp_path / "adapter").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_fsdp_config_without_cuda_is_a_one_line_error(tmp_path, tiny_teacher, policy_splits):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(make_params(tiny_teacher)))
    result = subprocess.run(
        [Path(sys.executable).parent / "accelerate", "launch", "--config_file", REPO / "configs/accelerate_fsdp.yaml",
         "--num_processes", "1", REPO / "stages/lora_train.py", "--splits", policy_splits, "--slm", tiny_teacher,
         "--out", "adapter", "--checkpoints", "ckpt", "--live", "live", "--params", "params.yaml"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: lora-train: the accelerate config uses FSDP, which needs CUDA GPUs and none is "
                      "available; run the stage without `accelerate launch --config_file` on this machine"]
    assert not (tmp_path / "adapter").exists()


def test_disabled_slm_writes_a_marker_and_trains_nothing(tmp_path, tiny_teacher, policy_splits):
    params = parse_params(make_params(tiny_teacher, slm={"enabled": False}))
    assert train_lora(params, policy_splits, tiny_teacher, tmp_path / "adapter", tmp_path / "ckpt",
                      tmp_path / "live") == {"skipped": True}
    assert [p.name for p in (tmp_path / "adapter").iterdir()] == [SKIPPED_JSON]


def test_group_selects_rows_and_names_a_missing_column(policy_splits):
    frame = pd.read_parquet(policy_splits / "train.parquet")
    odd = select_group(frame, ("agent", "odd"), "train")
    assert len(odd) == 120 and set(odd["agent"]) == {"odd"}
    with pytest.raises(UserError, match="no column 'persona'"):
        select_group(frame, ("persona", "alice"), "train")


def test_half_written_and_foreign_checkpoints_are_never_resumed(tmp_path, tiny_teacher, policy_splits):
    run_in_process(tmp_path, tiny_teacher, policy_splits, max_steps=20, checkpoint_every=5)
    ckpt = tmp_path / "ckpt"
    fp = yaml.safe_load((tmp_path / "adapter/lora_train.json").read_text())["fingerprint"]
    assert [step for step, _ in usable_checkpoints(ckpt, fp)] == [15, 20]  # only the last two are kept
    (ckpt / ".step-000025.abc.tmp").mkdir()  # a kill during a checkpoint write leaves this
    torn = ckpt / "step-000030"  # and a directory without its files is not complete
    torn.mkdir()
    (torn / "state.json").write_text('{"fingerprint": "%s", "step": 30}' % fp)
    assert [step for step, _ in usable_checkpoints(ckpt, fp)] == [15, 20]
    assert usable_checkpoints(ckpt, "other-settings") == []
    clear_stale(ckpt, fp)
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-000015", "step-000020"]
    clear_stale(ckpt, "other-settings")
    assert list(ckpt.iterdir()) == []


# ---- kill and resume ---------------------------------------------------------------

KILL_TOTAL_STEPS = 48


def start_stage(workdir: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "stages/lora_train.py"), "--splits", "splits", "--slm", "slm",
           "--out", "adapter", "--checkpoints", "ckpt", "--live", "live", "--params", "params.yaml"]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def newest_checkpoint(workdir: Path) -> int:
    return max((int(p.name.split("-")[1]) for p in (workdir / "ckpt").glob("step-*")), default=0)


def kill_after_checkpoint(workdir: Path, step: int, deadline_s: float = 90) -> None:
    """SIGKILL the stage as soon as a checkpoint at `step` or later exists: mid-training."""
    proc = start_stage(workdir)
    start = time.monotonic()
    while newest_checkpoint(workdir) < step:
        assert proc.poll() is None, f"the stage ended before it could be killed:\n{proc.stderr.read()[-2000:]}"
        assert time.monotonic() - start < deadline_s, "no checkpoint appeared in time"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (workdir / "adapter").exists()


def prepare_workdir(workdir: Path, tiny_teacher: Path, splits: Path, dtype: str = "float32") -> Path:
    workdir.mkdir()
    (workdir / "splits").symlink_to(splits)
    (workdir / "slm").symlink_to(tiny_teacher)
    params = make_params(tiny_teacher, {"dtype": dtype}, batch_size=4, max_steps=KILL_TOTAL_STEPS,
                         checkpoint_every=4)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bfloat16: autocast over float32 master weights
def test_killed_twice_resumes_to_the_uninterrupted_result(tmp_path, tiny_teacher, policy_splits, dtype):
    straight = prepare_workdir(tmp_path / "straight", tiny_teacher, policy_splits, dtype)
    killed = prepare_workdir(tmp_path / "killed", tiny_teacher, policy_splits, dtype)
    for workdir, kills in ((straight, []), (killed, [12, 32])):  # the second resumes from a resumed run
        for step in kills:
            kill_after_checkpoint(workdir, step)
        proc = start_stage(workdir)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        resumed = [int(line.split()[-3]) for line in stdout.splitlines() if "resuming from the checkpoint" in line]
        if kills:  # the last rerun continued from the newest checkpoint, it did not start over
            assert len(resumed) == 1 and kills[-1] <= resumed[0] < KILL_TOTAL_STEPS
        else:
            assert resumed == []

    expected, got = (load_file(w / "adapter/adapter_model.safetensors") for w in (straight, killed))
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    for workdir in (straight, killed):
        summary = yaml.safe_load((workdir / "adapter/lora_train.json").read_text())
        assert summary["steps"] == KILL_TOTAL_STEPS
    curves = [pd.read_csv(w / "live/plots/metrics/train/loss.tsv", sep="\t") for w in (straight, killed)]
    assert curves[1]["step"].tolist() == list(range(1, KILL_TOTAL_STEPS + 1))  # each step logged once
    np.testing.assert_array_equal(curves[0]["loss"], curves[1]["loss"])


def test_lora_refuses_a_head_it_would_train_through_wrongly(tmp_path, policy_splits, tiny_model_dir):
    # Cohere scales its logits; LoRA's readout applies the head itself, so it would fit other probabilities.

    cohere = tiny_model_dir(tmp_path, architecture="cohere")
    with pytest.raises(UserError, match="slm.model: CohereForCausalLM's LM head"):
        run_in_process(tmp_path, cohere, policy_splits, max_steps=2)
    assert not (tmp_path / "adapter").exists()
