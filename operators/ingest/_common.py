"""Helpers shared by the ingest readers (the extension tables are schemas.media_types'): file listing
(folders, globs, brace lists), media paths, layouts, sidecar/field mapping. Nothing here decodes media."""

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
    "NothingToRead",
    "VIDEO_EXTS",
    "chunked",
    "expand_braces",
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


class NothingToRead(FileNotFoundError):
    """A source path that names a folder or glob holding no input file (``list_files``): what
    ``Reader.plan_checked`` turns into an ``EmptySourceError`` unless the source allows empty."""


def expand_braces(path: str) -> list[str]:
    """Brace expansion as the shell and WebDataset do it: ``train-{000000..000099}.tar`` -> 100
    names (zero padding kept, ``{0..10..2}`` steps), ``{a,b}/x`` -> ``a/x``, ``b/x``. A path
    without a brace list, a path that exists as written, or unbalanced braces: the path itself."""
    if "{" not in path or os.path.exists(os.path.expanduser(path)):
        return [path]
    from braceexpand import UnbalancedBracesError, braceexpand

    try:
        return list(braceexpand(path, escape=False))
    except UnbalancedBracesError:
        return [path]


def _walk(root: str, suffixes: tuple[str, ...] | None, recursive: bool) -> Iterator[str]:
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if _visible(d)) if recursive else []
        for f in sorted(files):
            if _visible(f) and (suffixes is None or f.lower().endswith(suffixes)):
                yield os.path.join(dirpath, f)


def _holdings(folders: list[str], recursive: bool) -> str:
    """What a listing found instead: ``'3 files (.zip: 2, .txt: 1)'`` or ``'no file'``, and the hidden names skipped."""
    exts: dict[str, int] = {}
    hidden = 0
    for root in folders:
        for _, dirs, files in os.walk(root):
            hidden += sum(not _visible(n) for n in (*dirs, *files))
            dirs[:] = [d for d in dirs if _visible(d)] if recursive else []
            for f in files:
                if _visible(f):
                    ext = os.path.splitext(f)[1].lower() or "(no extension)"
                    exts[ext] = exts.get(ext, 0) + 1
    total = sum(exts.values())
    top = sorted(exts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{e}: {n}" for e, n in top[:8]) + (", ..." if len(top) > 8 else "")
    found = f"{total} file{'s' * (total != 1)} ({shown})" if total else "no file"
    return found + (f" and {hidden} hidden name{'s' * (hidden != 1)} (skipped)" if hidden else "")


def _nothing_to_read(path: str, sfx: tuple[str, ...] | None, folders: list[str], recursive: bool) -> NothingToRead:
    wanted = "any file" if sfx is None else "names ending in " + ", ".join(sfx)
    where = "in sub-folders too" if recursive else "not in sub-folders"
    if folders:
        there = f"{'the folder holds' if len(folders) == 1 else f'the {len(folders)} folders hold'} {_holdings(folders, recursive)}"
    else:
        there = "the pattern matches no file or folder"
    return NothingToRead(f"{path}: no input file (looked for {wanted}, case-insensitive, {where}); {there}")


def _list_one(path: str, sfx: tuple[str, ...] | None, recursive: bool, out: set[str], folders: list[str]) -> bool:
    """Add what one (brace-expanded) path names to ``out``; False when it names nothing at all."""
    if os.path.isdir(path):
        folders.append(path)
        out.update(_walk(path, sfx, recursive))
        return True
    if os.path.isfile(path):
        out.add(path)
        return True
    if not glob.has_magic(path):
        return False
    for m in glob.glob(path, recursive=True):
        if os.path.isdir(m):
            folders.append(m)
            out.update(_walk(m, sfx, recursive))
        elif os.path.isfile(m):
            out.add(m)
    return True


def list_files(path: str, suffixes: Iterable[str] | None = None, *, recursive: bool = True) -> list[str]:
    """The input files of a source, sorted: a file as given; a folder walked (hidden names
    skipped, ``suffixes`` filtered, case-insensitive); a glob's matching files (folders among
    the matches walked); a brace list (``shard-{000..009}.tar``, ``{train,val}/``) each of its
    names so. Raises FileNotFoundError when a name without glob characters names nothing (in a
    brace list: which of them), and NothingToRead (a FileNotFoundError) when the path names
    folders or a glob but no input file is among them (the message says what was looked for and
    what is there instead)."""
    sfx = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    names = [os.path.abspath(os.path.expanduser(p)) for p in expand_braces(path)]
    out: set[str] = set()
    folders: list[str] = []
    missing = [n for n in names if not _list_one(n, sfx, recursive, out, folders)]
    shown = os.path.abspath(os.path.expanduser(path))
    if missing and len(names) == 1:
        raise FileNotFoundError(f"{shown}: no such file or folder")
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        verb = "does" if len(missing) == 1 else "do"
        raise FileNotFoundError(
            f"{shown}: {len(missing)} of the {len(names)} names in the brace list {verb} not exist: {listed}"
        )
    if not out:
        raise _nothing_to_read(shown, sfx, sorted(set(folders)), recursive)
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
