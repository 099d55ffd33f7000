"""A LoRA adapter on a causal LM, and the module lora-train trains through it.

`with_lora` is shared by lora-train and the persona adapters (decision_distill.personas.train).
"""

from __future__ import annotations

import torch

from .errors import UserError
from .scorer import final_logits, option_log_probs


def with_lora(model, section, key: str, quantize: str = "none"):
    """`model` with a fresh peft LoRA adapter from `section` (rank, alpha, dropout,
    target_modules, seed: params' LoRA or PersonaLoRA), in training mode. `key` names
    the target_modules setting in the error for a layer name the model lacks (e.g.
    "lora.target_modules"); quantize "4bit" prepares an NF4 base for training (QLoRA)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantize == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(section.seed)  # the adapter's initial weights
    config = LoraConfig(r=section.rank, lora_alpha=section.alpha, lora_dropout=section.dropout,
                        target_modules=list(section.target_modules), task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"{key}: {str(err).splitlines()[0]}; name linear layers of slm.model "
                        "(e.g. q_proj, v_proj)") from None
    peft_model.train()
    return peft_model


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
