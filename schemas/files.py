"""Atomic file writes: write under a temporary name in the same folder, then rename.

Every writer of the project (Parquet checkpoints, decision files, summaries, manifests, reports)
goes through these, so a crash or a second attempt of the same task never leaves a half-written
file under its final name (at-least-once execution, exactly-once files).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_parquet", "atomic_write_text"]


def _tmp_of(path: Path) -> Path:
    # unique per process and call: two attempts of one task may write the same file at once
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _commit(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(path)
    tmp.write_bytes(data)
    _commit(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """JSON with ``default=str`` (paths, enums and dates are written as text)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=str))


def atomic_write_parquet(table: Any, path: str | Path, *, compression: str = "zstd") -> Path:
    """A pyarrow Table as one Parquet file."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(path)
    try:
        pq.write_table(table, tmp, compression=compression)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _commit(tmp, path)
    return path
