"""A tiny in-process Gemma-3 for the persona tests: its BPE tokenizer is trained on the
corpus text itself (so a chunk is tens of tokens, not hundreds of characters), plus the
words of the extraction prompts; weights random. Saved and loaded like any real model."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from .tiny_teacher import CHAT_SPECIALS, CHAT_TEMPLATE

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
# After a chat template's generation prompt the model's reply starts a line: each answer the
# persona readouts read without its leading space, to become one token of its own.
REPLIES = ["Yes", "No", "Aye", "Nay", "A", "B", "model", "user"]
BOARD = Path(__file__).resolve().parents[2] / "examples/board"


def board_texts() -> list[str]:
    """Every monologue of the example board and the words of the extraction, vote and judge
    prompts (repeated, so " Yes", " Aye", " 3" and " A" become single tokens as in a real tokenizer)."""
    from decision_distill.personas.corpus import load_corpus
    from decision_distill.personas.extract import PREFIX
    from decision_distill.personas.judge import PAIR_PREFIX, RUBRICS
    from decision_distill.personas.votes import PREFIX as VOTE_PREFIX

    corpus = load_corpus(BOARD)
    return ([m for p in corpus.personas for m in corpus.monologues[p]] + [PREFIX] * 20 + ["Answer: Yes No"] * 50
            + [VOTE_PREFIX, PAIR_PREFIX, *RUBRICS.values()] * 5
            + ["Vote: Aye Nay", "Score: 1 2 3 4 5", "Answer: A B"] * 50)


def build_tiny_persona_model(directory: Path, texts: list[str], seed: int = 0, vocab: int = 900,
                             chat: bool = False) -> Path:
    """`chat`: with Gemma's turn markers and chat template (tests/support/tiny_teacher.py)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # As Gemma's: newlines are tokens of their own and no space is put before a text, so the
    # scorer's piecewise tokenization equals the whole prompt's (it refuses a prompt otherwise).
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                 pre_tokenizers.Metaspace(prepend_scheme="never")])
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS + (CHAT_SPECIALS if chat else []),
                                  show_progress=False)
    tok.train_from_iterator(texts + (REPLIES * 50 if chat else []), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=512,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    model = Gemma3ForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def always_prefer(source: Path, directory: Path, token_text: str) -> Path:
    """A copy of a tiny model that puts the highest logit on `token_text` after any prompt:
    a known preference, built into the weights, read back through the real loading code.

    Residual dimension 0 carries a positive constant from every token's embedding (no layer
    writes to it: the rows of o_proj and down_proj for it are zero), the final norm keeps
    only that dimension, and the tied output embedding gives `token_text` three times the
    constant, so its logit is the largest whatever the prompt."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    model = Gemma3ForCausalLM.from_pretrained(source)
    (token,) = tokenizer(token_text, add_special_tokens=False).input_ids
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        embed[:, 0] = 1.0
        embed[token, 0] = 3.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        model.model.norm.weight.fill_(-1.0)  # Gemma's norm scales by (1 + weight)
        model.model.norm.weight[0] = 9.0
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
