"""One manifest row (a dict from a JSONL line, a JSON array element or a Parquet row) -> record fields.

Shared by the ``jsonl``, ``parquet`` and ``obelics`` readers. ``parse_row`` returns the keyword
fields for ``Reader.record`` or raises ``RowError`` (the reader quarantines the row with
BAD_MANIFEST_ROW and the message). Keys a format does not map go to ``meta``.

Formats (``auto`` picks per row, in this order): ``llava`` (has ``conversations``), ``preference``
(``chosen``+``rejected``, ``answer1``+``answer2``, ``chosen_image``+``rejected_image`` or
``candidates``), ``trajectory`` (``steps``), ``obelics`` (``texts``+``images``), ``generic``
(anything else with media or text).

Preference rows whose ``chosen`` / ``rejected`` are whole dialogues (Anthropic-HH transcripts
``"\n\nHuman: ...\n\nAssistant: ..."`` or message lists, optionally after a dialogue ``prompt``)
are split: the last user turn becomes the ``prompt``, the two final assistant turns ``chosen``
and ``rejected``, and, when the shared turns are more than that one user prompt (earlier turns, a
system turn), all of them become ``conversation`` (the context, turns kept as turns).
``answer1`` / ``answer2`` pairs take their order from a label (``preference``, ``label``,
``choice``, ``winner`` or ``preferred``: 1 / 2, ``"answer1"`` / ``"answer2"``, ``"a"`` / ``"b"``);
a tie or no label makes them two ranked candidates (scores 0.5 each for a tie, none without a label).

``RowOptions.fields`` renames keys before anything else (``{image: path, caption: text}``: the
manifest's ``path`` is read as ``image``). A row that fits no format, or that has no media but keys
that look like media references no format reads (``path``, ``file_name``, ``img``, ``image_path``,
a ``url`` to a ``.jpg``...), is refused with a message naming its keys and the mapping to set
(``unmapped_media: keep`` reads such rows without their media, as text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from operators.ingest._common import has_text, layout_of, modalities_of, resolve_media_path, split_fields
from operators.ingest.dialogue import ROLES as _ROLES
from operators.ingest.dialogue import Turn, as_turns, pair_winner, split_pair
from operators.ingest.row_hints import FORMAT_KEYS, LABEL_KEYS, fields_yaml, media_like_keys, suggest_fields
from schemas.enums import Layout, Modality
from schemas.record import new_media

__all__ = ["FORMATS", "RowError", "RowOptions", "detect_format", "parse_row", "rename_fields"]

FORMATS = ("auto", "llava", "preference", "trajectory", "obelics", "generic")
_PLACEHOLDER = re.compile(r"\s*<(?:image|video|audio)>\s*")
_MEDIA_KEYS = (("image", Modality.IMAGE), ("images", Modality.IMAGE), ("video", Modality.VIDEO),
               ("videos", Modality.VIDEO), ("audio", Modality.AUDIO), ("audios", Modality.AUDIO))  # fmt: skip


class RowError(ValueError):
    """The row does not fit the format it was read as."""


class _NoFormat(RowError):
    """A generic row with neither media nor text (``parse_row`` words the message)."""


@dataclass(frozen=True)
class RowOptions:
    """How a reader's params shape the parsing of every row."""

    #: record key -> the manifest's key, applied before parsing (``{"image": "path"}``)
    fields: Mapping[str, str] = field(default_factory=dict)
    #: ``quarantine``: a row without media but with media-like keys is refused; ``keep``: read as it is
    unmapped_media: Literal["quarantine", "keep"] = "quarantine"
    #: where the user sets the params, for messages (``sources.captions.params``)
    params_at: str = "the reader's params"


_DEFAULT_OPTIONS = RowOptions()


