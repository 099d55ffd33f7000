"""The lora-train stage: a LoRA adapter that makes the small LM answer like the teacher.

The loss is distillation, not sampling: the cross-entropy between the teacher's
distribution over the answer options (the split's p_<option> columns) and the
SLM's answer-token probabilities, renormalised over the options, at the answer
position of the plain short prompt (decision_distill.slm.answers). The readout is the
scorer's own (`lm.scorer.option_log_probs`), so what is trained is what evaluate
measures. Where the split has teacher explanations (verbalized readout), an
optional next-token loss on them is added (`lora.explanation_weight`).

Resumable: every `lora.checkpoint_every` steps a checkpoint directory appears
atomically (adapter weights as safetensors, optimizer state, step and logged
history as JSON). A rerun resumes from the newest checkpoint whose fingerprint
(params, base model, training data) matches and finishes with exactly the steps
of an uninterrupted run and the same adapter: the batch order of an epoch and the
dropout noise of a step are seeded from (seed, epoch) and (seed, step), so no RNG
state has to be carried over. The DVCLive curves are rewritten from the
checkpoint's history, so a step is never logged twice.

Runs under `accelerate launch` (DDP or FSDP over GPUs); every process takes its
share of each global batch.

Over 300 lines until its training loop (`TrainingRun`) joins persona-train's in one LoRA trainer
(decision_distill.lora), the step of issue 24 that follows the package layout.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from ..core.params import Params
from ..data.scenario import Scenario
from ..data.scenario_file import load_scenario
from ..data.schema import teacher_probs
from ..data.split import read_split
from ..data.states import states_from_frame
from ..lm.load import load_causal_lm
from ..lm.runtime import resolve_dtype
from ..lm.scorer import TokenScorer, final_logits, option_log_probs
from ..lm.scorer_checks import require_fast_head
from ..lm.tokens import right_pad
from ..lora.adapter import SKIPPED_JSON, with_lora
from ..lora.checkpoints import (SEED_STRIDE, clear_stale, fingerprint, load_checkpoint, save_checkpoint,
                                usable_checkpoints, write_adapter)
from ..students.losses import kl_divergence, soft_cross_entropy
from .answers import slm_prompts

STAGE = "lora-train"


# ---- training data ---------------------------------------------------------------

@dataclass
class Examples:
    """Token sequences of one split: the short prompt, then (when explained) the teacher's
    answer token and its explanation."""

    ids: list[list[int]]
    answer_pos: list[int]  # index of the prompt's last token: the answer position
    explained_from: list[int]  # first explanation token; len(ids[i]) when the row has none
    targets: torch.Tensor  # [N, K] the teacher's distribution over the options

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = right_pad([self.ids[r] for r in rows], pad_id)
        positions = torch.arange(ids.shape[1])
        explained = torch.stack([(positions >= self.explained_from[r]) & (positions < len(self.ids[r]))
                                 for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "explained": explained, "targets": self.targets[rows],
                "answer_pos": torch.tensor([self.answer_pos[r] for r in rows])}


def select_group(frame: pd.DataFrame, group: tuple[str, str] | None, split: str) -> pd.DataFrame:
    """Rows where `column == value` (--group COLUMN=VALUE): one adapter per named group."""
    if group is None:
        return frame
    column, value = group
    if column not in frame.columns:
        raise UserError(f"{STAGE} --group: the {split} split has no column '{column}'; "
                        f"choose one of {', '.join(map(str, frame.columns))}")
    return frame[frame[column].astype(str) == value]


def build_examples(frame: pd.DataFrame, scenario: Scenario, scorer: TokenScorer, with_explanations: bool) -> Examples:
    """The short prompt of every row, tokenized exactly as the scorer tokenizes it."""
    prompts = slm_prompts(scenario, states_from_frame(frame, scenario))
    prefix = scorer.encode_prefix(prompts.prefix)
    targets = teacher_probs(frame, [o.id for o in scenario.options])
    if not np.isfinite(targets).all():
        raise UserError(f"{STAGE}: some p_<option> values are missing or not finite; rerun the split stage")
    explanations = frame["explanation"].tolist() if with_explanations else [None] * len(frame)
    ids, answer_pos, explained_from = [], [], []
    for suffix, target, why in zip(prompts.suffixes, targets, explanations):
        seq = prefix + scorer.encode_suffix(suffix)
        answer_pos.append(len(seq) - 1)
        if isinstance(why, str) and why.strip():
            # The teacher's most likely answer, then its reason: "... Yes. Because ..."
            seq = seq + [scorer.option_ids[int(np.argmax(target))]]
            explained_from.append(len(seq))
            seq = seq + scorer.tokenizer(". " + why.strip(), add_special_tokens=False).input_ids
        else:
            explained_from.append(len(seq))
        ids.append(seq)
    return Examples(ids, answer_pos, explained_from, torch.tensor(targets, dtype=torch.float32))


class AnswerReadout(torch.nn.Module):
    """The LoRA-wrapped LM with the scorer's readout as its forward: option log-probs at
    the answer position and, where a batch has explanations, their next-token loss.
    One module, so DDP/FSDP wrap (and gather) everything the step runs."""

    def __init__(self, peft_model, option_ids: list[int]):
        super().__init__()
        self.lm = peft_model
        self.option_ids = option_ids
        # FSDP's transformer auto-wrap policy looks for the decoder layer classes here.
        self._no_split_modules = getattr(peft_model.get_base_model(), "_no_split_modules", None)

    def forward(self, input_ids, attention_mask, answer_pos, explained):
        causal_lm = self.lm.get_base_model()  # LoRA layers live inside it
        hidden = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(len(input_ids), device=hidden.device)
        option_logp = option_log_probs(causal_lm, hidden[rows, answer_pos], self.option_ids)
        predicts = explained[:, 1:]  # position t predicts token t + 1
        if not predicts.any():
            return option_logp, None
        logits = final_logits(causal_lm, hidden[:, :-1][predicts])
        return option_logp, torch.nn.functional.cross_entropy(logits.float(), input_ids[:, 1:][predicts])


# ---- the stage -------------------------------------------------------------------

def write_skipped(out_adapter: Path, live_dir: Path, checkpoints: Path) -> dict:
    """slm.enabled: false: marker outputs, so the pipeline's declared outputs exist."""
    with atomic_dir(out_adapter) as tmp:
        write_json({"skipped": True, "reason": "slm.enabled is false"}, tmp / SKIPPED_JSON)
    checkpoints.mkdir(parents=True, exist_ok=True)
    with atomic_dir(live_dir) as tmp:
        (tmp / "plots").mkdir()
        write_json({"skipped": True}, tmp / "metrics.json")
    return {"skipped": True}


