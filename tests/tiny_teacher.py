"""A tiny causal LM built in-process: a BPE tokenizer trained on the scenario's
own texts and a randomly initialised two-layer Gemma-3. Saved with
save_pretrained, it goes through exactly the loading code a real teacher does."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from decision_distill.scenario import Scenario, load_scenario

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def _corpus(scenario: Scenario) -> list[str]:
    """The scenario's texts, then those of the zero-shot scenarios it names (their options
    repeated so that each becomes one token, as the token readout needs)."""
    texts = [scenario.token_prefix(), scenario.verbalized_prefix(), scenario.intro, scenario.case]
    texts += [t for f in scenario.features for t in f.texts.values()]
    texts += [o.text for o in scenario.options] + ['{"buy": 0.5, "explanation": "ok"}', "0123456789"]
    for other in map(load_scenario, scenario.zero_shot):
        texts += [other.token_prefix(), *(t for f in other.features for t in f.texts.values())]
        texts += [o.text for o in other.options] * 10
    return texts * 3


def build_tokenizer(scenario: Scenario) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=list("0123456789.{}\":,"))
    tok.train_from_iterator(_corpus(scenario), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def build_tiny_teacher(directory: Path, scenario_path: str = "scenarios/ice_cream.yaml", seed: int = 0) -> Path:
    scenario = load_scenario(scenario_path)
    tokenizer = build_tokenizer(scenario)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=512,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so answers depend on the prompt
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
