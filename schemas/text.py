"""Reading the text of a record, in the two ways operators need it.

- ``all_text(rec, fields)``: every text of ``fields`` joined (what a text deduplicator or
  embedder compares). ``conversation`` means every turn, ``interleaved`` every text segment.
- ``pairing_text(rec, fields)``: the one text an image of the row is paired with (what CLIP
  scores): the first non-empty field; ``conversation`` means the first user turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.record import TEXT_FIELDS

__all__ = ["ALL_TEXT_FIELDS", "PAIRING_TEXT_FIELDS", "all_text", "pairing_text"]

#: every field that holds text: the record's text fields, conversation turns, document text
ALL_TEXT_FIELDS: tuple[str, ...] = (*TEXT_FIELDS, "conversation", "interleaved")
#: the text an image is paired with, first non-empty wins
PAIRING_TEXT_FIELDS: tuple[str, ...] = ("caption", "alt_text", "instruction", "conversation")


def all_text(rec: dict[str, Any], fields: Iterable[str] = ALL_TEXT_FIELDS) -> str:
    """The texts of ``fields`` joined by newlines ("" when there is none)."""
    parts: list[str] = []
    for name in fields:
        if name == "conversation":
            parts.extend(t.get("text") or "" for t in rec.get("conversation") or [] if t)
        elif name == "interleaved":
            parts.extend(s.get("text") or "" for s in rec.get("interleaved") or [] if s and s.get("kind") == "text")
        elif rec.get(name):
            parts.append(rec[name])
    return "\n".join(p for p in parts if p)


def pairing_text(rec: dict[str, Any], fields: Iterable[str] = PAIRING_TEXT_FIELDS) -> str | None:
    """The first non-empty of ``fields``, stripped (``<image>`` tags removed from a user turn)."""
    for name in fields:
        if name == "conversation":
            for turn in rec.get("conversation") or []:
                if turn and turn.get("role") == "user" and (turn.get("text") or "").strip():
                    return turn["text"].replace("<image>", " ").strip() or None
            continue
        value = rec.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
