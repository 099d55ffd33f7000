"""The one LoRA training loop, behind lora-train (decision_distill.slm.lora: the teacher's answer
distribution through the answer readout) and persona-train (decision_distill.personas.train:
next-token loss on a person's chunks). The caller brings its data preparation: a module whose
`lm` is the LoRA-wrapped model and whose forward computes what its loss needs, and the loss
over a batch of rows. The trainer owns the rest: the optimizer, the precision, the batch
order, checkpoints and resuming, when to stop, the progress bar and the loss history.

Precision, one policy for both, from the resolved dtype (`auto` is float32):
- float32 and float16 train in that dtype;
- bfloat16 trains as accelerate's bf16 mixed precision: the LoRA weights and their optimizer
  state in float32 (pure bf16 weights would round away most of a small learning rate's
  updates; peft keeps an adapter on a bf16 base in float32), the module's forward under bf16
  autocast (CPU or CUDA). The frozen base loads in bfloat16: autocast would round its weights
  to bf16 for every product anyway, and casting them again at each step cost 30 % of the step
  (bench/lora_speed.py). Under FSDP, which flattens each unit's parameters into one tensor of
  one dtype, the base stays in float32 beside the LoRA weights (autocast still computes in bf16);
- QLoRA (quantize 4bit) loads an NF4 base computing in the resolved dtype, without autocast.
The precision's label is part of the checkpoints' fingerprint: none resumes in another.

Resumable: every `checkpoint_every` steps, and at the last, a checkpoint appears atomically
(decision_distill.lora.checkpoints). A rerun resumes from the newest one whose fingerprint
matches and finishes with exactly the steps of an uninterrupted run and the same adapter: the
batch order of an epoch and the dropout noise of a step are seeded from (seed, epoch) and
(seed, step), so no RNG state has to be carried over. The DVCLive curves, where a caller keeps
them, are rewritten from the checkpoint's history, so a step is never logged twice.

Under `accelerate launch` (DDP or FSDP over GPUs) every process takes its share of each batch.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..core.atomic import atomic_dir
from ..core.errors import UserError
from ..core.params import LoraTraining
from ..lm.runtime import resolve_dtype
from .checkpoints import SEED_STRIDE, clear_stale, load_checkpoint, save_checkpoint, usable_checkpoints

# (module, rows of this process, backward) -> the batch's loss value, detached: the loss is
# passed to `backward` (in pieces if the caller likes: persona-train goes one sequence at a time).
LossFn = Callable[[torch.nn.Module, list[int], Callable[[torch.Tensor], None]], torch.Tensor]


@dataclass(frozen=True)
class Precision:
    base_dtype: str  # the dtype the frozen base model loads in
    autocast: bool   # the forward under bf16 autocast (accelerate's mixed precision "bf16")
    label: str       # how it trains, in the checkpoints' fingerprint


def precision(dtype: str, device: str, quantize: str = "none") -> Precision:
    """The policy of the module docstring for a params dtype ("auto" included)."""
    resolved = resolve_dtype(dtype, device)
    if resolved != "bfloat16" or quantize != "none":
        return Precision(resolved, False, resolved)
    if under_fsdp():
        return Precision("float32", True, "bf16-autocast")
    return Precision("bfloat16", True, "bf16-base-autocast")


def under_fsdp() -> bool:
    """True in a process that `accelerate launch` started with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def check_hardware(stage: str, device: str, quantize: str = "none") -> None:
    """The GPU-only paths fail at once, in one line, before anything loads."""
    cuda = torch.cuda.is_available()
    if under_fsdp() and not cuda:
        raise UserError(f"{stage}: the accelerate config uses FSDP, which needs CUDA GPUs and none is available; "
                        "run the stage without `accelerate launch --config_file` on this machine")
    if quantize == "4bit" and not cuda:
        raise UserError("slm.quantize: 4bit (QLoRA through bitsandbytes) needs a CUDA GPU and none is available; "
                        "set slm.quantize: none")
    if device == "cuda" and not cuda:
        raise UserError("slm.device: cuda requested but no CUDA device is available; use auto or cpu")


