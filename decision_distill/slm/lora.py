"""The lora-train stage: a LoRA adapter that makes the small LM answer like the teacher.

The loss is distillation, not sampling: the cross-entropy between the teacher's
distribution over the answer options (the split's p_<option> columns) and the
SLM's answer-token probabilities, renormalised over the options, at the answer
position of the plain short prompt (decision_distill.slm.answers). The readout is the
scorer's own (`lm.scorer.option_log_probs`), so what is trained is what evaluate
measures. Where the split has teacher explanations (verbalized readout), an
optional next-token loss on them is added (`lora.explanation_weight`).

Every prompt starts with the same prefix, so a training step runs it through the
model once and each row attends to its keys and values, as the token scorer does
at inference: the same function and gradient as the whole prompts (the prefix's
LoRA dropout mask is then shared by the batch's rows), for about a third less
compute per step (bench/lora_speed.py times both layouts side by side).

This module prepares the data and the loss; the training loop, its precision, its resumable
checkpoints and its DVCLive curves are the LoRA trainer's (decision_distill.lora.trainer),
shared with persona-train. Runs under `accelerate launch` (DDP or FSDP over GPUs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.atomic import atomic_dir, write_json
from ..core.errors import UserError
from ..core.params import Params
from ..data.scenario import Scenario
from ..data.scenario_file import load_scenario
from ..data.schema import teacher_probs
from ..data.split import read_split
from ..data.states import states_from_frame
from ..lm.load import load_causal_lm
from ..lm.scorer import TokenScorer, final_logits, option_log_probs
from ..lm.scorer_checks import require_fast_head
from ..lm.tokens import right_pad
from ..lora.adapter import SKIPPED_JSON, with_lora
from ..lora.checkpoints import fingerprint, write_adapter
from ..lora.trainer import LoraTrainer, check_hardware, make_accelerator, precision
from ..students.losses import kl_divergence, soft_cross_entropy
from .answers import slm_prompts

STAGE = "lora-train"
SUMMARY_JSON = "lora_train.json"  # beside the adapter: what it was trained on and how far
INPUTS = ("prefix_ids", "input_ids", "attention_mask", "answer_pos", "explained")  # AnswerReadout's


# ---- training data ---------------------------------------------------------------

@dataclass
class Examples:
    """Token sequences of one split: the prompt's shared prefix, then per row its own
    tokens (the state, then, when explained, the teacher's answer token and its explanation).
    Positions (answer_pos, explained_from) count within a row's own tokens."""

    prefix: list[int]
    ids: list[list[int]]
    answer_pos: list[int]  # index of the prompt's last token: the answer position
    explained_from: list[int]  # first explanation token; len(ids[i]) when the row has none
    targets: torch.Tensor  # [N, K] the teacher's distribution over the options

    def __len__(self) -> int:
        return len(self.ids)

    def prompt(self, row: int) -> list[int]:
        """Row `row`'s whole prompt, up to and including its answer position."""
        return self.prefix + self.ids[row][: self.answer_pos[row] + 1]

    def batch(self, rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = right_pad([self.ids[r] for r in rows], pad_id)
        positions = torch.arange(ids.shape[1])
        explained = torch.stack([(positions >= self.explained_from[r]) & (positions < len(self.ids[r]))
                                 for r in rows])
        return {"prefix_ids": torch.tensor([self.prefix]), "input_ids": ids, "attention_mask": mask,
                "explained": explained, "targets": self.targets[rows],
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
        seq = scorer.encode_suffix(suffix)
        answer_pos.append(len(seq) - 1)
        if isinstance(why, str) and why.strip():
            # The teacher's most likely answer, then its reason: "... Yes. Because ..."
            seq = seq + [scorer.option_ids[int(np.argmax(target))]]
            explained_from.append(len(seq))
            seq = seq + scorer.tokenizer(". " + why.strip(), add_special_tokens=False).input_ids
        else:
            explained_from.append(len(seq))
        ids.append(seq)
    return Examples(prefix, ids, answer_pos, explained_from, torch.tensor(targets, dtype=torch.float32))


class AnswerReadout(torch.nn.Module):
    """The LoRA-wrapped LM with the scorer's readout as its forward: option log-probs at
    the answer position and, where a batch has explanations, their next-token loss.
    One module, so DDP/FSDP wrap (and gather) everything the step runs."""

    def __init__(self, peft_model, option_ids: list[int], share_prefix: bool = True):
        super().__init__()
        self.lm = peft_model
        self.option_ids = option_ids
        self.share_prefix = share_prefix
        # FSDP's transformer auto-wrap policy looks for the decoder layer classes here.
        self._no_split_modules = getattr(peft_model.get_base_model(), "_no_split_modules", None)

    def forward(self, prefix_ids, input_ids, attention_mask, answer_pos, explained):
        """prefix_ids [1, P], shared by the batch; the rest per row, in the rows' own positions."""
        causal_lm = self.lm.get_base_model()  # LoRA layers live inside it
        hidden = self.hidden_states(causal_lm.get_decoder(), prefix_ids, input_ids, attention_mask)
        rows = torch.arange(len(input_ids), device=hidden.device)
        option_logp = option_log_probs(causal_lm, hidden[rows, answer_pos], self.option_ids)
        predicts = explained[:, 1:]  # position t predicts token t + 1
        if not predicts.any():
            return option_logp, None
        logits = final_logits(causal_lm, hidden[:, :-1][predicts])
        return option_logp, torch.nn.functional.cross_entropy(logits.float(), input_ids[:, 1:][predicts])

    def hidden_states(self, decoder, prefix_ids, input_ids, attention_mask) -> torch.Tensor:
        """[B, S, hidden] of the rows' own tokens after the shared prefix. The prefix runs once
        (with gradients: LoRA changes its keys and values) and its cache is repeated per row;
        the rows are right-padded, so no real token attends to padding. With share_prefix off
        (or an empty prefix) each row runs its whole prompt, as bench/lora_speed.py compares."""
        n, p = input_ids.shape[0], prefix_ids.shape[1]
        if p == 0 or not self.share_prefix:
            ids = torch.cat([prefix_ids.expand(n, -1), input_ids], 1)
            mask = torch.cat([attention_mask.new_ones(n, p), attention_mask], 1)
            return decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, p:]
        cache = decoder(input_ids=prefix_ids, use_cache=True).past_key_values
        cache.batch_repeat_interleave(n)
        mask = torch.cat([attention_mask.new_ones(n, p), attention_mask], 1)
        positions = torch.arange(p, p + input_ids.shape[1], device=input_ids.device).expand(n, -1)
        return decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True).last_hidden_state


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


def train_lora(params: Params, splits_dir, slm_dir, out_adapter, checkpoints, live_dir,
               group: tuple[str, str] | None = None) -> dict:
    """Train the adapter on splits_dir/{train,val}.parquet; write it to out_adapter."""
    out_adapter, checkpoints, live_dir = Path(out_adapter), Path(checkpoints), Path(live_dir)
    if not params.slm.enabled:
        return write_skipped(out_adapter, live_dir, checkpoints)
    check_hardware(STAGE, params.slm.device, params.slm.quantize)
    how = precision(params.slm.dtype, params.slm.device, params.slm.quantize)
    accelerator = make_accelerator(params.slm.device, how, params.lora.batch_size)
    scenario = load_scenario(params.scenario)
    frames = _load_splits(Path(splits_dir), group)
    slm = load_causal_lm(slm_dir, how.base_dtype, str(accelerator.device) if params.slm.quantize == "4bit" else "cpu",
                         params.slm.trust_remote_code, params.slm.quantize)
    scorer = TokenScorer(slm, [o.text for o in scenario.options])
    explain = params.lora.explanation_weight > 0 and "explanation" in frames["train"].columns
    train, val = (build_examples(frames[name], scenario, scorer, explain) for name in ("train", "val"))
    require_fast_head(slm.model, train.prompt(0), final_logits, "slm.model")
    fp = fingerprint({"lora": params.lora.model_dump(), "dtype": how.label, "quantize": params.slm.quantize,
                      "base": slm.fingerprint, "group": group},
                     [json.dumps(train.prefix).encode(),
                      *(json.dumps([seq, start]).encode() for seq, start in zip(train.ids, train.explained_from)),
                      train.targets.numpy().tobytes()])

    module = AnswerReadout(with_lora(slm.model, params.lora, "lora.target_modules", params.slm.quantize),
                           scorer.option_ids)
    objective = Distillation(train, val, scorer.pad_id, params.lora.explanation_weight, params.slm.batch_size,
                             accelerator.device)
    trainer = LoraTrainer(params.lora, accelerator, module, len(train), objective.loss, fp, STAGE,
                          validate=objective.validate if len(val) else None)

    def summarize(history: dict) -> dict:
        summary = {"steps": len(history["train_loss"]), "total_steps": trainer.total_steps,
                   "train_rows": len(train), "val_rows": len(val),
                   "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None}
        if history["val"]:
            summary |= {"base_val_loss": history["val"][0][1], "base_val_kl": history["val"][0][2],
                        "val_loss": history["val"][-1][1], "val_kl": history["val"][-1][2]}
        return summary

    summary = summarize(trainer.run(checkpoints, live_dir, summarize))
    write_adapter(out_adapter, accelerator, trainer.module, trainer.optimizer,
                  {**summary, "options": [o.id for o in scenario.options], "group": group, "fingerprint": fp},
                  SUMMARY_JSON, slm.fingerprint)
    return summary


def _load_splits(splits_dir: Path, group: tuple[str, str] | None) -> dict[str, pd.DataFrame]:
    frames = {name: select_group(read_split(splits_dir / f"{name}.parquet"), group, name)
              for name in ("train", "val")}
    if frames["train"].empty:
        where = f" with {group[0]}={group[1]}" if group else ""
        raise UserError(f"{STAGE}: the train split has no usable rows{where}; check --group or the split stage")
    return frames


class Distillation:
    """lora-train's loss over a batch of training rows and its validation, for the LoRA trainer."""

    def __init__(self, train: Examples, val: Examples, pad_id: int, explanation_weight: float, eval_batch: int,
                 device):
        self.train, self.val, self.pad_id, self.device = train, val, pad_id, device
        self.explanation_weight, self.eval_batch = explanation_weight, eval_batch

    def loss(self, module, rows: list[int], backward) -> torch.Tensor:
        batch = self._to_device(self.train.batch(rows, self.pad_id))
        option_logp, explanation_nll = module(**{k: batch[k] for k in INPUTS})
        loss = soft_cross_entropy(option_logp, batch["targets"])
        if explanation_nll is not None:
            loss = loss + self.explanation_weight * explanation_nll
        backward(loss)
        return loss.detach()

    @torch.no_grad()
    def validate(self, module, step: int) -> tuple[float, float]:
        """(distillation loss, KL) on the validation split, in eval mode."""
        module.eval()
        # Every process scores every row: the split is small, and FSDP needs each process
        # to run the same forward passes.
        logps = []
        for start in range(0, len(self.val), self.eval_batch):
            rows = list(range(start, min(start + self.eval_batch, len(self.val))))
            batch = self._to_device(self.val.batch(rows, self.pad_id))
            batch["explained"] = torch.zeros_like(batch["explained"])  # the answer only
            logps.append(module(**{k: batch[k] for k in INPUTS})[0].cpu())
        module.train()
        logp, target = torch.cat(logps), self.val.targets
        loss, kl = soft_cross_entropy(logp, target).item(), kl_divergence(logp, target).item()
        if not math.isfinite(loss):
            raise UserError(f"{STAGE}: validation loss became {loss} at step {step}; lower lora.lr; "
                            "no adapter was written")
        return loss, kl

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}
