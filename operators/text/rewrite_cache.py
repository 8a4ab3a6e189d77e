"""The rewrite cache of ``caption_rewrite``: raw model outputs in SQLite, keyed by sha256 of
(rendered prompt, model identity, generation params)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["RewriteCache"]


class RewriteCache:
    """sha256 key -> raw model output, in SQLite (shared by the workers of a machine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rewrites (key TEXT PRIMARY KEY, output TEXT NOT NULL, model TEXT)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                q = f"SELECT key, output FROM rewrites WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(dict(self._db.execute(q, chunk).fetchall()))
        return out

    def put_many(self, items: list[tuple[str, str]], model: str) -> None:
        if not items:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO rewrites (key, output, model) VALUES (?, ?, ?)", [(k, v, model) for k, v in items]
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0])