def make_accelerator(device: str, how: Precision, batch_size: int, key: str = "lora.{}"):
    """accelerate's Accelerator in this precision. Its state is process-wide and refuses another
    precision once set, which only an in-process caller training twice meets (a stage trains once
    per process): that state is reset, the process group (PartialState) kept. `key` formats a
    setting's name for errors ("lora.{}")."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed_precision = "bf16" if how.autocast else "no"
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    if batch_size < accelerator.num_processes:
        raise UserError(f"{key.format('batch_size')}: {batch_size} is smaller than the "
                        f"{accelerator.num_processes} processes sharing each batch; raise it")
    return accelerator


class LoraTrainer:
    """Global steps over `rows` training rows with `loss`, resumable (see the module docstring).

    `validate(module, step)`, when given, returns (loss, KL) on held-out data at step 0 and at
    every checkpoint. `partial_batches`: an epoch ends with its short last batch instead of
    dropping it (one process only: a process without rows would stall the others)."""

    def __init__(self, settings: LoraTraining, accelerator, module: torch.nn.Module, rows: int, loss: LossFn,
                 fp: str, stage: str, key: str = "lora.{}", validate=None, partial_batches: bool = False):
        if partial_batches and accelerator.num_processes > 1:
            raise UserError(f"{stage}: trains in one process; run it without `accelerate launch`")
        self.settings, self.accelerator, self.rows, self.loss = settings, accelerator, rows, loss
        self.fp, self.stage, self.key, self.validate = fp, stage, key, validate
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=settings.lr)
        self.module, self.optimizer = accelerator.prepare(module, optimizer)
        per_epoch = math.ceil(rows / settings.batch_size) if partial_batches else rows // settings.batch_size
        self.steps_per_epoch = max(1, per_epoch)
        self.total_steps = min(settings.epochs * self.steps_per_epoch, settings.max_steps)

    def run(self, checkpoints: Path, live_dir: Path | None = None, summarize: Callable[[dict], dict] | None = None,
            after_step: Callable[[int], None] | None = None) -> dict:
        """Train from the newest usable checkpoint in `checkpoints` (or from the start) to the
        last step. Returns the history: {"train_loss": [one per step], "val": [[step, loss, KL]...]}.
        `live_dir`: DVCLive curves, ending with `summarize(history)`'s metrics."""
        main = self.accelerator.is_main_process
        if main:
            clear_stale(checkpoints, self.fp)
        self.accelerator.wait_for_everyone()
        done = usable_checkpoints(checkpoints, self.fp)
        state = (load_checkpoint(done[-1][1], self.module, self.optimizer) if done else
                 {"fingerprint": self.fp, "step": 0, "total_steps": self.total_steps,
                  "history": {"train_loss": [], "val": []}})
        if done and main:
            print(f"{self.stage}: resuming from the checkpoint at step {state['step']} of {self.total_steps}",
                  flush=True)
        history = state["history"]
        if self.validate and not history["val"]:  # the base model's loss, as the curve's start
            history["val"].append([0, *self.validate(self.module, 0)])
        if live_dir is None or not main:
            return self._train(state, checkpoints, None, after_step)
        # The curves are a declared output: staged and moved into place whole when training ends.
        with atomic_dir(live_dir) as live_tmp:
            curves = Curves(live_tmp, history)
            self._train(state, checkpoints, curves, after_step)
            curves.end(summarize(history) if summarize else {})
        return history

    def _train(self, state: dict, checkpoints: Path, curves: Curves | None, after_step) -> dict:
        history = state["history"]
        self.module.train()
        every, per_epoch = self.settings.checkpoint_every, self.steps_per_epoch
        with tqdm(total=self.total_steps, initial=state["step"], desc=self.stage, unit="step",
                  disable=not self.accelerator.is_main_process) as bar:
            for step in range(state["step"] + 1, self.total_steps + 1):
                loss = self.step(step)
                history["train_loss"].append(loss)
                if step % every == 0 or step == self.total_steps:
                    if self.validate:
                        history["val"].append([step, *self.validate(self.module, step)])
                    save_checkpoint(checkpoints, self.accelerator, self.module, self.optimizer,
                                    {**state, "step": step, "epoch": step // per_epoch,
                                     "batch_in_epoch": step % per_epoch, "history": history})
                if curves:
                    curves.log(step, history)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if after_step:
                    after_step(step)
        return history

    def step(self, step: int) -> float:
        """One optimizer step on global batch `step`; every process takes its share of rows."""
        seed, size = self.settings.seed * SEED_STRIDE, self.settings.batch_size
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        order = torch.randperm(self.rows, generator=torch.Generator().manual_seed(seed + epoch))
        rows = order[index * size:(index + 1) * size].tolist()
        mine = rows[self.accelerator.process_index::self.accelerator.num_processes]
        torch.manual_seed(seed + step)  # this step's dropout noise
        value = self.accelerator.reduce(self.loss(self.module, mine, self.accelerator.backward), "mean").item()
        if not math.isfinite(value):
            raise UserError(f"{self.stage}: loss became {value} at step {step}; lower {self.key.format('lr')} "
                            f"(now {self.settings.lr:g}); no adapter was written")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value


class Curves:
    """A fresh DVCLive directory holding exactly the checkpoint's history: work lost after the
    checkpoint is redone, and each step appears once. Step 0 holds the base model's validation
    loss only."""

    def __init__(self, live_dir: Path, history: dict):
        from dvclive import Live

        shutil.rmtree(live_dir, ignore_errors=True)
        self.live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        for step in range(len(history["train_loss"]) + 1):
            self.log(step, history)

    def log(self, step: int, history: dict) -> None:
        val = [(loss, kl) for at, loss, kl in history["val"] if at == step]
        if step == 0 and not val:
            return
        self.live.step = step
        if step:
            self.live.log_metric("train/loss", history["train_loss"][step - 1])
        for loss, kl in val:
            self.live.log_metric("val/loss", loss)
            self.live.log_metric("val/kl", kl)
        self.live.next_step()

    def end(self, metrics: dict) -> None:
        for name, value in metrics.items():
            self.live.log_metric(name, value, plot=False)
        self.live.end()
