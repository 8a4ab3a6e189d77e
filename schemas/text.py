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

__all__ = ["ALL_TEXT_FIELDS", "PAIRING_TEXT_FIELDS", "all_text", "pairing_text", "repair_text", "repaired"]

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


def _valid(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def repaired(s: str) -> str:
    """``s`` with every surrogate code point (a lone ``\\ud800`` from JSON, the ``\\udcff`` that
    stands for a byte of a file name that is not UTF-8) written as its visible escape, so it can be
    stored; valid text is returned as is."""
    if _valid(s):
        return s
    return "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else f"\\u{ord(c):04x}" for c in s)


def repair_text(value: Any, path: str = "") -> str | None:
    """Repair (``repaired``) every string of a record, its nested dicts and lists (keys too), in
    place. Returns what was wrong with the first invalid string (None when all were valid)."""
    problem: str | None = None
    if isinstance(value, dict):
        for k in list(value):
            v = value[k]
            key = k
            if isinstance(k, str) and not _valid(k):
                key = repaired(k)
                value[key] = value.pop(k)
                problem = problem or f"{path or 'record'}: key {key!r} is not valid Unicode"
            if isinstance(v, str):
                if not _valid(v):
                    value[key] = repaired(v)
                    problem = problem or _where(f"{path}.{key}" if path else str(key), v)
            elif isinstance(v, dict | list):
                sub = repair_text(v, f"{path}.{key}" if path else str(key))
                problem = problem or sub
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, str):
                if not _valid(v):
                    value[i] = repaired(v)
                    problem = problem or _where(f"{path}[{i}]", v)
            elif isinstance(v, dict | list):
                sub = repair_text(v, f"{path}[{i}]")
                problem = problem or sub
    return problem


def _where(field: str, s: str) -> str:
    i = next(i for i, c in enumerate(s) if 0xD800 <= ord(c) <= 0xDFFF)
    kind = "a byte that is not UTF-8" if 0xDC80 <= ord(s[i]) <= 0xDCFF else "a lone surrogate"
    return f"{field} is not valid Unicode: {kind} (U+{ord(s[i]):04X}) at character {i}"
