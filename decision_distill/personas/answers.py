"""Keys of persona results in the project's answer cache (decision_distill.answer_cache,
at generate.cache of params.yaml): extraction's P(yes) and generated lines, perplexity's
per-chunk NLL. Each result is stored as soon as it is computed, so a killed stage's rerun
computes only what is missing; a key holds everything that changes the number or the
text (the model's fingerprint, the full prompt, the settings, dtype, library versions),
so nothing is ever served for another model, precision or library."""

from __future__ import annotations

from ..answer_cache import answer_key
from ..generate import software_versions


def persona_key(kind: str, fingerprint: str, dtype: str, prompt: str, **settings: object) -> str:
    """`kind` names what was computed (a P(yes), a greedy line, an NLL): the same prompt
    asked for another kind of result is another key."""
    return answer_key(kind=kind, model=fingerprint, dtype=dtype, prompt=prompt, software=software_versions(),
                      **settings)
