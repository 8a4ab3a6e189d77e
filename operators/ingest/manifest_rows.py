"""One manifest row (a dict from a JSONL line or a Parquet row) -> record fields.

Shared by the ``jsonl``, ``parquet`` and ``obelics`` readers. ``parse_row`` returns the keyword
fields for ``Reader.record`` or raises ``RowError`` (the reader quarantines the row with
BAD_MANIFEST_ROW and the message). Keys a format does not map go to ``meta``.

Formats (``auto`` picks per row, in this order): ``llava`` (has ``conversations``), ``preference``
(``chosen``+``rejected``, ``chosen_image``+``rejected_image`` or ``candidates``), ``trajectory``
(``steps``), ``obelics`` (``texts``+``images``), ``generic`` (anything else with media or text).
"""

from __future__ import annotations

import json
import re
from typing import Any

from operators.ingest._common import has_text, layout_of, modalities_of, resolve_media_path, split_fields
from schemas.enums import Layout, Modality
from schemas.record import new_media

__all__ = ["FORMATS", "RowError", "detect_format", "parse_row"]

FORMATS = ("auto", "llava", "preference", "trajectory", "obelics", "generic")

_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "bot": "assistant", "system": "system", "tool": "tool", "function": "tool", "observation": "tool",
}  # fmt: skip
_PLACEHOLDER = re.compile(r"\s*<(?:image|video|audio)>\s*")
_MEDIA_KEYS = (("image", Modality.IMAGE), ("images", Modality.IMAGE), ("video", Modality.VIDEO),
               ("videos", Modality.VIDEO), ("audio", Modality.AUDIO), ("audios", Modality.AUDIO))  # fmt: skip


class RowError(ValueError):
    """The row does not fit the format it was read as."""


def detect_format(row: dict[str, Any]) -> str:
    if "conversations" in row:
        return "llava"
    if ("chosen" in row and "rejected" in row) or ("chosen_image" in row and "rejected_image" in row):
        return "preference"
    if "candidates" in row:
        return "preference"
    if "steps" in row:
        return "trajectory"
    if "texts" in row and "images" in row:
        return "obelics"
    return "generic"


def parse_row(row: dict[str, Any], fmt: str, media_root: str) -> dict[str, Any]:
    """Record fields for one row. Raises RowError."""
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {type(row).__name__}")
    row = {k: v for k, v in row.items() if v is not None}  # null = absent (Parquet has every column)
    fmt = detect_format(row) if fmt == "auto" else fmt
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise RowError(f"unknown format '{fmt}'")
    return parser(row, media_root)


def _uri(value: Any, root: str, what: str) -> str:
    if isinstance(value, dict):  # HF-style {"path": ..., "bytes": ...}
        value = value.get("path") or value.get("url")
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{what}: expected a media path or URL, got {_short(value)}")
    return resolve_media_path(value, root)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _media_list(value: Any, modality: str, root: str, what: str, role: str = "input") -> list[dict[str, Any]]:
    values = value if isinstance(value, list) else [value]
    return [new_media(modality, _uri(v, root, what), role=role) for v in values if v is not None]


