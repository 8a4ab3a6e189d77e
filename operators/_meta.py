"""Read and write a record's ``meta`` JSON string as a dict (for the model-backed operators)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dump_meta", "load_meta", "update_meta"]


def load_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The row's ``meta`` JSON as a dict (a non-object value is kept under "meta")."""
    meta = row.get("meta")
    if isinstance(meta, dict):
        return dict(meta)
    try:
        value = json.loads(meta) if meta else {}
    except ValueError:
        value = {"meta": meta}
    return value if isinstance(value, dict) else {"meta": value}


def dump_meta(meta: dict[str, Any]) -> str | None:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str) if meta else None


def update_meta(row: dict[str, Any], **values: Any) -> None:
    """Set keys of the row's meta (a value of None removes the key)."""
    meta = load_meta(row)
    for k, v in values.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    row["meta"] = dump_meta(meta)
