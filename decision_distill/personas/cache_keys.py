"""Keys of persona results in the project's answer cache (decision_distill.lm.answer_cache,
at generate.cache of params.yaml): extraction's P(yes) and generated lines, perplexity's
per-chunk NLL. Each result is stored as soon as it is computed, so a killed stage's rerun
computes only what is missing; a key holds everything that changes the number or the
text (the model's fingerprint, the full prompt, the settings, dtype, library versions),
so nothing is ever served for another model, precision or library.

A prompt's key holds the prompt as the stage writes it and whether the model's chat template
was put around it (`chat_template`): the wrapped text is a function of those two, the
tokenizer (its files are in the model's fingerprint) and the transformers version (in the
software versions), so a stage can look its answers up before it loads a tokenizer."""

from __future__ import annotations

from ..lm.answer_cache import answer_key
from ..lm.runtime import pick_device, resolve_dtype, software_versions


def persona_key(kind: str, fingerprint: str, dtype: str, device: str, prompt: str, *, chat_template: bool | None,
                **settings: object) -> str:
    """`kind` names what was computed (a P(yes), a greedy line, an NLL): the same prompt
    asked for another kind of result is another key. `dtype` and `device` may be params
    values: the key holds what they resolve to on this machine (decision_distill.lm.runtime),
    never "auto", so a shared cache never serves one machine's numbers to another that
    computes them differently. The device is in every persona key: greedy lines and sampled
    answers can change with it, and the persona results are small enough not to mind the
    split it makes in a shared cache. `chat_template` must be given: True or False for a
    prompt (asked inside the chat template or not: every answer differs), None for text that
    is no prompt (perplexity's chunks), which keeps no such entry."""
    template = {} if chat_template is None else {"chat_template": chat_template}
    return answer_key(kind=kind, model=fingerprint, dtype=resolve_dtype(dtype, device),
                      device=pick_device(device).type, prompt=prompt, software=software_versions(),
                      **template, **settings)
