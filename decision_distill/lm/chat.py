"""A completion-style prompt asked inside a tokenizer's chat template: the recipe for
instruction-tuned models (teacher.chat_template of params.yaml, the persona stages'
chat settings). The prompt becomes the user's turn and the answer is read, or generated,
where the model's own reply begins.

One implementation for every caller: the root pipeline's prompts (teacher.ask.build_prompts,
option_texts) and the persona stages (ChatScorer for token readouts, chat_prompts for
generated text) wrap prompts with chat_wrap and read options with reply_options.
"""

from __future__ import annotations

from ..core.errors import UserError
from .scorer import Scores, TokenScorer
from .tokens import Suffix

MARKER = "\x00STATE\x00"  # where the rest of a prompt goes: text no prompt or template holds


def chat_wrap(tokenizer, prefix: str, param: str) -> tuple[str, str]:
    """(head, tail): `prefix + rest` as the user's turn of the tokenizer's chat template, up to
    the generation prompt, is head + rest + tail for any `rest`. The template is rendered once
    around the prefix and a marker, so a template that edits the content (Gemma's trims it)
    sees the prefix as it would the whole prompt. `param` is the params key that asked for
    the template: a tokenizer without one is a one-line error naming it."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{param}: this tokenizer has no chat template; set it to false")
    wrapped = tokenizer.apply_chat_template(
        [{"role": "user", "content": prefix + MARKER}], add_generation_prompt=True, tokenize=False
    )
    head, tail = wrapped.split(MARKER)
    return head, tail


def chat_prompts(tokenizer, prompts: list[str], param: str | None) -> list[str]:
    """Whole prompts as sent to a model that generates: inside the chat template when `param`
    (the params key that turned it on) is given, unchanged when it is None."""
    if param is None:
        return list(prompts)
    return ["".join(chat_wrap(tokenizer, prompt, param)) for prompt in prompts]


def reply_options(tokenizer, texts: list[str], param: str, labels: list[str], fix: str | None = None) -> list[str]:
    """The option texts as they follow chat_wrap's prompt: after the generation prompt the model
    begins its own reply, so an option is its text without the leading space ("Yes" for " Yes"),
    which must be one token for the token readout. `labels` name each option in the error
    (e.g. "options[0].text"); `fix`, what else than `param: false` would mend it."""
    for label, text in zip(labels, texts):
        n = len(tokenizer(text.lstrip(), add_special_tokens=False).input_ids)
        if n != 1:
            mend = f"{fix}, or set {param}: false" if fix else f"set {param}: false"
            raise UserError(f"{param}: {label} {text!r} is read as the model's reply {text.lstrip()!r}, which is "
                            f"{n} tokens for this tokenizer; the token readout needs one token per option: {mend}")
    return [t.lstrip() for t in texts]


class ChatScorer:
    """TokenScorer's readout with every prompt inside the chat template: the prefix gets the
    template's opening, each suffix's last segment its closing (the generation prompt), and the
    options are read as the reply's first token (reply_options). Segments and their shared
    work are TokenScorer's, unchanged."""

    def __init__(self, model, option_texts: list[str], batch_size: int, param: str):
        self.tokenizer, self.param = model.tokenizer, param
        chat_wrap(self.tokenizer, "", param)  # no template: the error now, before any work
        # The persona prompts' answers are fixed texts: the mend is another model or no template.
        replies = reply_options(self.tokenizer, option_texts, param, ["the answer"] * len(option_texts),
                                "use a model whose tokenizer has it as one token")
        self.scorer = TokenScorer(model, replies, batch_size)

    def score(self, prefix: str, suffixes: list[Suffix | str], on_batch=None) -> Scores:
        head, tail = chat_wrap(self.tokenizer, prefix, self.param)
        parts = [(s,) if isinstance(s, str) else tuple(s) for s in suffixes]
        return self.scorer.score(head, [(*s[:-1], s[-1] + tail) for s in parts], on_batch=on_batch)


def token_scorer(model, option_texts: list[str], batch_size: int, chat: str | None):
    """The token readout of `model` for these options: plain (chat None) or inside the chat
    template (chat: the params key that turned it on, named in errors)."""
    if chat is None:
        return TokenScorer(model, option_texts, batch_size)
    return ChatScorer(model, option_texts, batch_size, chat)
