"""A content-addressed store of teacher answers that outlives reruns.

Key: sha256 of (model fingerprint, full prompt, readout and decoding settings, dtype,
quantization and library versions: decision_distill.teacher.ask.answer_keys).
SQLite gives atomic commits: a run killed mid-batch loses at most that batch,
and a rerun asks only what is not stored yet. Values are JSON, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Iterable

from ..core.user_cache import expand_cache_path


def answer_key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: str | Path):
        self.path = expand_cache_path(path)  # generate.cache: ~ and $XDG_CACHE_HOME honoured
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(keys)
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 500):  # stay under SQLite's bound-variable limit
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk)
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: dict[str, dict]) -> None:
        """Store a batch of answers in one transaction: all of them or none."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)",
                [(k, json.dumps(v, allow_nan=False)) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