def under_fsdp() -> bool:
    """True in a process that `accelerate launch` started with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def check_hardware(params: Params) -> None:
    """The GPU-only paths fail at once, in one line, before anything loads."""
    cuda = torch.cuda.is_available()
    if under_fsdp() and not cuda:
        raise UserError(f"{STAGE}: the accelerate config uses FSDP, which needs CUDA GPUs and none is available; "
                        "run the stage without `accelerate launch --config_file` on this machine")
    if params.slm.quantize == "4bit" and not cuda:
        raise UserError("slm.quantize: 4bit (QLoRA through bitsandbytes) needs a CUDA GPU and none is available; "
                        "set slm.quantize: none")
    if params.slm.device == "cuda" and not cuda:
        raise UserError("slm.device: cuda requested but no CUDA device is available; use auto or cpu")


def make_accelerator(cpu: bool, mixed_precision: str):
    """accelerate's Accelerator with this precision. Its state is process-wide and refuses another
    precision once set, which only an in-process caller training twice meets (a stage trains once
    per process): that state is reset, the process group (PartialState) kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)


def train_lora(params: Params, splits_dir, slm_dir, out_adapter, checkpoints, live_dir,
               group: tuple[str, str] | None = None) -> dict:
    """Train the adapter on splits_dir/{train,val}.parquet; write it to out_adapter."""
    out_adapter, checkpoints, live_dir = Path(out_adapter), Path(checkpoints), Path(live_dir)
    if not params.slm.enabled:
        return write_skipped(out_adapter, live_dir, checkpoints)
    check_hardware(params)
    # bfloat16 (slm.dtype bfloat16, or auto on a processor with fast bf16) trains as accelerate's
    # mixed precision: the LoRA weights and their optimizer state in float32 (peft keeps an
    # adapter on a bf16 base in float32), matrix products under bf16 autocast (CPU or CUDA). The
    # frozen base is loaded in bfloat16: autocast would round its weights to bf16 for every
    # product anyway, and casting them again at each step cost 30 % of the step
    # (bench/lora_speed.py). float16 and QLoRA's NF4 base load in that dtype as before. FSDP
    # flattens each unit's parameters into one tensor of one dtype, so under FSDP the base stays
    # in float32 beside the float32 LoRA weights (and autocast still computes in bf16).
    dtype = resolve_dtype(params.slm.dtype, params.slm.device)
    autocast = dtype == "bfloat16" and params.slm.quantize == "none"
    base_dtype = "float32" if autocast and under_fsdp() else dtype
    regime = ("bf16-autocast" if base_dtype == "float32" else "bf16-base-autocast") if autocast else dtype
    accelerator = make_accelerator(params.slm.device == "cpu", "bf16" if autocast else "no")
    if params.lora.batch_size < accelerator.num_processes:
        raise UserError(f"lora.batch_size: {params.lora.batch_size} is smaller than the {accelerator.num_processes} "
                        "processes sharing each batch; raise it")
    scenario = load_scenario(params.scenario)
    frames = _load_splits(Path(splits_dir), group)
    slm = load_causal_lm(slm_dir, base_dtype, str(accelerator.device) if params.slm.quantize == "4bit" else "cpu",
                         params.slm.trust_remote_code, params.slm.quantize)
    scorer = TokenScorer(slm, [o.text for o in scenario.options])
    explain = params.lora.explanation_weight > 0 and "explanation" in frames["train"].columns
    train, val = (build_examples(frames[name], scenario, scorer, explain) for name in ("train", "val"))
    require_fast_head(slm.model, train.ids[0][: train.answer_pos[0] + 1], final_logits, "slm.model")
    # The precision is part of the fingerprint: a checkpoint trained another way is never resumed.
    fp = fingerprint(params, slm.fingerprint, train, group, regime)

    module = AnswerReadout(with_lora(slm.model, params.lora, "lora.target_modules", params.slm.quantize),
                           scorer.option_ids)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=params.lora.lr)
    module, optimizer = accelerator.prepare(module, optimizer)
    run = TrainingRun(params, accelerator, module, optimizer, scorer.pad_id, train, val, fp)

    if accelerator.is_main_process:
        clear_stale(checkpoints, fp)
    accelerator.wait_for_everyone()
    done = usable_checkpoints(checkpoints, fp)
    state = load_checkpoint(done[-1][1], module, optimizer) if done else run.fresh_state()
    if done and accelerator.is_main_process:
        print(f"{STAGE}: resuming from the checkpoint at step {state['step']} of {run.total_steps}", flush=True)
    # The curves are a declared output: staged and moved into place whole when training ends.
    with (atomic_dir(live_dir) if accelerator.is_main_process else contextlib.nullcontext(live_dir)) as live_tmp:
        summary = run.train(state, checkpoints, live_tmp)
    write_adapter(out_adapter, accelerator, module, optimizer,
                   {**summary, "options": [o.id for o in scenario.options], "group": group, "fingerprint": fp},
                   slm.fingerprint)
    return summary


