"""Per-user state that outlives any one checkout: the default answer cache and the memo
of model-file hashes. It lives in the user's cache directory, not in the project, so
every clone, `dvc exp run --temp` copy and queued experiment sees the same answers.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "decision-distill"
HOME_CACHE = "~/.cache/"  # the XDG base directory spec's default for $XDG_CACHE_HOME


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/decision-distill, or ~/.cache/decision-distill when it is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser(HOME_CACHE)
    return Path(base) / APP


def expand_cache_path(value: str | os.PathLike) -> Path:
    """A cache path as params.yaml gives it: `~` is the home directory and `~/.cache/` is
    $XDG_CACHE_HOME when that is set; relative paths stay relative to the project root."""
    text = os.fspath(value)
    if text.startswith(HOME_CACHE) and os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / text[len(HOME_CACHE):]
    return Path(text).expanduser()
