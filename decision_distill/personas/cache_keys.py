"""Keys of persona results in the project's answer cache (decision_distill.lm.answer_cache,
at generate.cache of params.yaml): extraction's P(yes) and generated lines, perplexity's
per-chunk NLL. Each result is stored as soon as it is computed, so a killed stage's rerun
computes only what is missing; a key holds everything that changes the number or the
text (the model's fingerprint, the full prompt, the settings, dtype, library versions),
so nothing is ever served for another model, precision or library."""

from __future__ import annotations

from ..lm.answer_cache import answer_key
from ..lm.runtime import pick_device, resolve_dtype, software_versions


def persona_key(kind: str, fingerprint: str, dtype: str, device: str, prompt: str, **settings: object) -> str:
    """`kind` names what was computed (a P(yes), a greedy line, an NLL): the same prompt
    asked for another kind of result is another key. `dtype` and `device` may be params
    values: the key holds what they resolve to on this machine (decision_distill.lm.runtime),
    never "auto", so a shared cache never serves one machine's numbers to another that
    computes them differently. The device is in every persona key: greedy lines and sampled
    answers can change with it, and the persona results are small enough not to mind the
    split it makes in a shared cache."""
    return answer_key(kind=kind, model=fingerprint, dtype=resolve_dtype(dtype, device),
                      device=pick_device(device).type, prompt=prompt, software=software_versions(), **settings)