def _load_splits(splits_dir: Path, group: tuple[str, str] | None) -> dict[str, pd.DataFrame]:
    frames = {name: select_group(read_split(splits_dir / f"{name}.parquet"), group, name)
              for name in ("train", "val")}
    if frames["train"].empty:
        where = f" with {group[0]}={group[1]}" if group else ""
        raise UserError(f"{STAGE}: the train split has no usable rows{where}; check --group or the split stage")
    return frames


class TrainingRun:
    """The training loop over global steps, with the bookkeeping that makes it resumable."""

    def __init__(self, params: Params, accelerator, module, optimizer, pad_id: int, train: Examples,
                 val: Examples, fp: str):
        self.lora, self.accelerator, self.module, self.optimizer = params.lora, accelerator, module, optimizer
        self.pad_id, self.train_rows, self.val_rows, self.fp = pad_id, train, val, fp
        self.eval_batch = params.slm.batch_size
        # Full batches only (a short last batch could leave a process without rows).
        self.steps_per_epoch = max(1, len(train) // self.lora.batch_size)
        self.total_steps = min(self.lora.epochs * self.steps_per_epoch, self.lora.max_steps)

    def fresh_state(self) -> dict:
        return {"fingerprint": self.fp, "step": 0, "total_steps": self.total_steps,
                "history": {"train_loss": [], "val": []}}

    def train(self, state: dict, checkpoints: Path, live_dir: Path) -> dict:
        history = state["history"]
        if not history["val"] and len(self.val_rows):  # the base model's loss, as the curve's start
            history["val"].append([0, *self.validate(0)])
        live = self._live(live_dir, history) if self.accelerator.is_main_process else None
        self.module.train()
        start = state["step"]
        with tqdm(total=self.total_steps, initial=start, desc=STAGE, unit="step",
                  disable=not self.accelerator.is_main_process) as bar:
            for step in range(start + 1, self.total_steps + 1):
                loss = self.step(step)
                history["train_loss"].append(loss)
                if step % self.lora.checkpoint_every == 0 or step == self.total_steps:
                    if len(self.val_rows):
                        history["val"].append([step, *self.validate(step)])
                    save_checkpoint(checkpoints, self.accelerator, self.module, self.optimizer,
                                    {**state, "step": step, "epoch": step // self.steps_per_epoch,
                                     "batch_in_epoch": step % self.steps_per_epoch, "history": history})
                if live:
                    self._log(live, step, history)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
        summary = self._summary(history)
        if live:
            for name, value in summary.items():
                live.log_metric(name, value, plot=False)
            live.end()
        return summary

    def step(self, step: int) -> float:
        """One optimizer step on global batch `step`; every process takes its share of rows."""
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        order = torch.randperm(len(self.train_rows),
                               generator=torch.Generator().manual_seed(self.lora.seed * SEED_STRIDE + epoch))
        rows = order[index * self.lora.batch_size : (index + 1) * self.lora.batch_size].tolist()
        mine = rows[self.accelerator.process_index :: self.accelerator.num_processes]
        torch.manual_seed(self.lora.seed * SEED_STRIDE + step)  # this step's dropout noise
        batch = self._to_device(self.train_rows.batch(mine, self.pad_id))
        option_logp, explanation_nll = self.module(**{k: batch[k] for k in
                                                      ("input_ids", "attention_mask", "answer_pos", "explained")})
        loss = soft_cross_entropy(option_logp, batch["targets"])
        if explanation_nll is not None:
            loss = loss + self.lora.explanation_weight * explanation_nll
        value = self.accelerator.reduce(loss.detach(), "mean").item()
        if not math.isfinite(value):
            raise UserError(f"{STAGE}: loss became {value} at step {step}; lower lora.lr (now {self.lora.lr:g}); "
                            "no adapter was written")
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value

    @torch.no_grad()
    def validate(self, step: int) -> tuple[float, float]:
        """(distillation loss, KL) on the validation split, in eval mode."""
        self.module.eval()
        # Every process scores every row: the split is small, and FSDP needs each process
        # to run the same forward passes.
        logps = []
        for start in range(0, len(self.val_rows), self.eval_batch):
            batch = self._to_device(self.val_rows.batch(list(range(start, min(start + self.eval_batch,
                                                                              len(self.val_rows)))), self.pad_id))
            batch["explained"] = torch.zeros_like(batch["explained"])  # the answer only
            logps.append(self.module(**{k: batch[k] for k in
                                        ("input_ids", "attention_mask", "answer_pos", "explained")})[0].cpu())
        self.module.train()
        logp, target = torch.cat(logps), self.val_rows.targets
        loss, kl = soft_cross_entropy(logp, target).item(), kl_divergence(logp, target).item()
        if not math.isfinite(loss):
            raise UserError(f"{STAGE}: validation loss became {loss} at step {step}; lower lora.lr; "
                            "no adapter was written")
        return loss, kl

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def _live(self, live_dir: Path, history: dict):
        """A fresh DVCLive directory holding exactly the checkpoint's history: work lost
        after the checkpoint is redone, and each step appears once."""
        from dvclive import Live

        shutil.rmtree(live_dir, ignore_errors=True)
        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        for step in range(len(history["train_loss"]) + 1):
            self._log(live, step, history)
        return live

    @staticmethod
    def _log(live, step: int, history: dict) -> None:
        """Step `step`'s curves; step 0 holds the base model's validation loss only."""
        val = [(loss, kl) for at, loss, kl in history["val"] if at == step]
        if step == 0 and not val:
            return
        live.step = step
        if step:
            live.log_metric("train/loss", history["train_loss"][step - 1])
        for loss, kl in val:
            live.log_metric("val/loss", loss)
            live.log_metric("val/kl", kl)
        live.next_step()

    def _summary(self, history: dict) -> dict:
        summary = {"steps": len(history["train_loss"]), "total_steps": self.total_steps,
                   "train_rows": len(self.train_rows), "val_rows": len(self.val_rows),
                   "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None}
        if history["val"]:
            summary |= {"base_val_loss": history["val"][0][1], "base_val_kl": history["val"][0][2],
                        "val_loss": history["val"][-1][1], "val_kl": history["val"][-1][2]}
        return summary