def rename_fields(row: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """``row`` with each mapped manifest key renamed to its record key (swaps work). A value the
    mapping displaces is kept under ``fields_replaced``."""
    moved = {target: row.pop(source) for target, source in fields.items() if source in row}
    for target, value in moved.items():
        if target in row:
            row.setdefault("fields_replaced", {})[target] = row.pop(target)
        row[target] = value
    return row


def detect_format(row: dict[str, Any]) -> str:
    if "conversations" in row:
        return "llava"
    if ("chosen" in row and "rejected" in row) or ("chosen_image" in row and "rejected_image" in row):
        return "preference"
    if "answer1" in row and "answer2" in row:
        return "preference"
    if "candidates" in row:
        return "preference"
    if "steps" in row:
        return "trajectory"
    if "texts" in row and "images" in row:
        return "obelics"
    return "generic"


def parse_row(row: dict[str, Any], fmt: str, media_root: str, options: RowOptions | None = None) -> dict[str, Any]:
    """Record fields for one row. Raises RowError."""
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {type(row).__name__}")
    opts = options or _DEFAULT_OPTIONS
    row = {k: v for k, v in row.items() if v is not None}  # null = absent (Parquet has every column)
    if opts.fields:
        row = rename_fields(row, opts.fields)
    fmt = detect_format(row) if fmt == "auto" else fmt
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise RowError(f"unknown format '{fmt}'")
    try:
        out = parser(dict(row), media_root)
    except _NoFormat:
        raise RowError(_no_format_message(row, opts)) from None
    if opts.unmapped_media == "quarantine" and not out["media"] and isinstance(out["meta"], dict):
        suspects = media_like_keys(out["meta"])
        if suspects:
            raise RowError(_unmapped_message(row, suspects, opts))
    return out


def _no_format_message(row: dict[str, Any], opts: RowOptions) -> str:
    keys = sorted(row)
    if not keys:
        return "row fits no known format: it has no keys"
    msg = f"row fits no known format (no media and no text); keys: {keys}"
    mapping = suggest_fields(row, media_like_keys(row))
    if mapping:
        return f"{msg}; to read it set {opts.params_at}.fields: {fields_yaml(mapping)}"
    return f"{msg}; formats read {FORMAT_KEYS}; rename keys with {opts.params_at}.fields: {{record key: manifest key}}"


def _unmapped_message(row: dict[str, Any], suspects: dict[str, str], opts: RowOptions) -> str:
    names = ", ".join(f"'{k}' ({_short(row[k])})" for k in suspects)
    mapping = fields_yaml(suggest_fields(row, suspects))
    return (
        f"row has no media, but keys that look like media references no format reads: {names}; keys: {sorted(row)}; "
        f"to read them set {opts.params_at}.fields: {mapping} (or {opts.params_at}.unmapped_media: keep to read "
        "such rows without their media)"
    )


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
    An HH transcript is read as its message list.
    """
    if isinstance(value, str) and (turns := as_turns(value)) is not None:
        value = [{"role": role, "content": text} for role, text in turns]
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


def _last_user(turns: list[Turn]) -> str | None:
    return next((text for role, text in reversed(turns) if role == "user"), None)


def _turn_dicts(turns: list[Turn]) -> list[dict[str, str]]:
    return [{"role": role, "text": text} for role, text in turns]


def _context(value: Any) -> list[Turn] | None:
    """A ``prompt`` that is a dialogue (HH transcript or message list) as turns, without the empty
    assistant turn an HH prompt ends with; None for a plain prompt."""
    turns = as_turns(value)
    if turns is None:
        return None
    while turns and turns[-1] == ("assistant", ""):
        turns = turns[:-1]
    return turns


def _answer_turns(value: Any, context: list[Turn] | None) -> list[Turn] | None:
    """A chosen/rejected value as the whole dialogue it ends: its own turns, after the prompt's
    ``context`` when it has one (a plain string there is the assistant's answer)."""
    turns = as_turns(value)
    if context is None:
        return turns
    if turns is None:
        return [*context, ("assistant", value.strip())] if isinstance(value, str) else None
    return turns if turns[: len(context)] == context else [*context, *turns]


def _answer_pair(row: dict[str, Any], pref: dict[str, Any]) -> None:
    """``answer1`` / ``answer2`` (+ a label) -> chosen and rejected, or two candidates."""
    first, second = _str(row.pop("answer1"), "answer1"), _str(row.pop("answer2"), "answer2")
    label_key = next((k for k in LABEL_KEYS if k in row), None)
    label = row.pop(label_key) if label_key else None
    winner = pair_winner(label) if label_key else None
    if label_key is not None and winner is None:
        raise RowError(
            f"preference: '{label_key}' {_short(label)} does not say which answer is better: "
            "expected 1 or 2, 'answer1' / 'answer2', 'a' / 'b', or 'tie'"
        )
    if winner in (1, 2):
        pref["chosen"], pref["rejected"] = (first, second) if winner == 1 else (second, first)
        return
    score = 0.5 if winner == "tie" else None
    pref["candidates"] = [
        *(pref["candidates"] or []),
        *({"text": t, "media_index": None, "score": score} for t in (first, second)),
    ]


def _preference(row: dict[str, Any], root: str) -> dict[str, Any]:
    pref: dict[str, Any] = dict.fromkeys(("prompt", "chosen", "rejected", "chosen_media", "rejected_media"))
    pref["candidates"] = None
    prompt_value = row.pop("prompt", None)
    context = _context(prompt_value)
    conversation = context
    pref["prompt"] = _last_user(context) if context is not None else _str(prompt_value, "prompt")
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
    if "answer1" in row and "answer2" in row:
        _answer_pair(row, pref)
    sides = {side: row.pop(side) for side in ("chosen", "rejected") if side in row}
    if len(sides) == 2:
        dialogues = [_answer_turns(sides[side], context) for side in ("chosen", "rejected")]
        split = split_pair(*dialogues) if dialogues[0] is not None and dialogues[1] is not None else None
        if split is not None:  # one shared context, two final answers
            prefix, pref["chosen"], pref["rejected"] = split
            conversation = prefix
            pref["prompt"] = pref["prompt"] or _last_user(prefix)
            sides = {}
    for side, value in sides.items():
        pref[side], prompt, complete = _pref_text(value, side)
        pref["prompt"] = pref["prompt"] or prompt
        if not complete or (prompt is not None and prompt != pref["prompt"]):
            row[f"{side}_messages"] = value  # more than (prompt, answer): keep the whole dialogue
    has_pair = pref["chosen"] is not None and pref["rejected"] is not None
    has_media_pair = pref["chosen_media"] is not None
    if not (has_pair or has_media_pair or pref["candidates"]):
        raise RowError(
            "preference: needs 'chosen' and 'rejected', 'answer1' and 'answer2', 'chosen_image' and "
            "'rejected_image', or 'candidates'"
        )
    fields = _take_text_fields(row)
    fields["preference"] = pref
    if conversation and conversation != [("user", pref["prompt"])]:  # more context than the prompt itself
        fields["conversation"] = _turn_dicts(conversation)
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
        raise _NoFormat("no media and no text")
    return _finish(fields, media, row, None)


_PARSERS = {"llava": _llava, "preference": _preference, "trajectory": _trajectory, "obelics": _obelics,
            "generic": _generic}  # fmt: skip
