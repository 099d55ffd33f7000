"""A tiny causal LM built in-process: a BPE tokenizer trained on the scenario's
own texts and a randomly initialised two-layer Gemma-3 (or Cohere, whose LM head
scales its logits). Saved with save_pretrained, it goes through exactly the
loading code a real teacher does."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CohereConfig, CohereForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from decision_distill.data.scenario import Scenario
from decision_distill.data.scenario_file import load_scenario

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
CHAT_SPECIALS = ["<start_of_turn>", "<end_of_turn>"]
# Gemma's chat format: each turn is "<start_of_turn>{role}\n{content}<end_of_turn>\n",
# and the generation prompt opens the model's turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _corpus(scenario: Scenario) -> list[str]:
    """The scenario's texts, then those of the zero-shot scenarios it names (their options
    repeated so that each becomes one token, as the token readout needs); the options
    also without their leading space, as a chat model's reply starts."""
    texts = [scenario.token_prefix(), scenario.verbalized_prefix(), scenario.intro, scenario.case]
    texts += [t for f in scenario.features for t in f.texts.values()]
    texts += [o.text for o in scenario.options] + ['{"buy": 0.5, "explanation": "ok"}', "0123456789"]
    texts += [o.text.lstrip() for o in scenario.options] * 10 + ["model", "user"]
    for other in map(load_scenario, scenario.zero_shot):
        texts += [other.token_prefix(), *(t for f in other.features for t in f.texts.values())]
        texts += [o.text for o in other.options] * 10
    return texts * 3


def build_tokenizer(scenario: Scenario, chat: bool = False) -> PreTrainedTokenizerFast:
    """Like Gemma's tokenizer, newlines are tokens of their own and no space is put in
    front of a text, so a prompt tokenized piece by piece (pieces ending at a space or
    newline) is the prompt tokenized whole, as the scorer requires. `chat`: with
    Gemma's turn markers and chat template."""
    specials = SPECIALS + (CHAT_SPECIALS if chat else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                 pre_tokenizers.Metaspace(prepend_scheme="never")])
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=list("0123456789.{}\":,"))
    tok.train_from_iterator(_corpus(scenario), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tiny_model(architecture: str, vocab_size: int, sliding_window: int) -> torch.nn.Module:
    shape = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                 pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if architecture == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**shape, head_dim=16, sliding_window=sliding_window,
                                                  layer_types=["sliding_attention", "full_attention"]))
    if architecture == "cohere":  # logits = lm_head(hidden) * logit_scale
        return CohereForCausalLM(CohereConfig(**shape, logit_scale=0.25))
    raise ValueError(f"unknown tiny architecture {architecture!r}")


def build_tiny_teacher(directory: Path, scenario_path: str = "scenarios/ice_cream.yaml", seed: int = 0,
                       chat: bool = False, sliding_window: int = 512, architecture: str = "gemma3") -> Path:
    scenario = load_scenario(scenario_path)
    tokenizer = build_tokenizer(scenario, chat)
    torch.manual_seed(seed)
    model = _tiny_model(architecture, len(tokenizer), sliding_window)
    with torch.no_grad():  # larger weights than the default init, so answers depend on the prompt
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_model_dir(root: Path, **kwargs) -> Path:
    """A model directory as the download stage makes it (model.json) for a tiny model
    built with `kwargs` (build_tiny_teacher's options)."""
    from decision_distill.lm.source import download

    download(str(build_tiny_teacher(root / "weights", **kwargs)), "main", root / "model")
    return root / "model"


def tiny_variant(root: Path, **kwargs):
    """A tiny model built with `kwargs` (build_tiny_teacher's options), downloaded into `root`
    and loaded as the pipeline loads a teacher."""
    from decision_distill.lm.load import load_causal_lm

    return load_causal_lm(tiny_model_dir(root, **kwargs), device="cpu")