def _str(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise RowError(f"{what}: expected a string, got {_short(value)}")


def _finish(
    fields: dict[str, Any], media: list[dict[str, Any]], row: dict[str, Any], layout: str | None, text: bool = False
) -> dict[str, Any]:
    """Add media, modalities, layout and meta (the keys left in ``row``) to the fields."""
    text = text or has_text(fields)
    fields["media"] = media
    fields["modalities"] = modalities_of(media, text)
    fields["layout"] = layout or layout_of(media, text)
    fields["meta"] = row or None
    return fields


def _take_media(row: dict[str, Any], root: str) -> list[dict[str, Any]]:
    media: list[dict[str, Any]] = []
    for key, modality in _MEDIA_KEYS:
        if key in row:
            media += _media_list(row.pop(key), modality.value, root, key)
    return media


def _take_text_fields(row: dict[str, Any]) -> dict[str, Any]:
    fields, rest = split_fields(row)
    row.clear()
    row.update(rest)
    return fields


def _llava(row: dict[str, Any], root: str) -> dict[str, Any]:
    turns = row.pop("conversations", None)
    if not isinstance(turns, list) or not turns:
        raise RowError("llava: 'conversations' must be a non-empty list of turns")
    conversation, extra = [], {}
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"llava: turn {i} is not an object")
        if rest := {k: v for k, v in turn.items() if k not in ("from", "role", "value", "content")}:
            extra[str(i)] = rest
        speaker = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        role = _ROLES.get(str(speaker).lower())
        if role is None:
            raise RowError(f"llava: turn {i} has unknown speaker {_short(speaker)}")
        if not isinstance(value, str):
            raise RowError(f"llava: turn {i} has no text 'value'")
        conversation.append({"role": role, "text": _PLACEHOLDER.sub(" ", value).strip()})
    if extra:
        row["turn_extra"] = extra
    media = _take_media(row, root)
    fields = _take_text_fields(row)
    fields["conversation"] = conversation
    fields.setdefault("instruction", next((t["text"] for t in conversation if t["role"] == "user"), None))
    fields.setdefault("response", next((t["text"] for t in conversation if t["role"] == "assistant"), None))
    return _finish(fields, media, row, None)


def _pref_text(value: Any, what: str) -> tuple[str | None, str | None, bool]:
    """A chosen/rejected value -> (answer text, prompt, whether that says it all).

    Accepts a string or a message list (the last message is the answer, the last user message
    before it the prompt); a list with more than that plain (user, assistant) pair is not "all".
    """
    if value is None or isinstance(value, str):
        return value, None, True
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        msgs = [
            (_ROLES.get(str(m.get("role", m.get("from"))).lower()), m.get("content", m.get("value"))) for m in value
        ]
        answer = _str(msgs[-1][1], what)
        prompt = _str(next((t for r, t in reversed(msgs[:-1]) if r == "user"), None), what)
        plain = all(set(m) <= {"role", "from", "content", "value"} for m in value)
        return answer, prompt, plain and msgs == [("user", prompt), ("assistant", answer)]
    raise RowError(f"preference: '{what}' must be a string or a list of messages, got {_short(value)}")


def _preference(row: dict[str, Any], root: str) -> dict[str, Any]:
    pref: dict[str, Any] = dict.fromkeys(("prompt", "chosen", "rejected", "chosen_media", "rejected_media"))
    pref["candidates"] = None
    pref["prompt"] = _str(row.pop("prompt", None), "prompt")
    media = _take_media(row, root)
    if "chosen_image" in row or "rejected_image" in row:
        for side in ("chosen", "rejected"):
            if row.get(f"{side}_image") is None:
                raise RowError(f"preference: '{side}_image' is missing")
            pref[f"{side}_media"] = len(media)
            media.append(new_media("image", _uri(row.pop(f"{side}_image"), root, f"{side}_image"), role=side))
    if "candidates" in row:
        cands = row.pop("candidates")
        if not isinstance(cands, list) or not cands:
            raise RowError("preference: 'candidates' must be a non-empty list")
        pref["candidates"] = [_candidate(c, i, media, root) for i, c in enumerate(cands)]
        extra = {str(i): rest for i, c in enumerate(cands) if (rest := {k: v for k, v in c.items() if k not in _CAND})}
        if extra:
            row["candidate_extra"] = extra
    for side in ("chosen", "rejected"):
        if side in row:
            value = row.pop(side)
            pref[side], prompt, complete = _pref_text(value, side)
            pref["prompt"] = pref["prompt"] or prompt
            if not complete or (prompt is not None and prompt != pref["prompt"]):
                row[f"{side}_messages"] = value  # more than (prompt, answer): keep the whole dialogue
    has_pair = pref["chosen"] is not None and pref["rejected"] is not None
    has_media_pair = pref["chosen_media"] is not None
    if not (has_pair or has_media_pair or pref["candidates"]):
        raise RowError(
            "preference: needs 'chosen' and 'rejected', 'chosen_image' and 'rejected_image', or 'candidates'"
        )
    fields = _take_text_fields(row)
    fields["preference"] = pref
    texts = [pref["prompt"], pref["chosen"], pref["rejected"], *(c["text"] for c in pref["candidates"] or [])]
    return _finish(fields, media, row, Layout.PREFERENCE.value, text=any(texts))


