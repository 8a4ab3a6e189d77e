"""Helpers shared by the ingest readers (the extension tables are schemas.media_types'): file listing, media paths, layouts,
sidecar/field mapping. Nothing here decodes media."""

from __future__ import annotations

import glob
import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

from schemas.enums import Layout, Modality
from schemas.media_types import AUDIO_EXTS, IMAGE_EXTS, MEDIA_EXTS, VIDEO_EXTS, modality_of_ext
from schemas.record import TEXT_FIELDS

__all__ = [
    "AUDIO_EXTS",
    "IMAGE_EXTS",
    "MEDIA_EXTS",
    "TEXT_KEYS",
    "VIDEO_EXTS",
    "chunked",
    "has_text",
    "is_url",
    "layout_of",
    "list_files",
    "load_json_sidecar",
    "modalities_of",
    "modality_of_ext",
    "resolve_media_path",
    "split_fields",
]

#: source keys that map one-to-one onto record fields (when their value is a string)
TEXT_KEYS: tuple[str, ...] = (
    "caption",
    "alt_text",
    "instruction",
    "response",
    "transcript",
    "text",
    "language",
    "license",
)


def is_url(uri: str) -> bool:
    """An fsspec/http URL (``scheme://...``) rather than a local path."""
    return "://" in uri


def resolve_media_path(value: str, root: str) -> str:
    """A media reference from a manifest or document -> an absolute path, or the URL unchanged.

    Relative paths resolve against ``root`` (a local folder or a URL prefix); absolute paths and
    URLs are kept (paths normalised).
    """
    value = value.strip()
    if is_url(value):
        return value
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return os.path.normpath(value)
    if is_url(root):
        return posixpath.join(root.rstrip("/") + "/", value)
    return os.path.normpath(os.path.join(root, value))


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _walk(root: str, suffixes: tuple[str, ...] | None, recursive: bool) -> Iterator[str]:
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if _visible(d)) if recursive else []
        for f in sorted(files):
            if _visible(f) and (suffixes is None or f.lower().endswith(suffixes)):
                yield os.path.join(dirpath, f)


def list_files(path: str, suffixes: Iterable[str] | None = None, *, recursive: bool = True) -> list[str]:
    """The input files of a source, sorted: a file as given; a folder walked (hidden names
    skipped, ``suffixes`` filtered, case-insensitive); a glob's matching files (folders among
    the matches walked). Raises FileNotFoundError when the path names nothing at all."""
    sfx = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        return sorted(_walk(path, sfx, recursive))
    if os.path.isfile(path):
        return [path]
    matches = sorted(glob.glob(path, recursive=True))
    if not matches:
        raise FileNotFoundError(f"{path}: no such file or folder, and no glob match")
    out: set[str] = set()
    for m in matches:
        if os.path.isdir(m):
            out.update(_walk(m, sfx, recursive))
        elif os.path.isfile(m):
            out.add(m)
    return sorted(out)


def chunked(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def split_fields(data: dict[str, Any], keys: Iterable[str] = TEXT_KEYS) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a source dict into record fields (string values of ``keys``) and meta (the rest)."""
    fields: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    wanted = set(keys)
    for k, v in data.items():
        if k in wanted and isinstance(v, str):
            fields[k] = v
        else:
            meta[k] = v
    return fields, meta


def load_json_sidecar(raw: bytes) -> dict[str, Any]:
    """A JSON sidecar's bytes as a dict. Raises ValueError (with the reason) when it is not a JSON
    object, RecursionError when it nests too deep."""
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def has_text(fields: dict[str, Any]) -> bool:
    """Whether record fields carry any text (a text field or a conversation)."""
    return any(fields.get(k) for k in TEXT_FIELDS) or bool(fields.get("conversation"))


def modalities_of(media: list[dict[str, Any]], text: bool) -> list[str]:
    """Sorted unique modalities of a sample's media, plus ``text`` when it carries text."""
    mods = {m["modality"] for m in media}
    if text:
        mods.add(Modality.TEXT.value)
    return sorted(mods)


def layout_of(media: list[dict[str, Any]], text: bool) -> str:
    """Layout from media and text: one image (+text) -> image(-text), several images ->
    multi-image-text, video/audio likewise, mixed media kinds -> interleaved, none -> text."""
    kinds = {m["modality"] for m in media}
    if not kinds:
        return Layout.TEXT.value
    if len(kinds) > 1:
        return Layout.INTERLEAVED.value
    kind = kinds.pop()
    if kind == Modality.IMAGE.value and len(media) > 1:
        return Layout.MULTI_IMAGE_TEXT.value
    return f"{kind}-text" if text else kind
