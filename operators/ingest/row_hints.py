"""What to tell a user whose manifest rows do not fit: the keys a row had, which of them look like
media paths that no format reads (``path``, ``file_name``, ``img``, ``image_path``, ``url`` to a
``.jpg``...), and the ``fields`` mapping that would read them.

- ``FIELD_TARGETS``: the row keys the formats read (what a ``fields`` mapping may rename to).
- ``media_like_keys(row)``: ``{key: modality}`` for keys that look like unread media references.
- ``suggest_fields(row, media)``: a mapping such as ``{"image": "path", "caption": "text"}``.
- ``fields_yaml(mapping)``: ``{image: path, caption: text}`` as it is written in a pipeline YAML.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlparse

from operators.ingest._common import TEXT_KEYS, modality_of_ext
from schemas.enums import Modality

__all__ = ["FIELD_TARGETS", "FORMAT_KEYS", "LABEL_KEYS", "fields_yaml", "media_like_keys", "suggest_fields"]

#: keys of the preference label of an ``answer1`` / ``answer2`` pair (the first one present is read)
LABEL_KEYS = ("preference", "label", "choice", "winner", "preferred")
MEDIA_KEYS = ("image", "images", "video", "videos", "audio", "audios")
#: what each format reads, for messages
FORMAT_KEYS = (
    "llava: conversations; preference: chosen+rejected, answer1+answer2 (+ prompt, + a label: "
    f"{'/'.join(LABEL_KEYS)}), chosen_image+rejected_image or candidates; trajectory: steps; "
    f"obelics: texts+images; generic: {'/'.join(MEDIA_KEYS)} and/or {'/'.join(TEXT_KEYS)}"
)
FIELD_TARGETS: tuple[str, ...] = tuple(
    sorted(
        {
            *MEDIA_KEYS,
            *TEXT_KEYS,
            "conversations",
            "prompt",
            "chosen",
            "rejected",
            "chosen_image",
            "rejected_image",
            "candidates",
            "answer1",
            "answer2",
            *LABEL_KEYS,
            "steps",
            "goal",
            "environment",
            "texts",
        }
    )
)

# Keys that name a media item outright (img, image_path, video_file, audio_url, wav...): read as
# media references whatever their value's extension.
_STRONG = re.compile(
    r"^(img|image|photo|picture|pic|video|vid|clip|audio|sound|speech|wav)s?"
    r"([_\-. ]?(path|file|filename|file_name|url|uri|src|loc|location|name|filepath|file_path))s?$",
    re.IGNORECASE,
)
_STRONG_BARE = {"img", "imgs", "photo", "photos", "picture", "pictures", "wav", "speech"}
# Keys that hold a path or URL to anything: media references when the value has a media extension.
_WEAK = {
    "path", "paths", "file", "files", "file_name", "filename", "file_path", "filepath", "url", "urls", "uri",
    "src", "location", "media", "media_path", "media_file", "media_url", "key", "name", "relative_path",
}  # fmt: skip
_MODALITY_WORDS = {"img": "image", "image": "image", "photo": "image", "picture": "image", "pic": "image",
                   "video": "video", "vid": "video", "clip": "video", "audio": "audio", "sound": "audio",
                   "speech": "audio", "wav": "audio"}  # fmt: skip
_TARGET = {Modality.IMAGE.value: "image", Modality.VIDEO.value: "video", Modality.AUDIO.value: "audio"}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):  # HF-style {"path": ..., "bytes": ...}
        return [v for v in (value.get("path"), value.get("url")) if isinstance(v, str)]
    return []


def _ext_modality(value: str) -> str | None:
    path = urlparse(value).path if "://" in value else value
    ext = os.path.splitext(path.strip())[1]
    return modality_of_ext(ext) if ext else None


def media_like_keys(row: dict[str, Any]) -> dict[str, str]:
    """``{key: modality}`` of the keys in ``row`` that look like media references."""
    out: dict[str, str] = {}
    for key, value in row.items():
        values = [v for v in _strings(value) if v.strip()]
        if not values or key in MEDIA_KEYS:
            continue
        by_ext = _ext_modality(values[0])
        low = key.lower()
        m = _STRONG.match(low)
        if m or low in _STRONG_BARE:
            word = m.group(1) if m else low.rstrip("s")
            out[key] = by_ext or _MODALITY_WORDS.get(word, "image")
        elif low in _WEAK and by_ext:
            out[key] = by_ext
        elif by_ext and key not in TEXT_KEYS and not any(c.isspace() for c in values[0].strip()):
            out[key] = by_ext  # any other key whose value is a media file name
    return out


def suggest_fields(row: dict[str, Any], media: dict[str, str]) -> dict[str, str]:
    """A ``fields`` mapping (record key -> manifest key) that reads ``media`` (from
    ``media_like_keys``) and the row's most likely caption or text."""
    mapping: dict[str, str] = {}
    for key, modality in media.items():
        mapping.setdefault(_TARGET.get(modality, "image"), key)
    texts = [k for k, v in row.items() if k not in media and isinstance(v, str) and " " in v.strip()]
    text_key = "text" if "text" in row and isinstance(row["text"], str) else (texts[0] if texts else None)
    if text_key is not None and not any(k in row for k in ("caption", "transcript", "alt_text")):
        if mapping:
            target = "transcript" if set(mapping) == {"audio"} else "caption"
            mapping[target] = text_key
        elif text_key != "text":
            mapping["text"] = text_key
    return mapping


def fields_yaml(mapping: dict[str, str]) -> str:
    """``{image: path, caption: text}``"""
    return "{" + ", ".join(f"{target}: {key}" for target, key in mapping.items()) + "}"