_CAND = ("text", "image", "score")


def _candidate(c: Any, i: int, media: list[dict[str, Any]], root: str) -> dict[str, Any]:
    if not isinstance(c, dict):
        raise RowError(f"preference: candidate {i} is not an object")
    score = c.get("score")
    if score is not None and not isinstance(score, int | float):
        raise RowError(f"preference: candidate {i} score {_short(score)} is not a number")
    out = {"text": _str(c.get("text"), f"candidate {i} text"), "media_index": None,
           "score": float(score) if score is not None else None}  # fmt: skip
    if c.get("image") is not None:
        out["media_index"] = len(media)
        media.append(new_media("image", _uri(c["image"], root, f"candidate {i} image"), role="candidate"))
    if out["text"] is None and out["media_index"] is None:
        raise RowError(f"preference: candidate {i} has neither 'text' nor 'image'")
    return out


def _trajectory(row: dict[str, Any], root: str) -> dict[str, Any]:
    steps = row.pop("steps", None)
    if not isinstance(steps, list) or not steps:
        raise RowError("trajectory: 'steps' must be a non-empty list")
    media: list[dict[str, Any]] = []
    out_steps, extra = [], {}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise RowError(f"trajectory: step {i} is not an object")
        step = dict(step)
        obs = step.pop("observation", None)
        shot = step.pop("screenshot", None)
        if shot is None:
            shot = step.pop("image", None)
        index = None
        if shot is not None:
            index = len(media)
            media.append(new_media("image", _uri(shot, root, f"step {i} screenshot"), role="observation"))
        action = json.dumps(step.pop("action"), ensure_ascii=False, default=str) if "action" in step else None
        obs = obs if obs is None or isinstance(obs, str) else json.dumps(obs, ensure_ascii=False, default=str)
        out_steps.append({"observation": obs, "media_index": index, "action": action})
        if step:
            extra[str(i)] = step
    goal = row.pop("goal", None) or row.pop("instruction", None)
    interaction = {"goal": _str(goal, "goal"), "environment": _str(row.pop("environment", None), "environment"),
                   "steps": out_steps}  # fmt: skip
    if extra:
        row["step_extra"] = extra
    fields = _take_text_fields(row)
    fields["interaction"] = interaction
    # actions are text (JSON), so a trajectory always carries text
    return _finish(fields, media, row, Layout.TRAJECTORY.value, text=True)


def _obelics(row: dict[str, Any], root: str) -> dict[str, Any]:
    texts, images = row.pop("texts", None), row.pop("images", None)
    if not isinstance(texts, list) or not isinstance(images, list):
        raise RowError("obelics: 'texts' and 'images' must be lists")
    if len(texts) != len(images):
        raise RowError(f"obelics: 'texts' has {len(texts)} items but 'images' has {len(images)}")
    media: list[dict[str, Any]] = []
    segments, bodies = [], []
    for i, (t, im) in enumerate(zip(texts, images, strict=True)):
        if (t is None) == (im is None):
            raise RowError(f"obelics: position {i} must have exactly one of a text and an image")
        if t is not None:
            segments.append({"kind": "text", "text": _str(t, f"texts[{i}]"), "media_index": None})
            bodies.append(t)
        else:
            segments.append({"kind": "media", "text": None, "media_index": len(media)})
            media.append(new_media("image", _uri(im, root, f"images[{i}]"), role="inline"))
    fields = _take_text_fields(row)
    fields.update(interleaved=segments, text="\n\n".join(bodies) or None)
    return _finish(fields, media, row, Layout.INTERLEAVED.value if media else Layout.TEXT.value)


def _generic(row: dict[str, Any], root: str) -> dict[str, Any]:
    media = _take_media(row, root)
    fields = _take_text_fields(row)
    if not media and not has_text(fields):
        keys = sorted([*fields, *row])
        raise RowError(f"row fits no known format (no media and no text); keys: {keys}")
    return _finish(fields, media, row, None)


_PARSERS = {"llava": _llava, "preference": _preference, "trajectory": _trajectory, "obelics": _obelics,
            "generic": _generic}  # fmt: skip
