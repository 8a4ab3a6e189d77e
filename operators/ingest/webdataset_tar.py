"""WebDataset tar reader: one record per sample (the members sharing a key), streamed.

A member ``dir/abc.seg.jpg`` has key ``dir/abc`` (the path up to the first dot of the basename)
and extension ``seg.jpg``; its last part (``jpg``) picks how it is read:

- image/video/audio extensions -> a media ref: ``uri`` = the tar's absolute path, ``member``,
  ``offset``/``length`` of the data inside the tar, ``bytes``, and ``sha256`` of the data (hashed
  here in bounded chunks while the stream passes by, so the engine need not read it again);
- ``txt`` / ``text`` -> caption (transcript when the sample's only media is audio, text when it has
  no media); ``caption`` -> caption; ``json`` -> a JSON object whose caption/text/alt_text/
  transcript/instruction/response/language/license keys map to fields, the rest to ``meta``;
- anything else (``cls``...) -> ``meta[<extension>]`` (UTF-8 text up to 64 KiB, else a size note).

Samples with neither media nor text, members without a ``key.ext`` name, and links are quarantined
(UNSUPPORTED_FORMAT). A truncated or corrupt tar keeps the samples completed before the damage and
yields one UNREADABLE record, locator ``<tar>@<byte offset where reading stopped>``, whose ``meta``
names the sample that was being read. Payload: ``{"file": <tar path>}``. Locator: ``<tar>#<key>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import tarfile
from collections.abc import Iterator
from typing import IO, Any, ClassVar

from pydantic import Field

from operators.base import Params, Reader, Unit
from operators.ingest._common import MEDIA_EXTS, has_text, layout_of, list_files, modalities_of, split_fields
from operators.registry import register_reader
from schemas.enums import Modality, ReasonCode
from schemas.record import new_media

__all__ = ["WebDatasetParams", "WebDatasetReader", "split_member_name"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_META_CAP = 64 << 10
_TEXT_CAP = 16 << 20
_TEXT_EXTS = ("txt", "text", "caption")


class WebDatasetParams(Params):
    hash_media: bool = Field(True, description="sha256 each media member while streaming (saves a second read)")


def split_member_name(name: str) -> tuple[str, str] | None:
    """``'dir/abc.seg.jpg'`` -> ``('dir/abc', 'seg.jpg')``; None when the name has no key.ext shape."""
    base = posixpath.basename(name)
    if base.startswith(".") or "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return name[: len(name) - len(base)] + stem, ext


class _Sample:
    def __init__(self, key: str) -> None:
        self.key = key
        self.media: list[dict[str, Any]] = []
        self.texts: list[tuple[str, str]] = []  # (extension, text)
        self.json: list[tuple[str, bytes]] = []
        self.meta: dict[str, Any] = {}
        self.members: list[str] = []


@register_reader
class WebDatasetReader(Reader[WebDatasetParams]):
    """WebDataset shards (.tar): images, videos, audio with their captions and JSON metadata."""

    name: ClassVar[str] = "webdataset"
    produces: ClassVar[tuple[str, ...]] = ("image", "video", "audio", "text")

    def plan(self) -> Iterator[Unit]:
        for tar in list_files(self.path, (".tar",)):
            yield self.unit({"file": tar})

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        tar = payload["file"]
        sample: _Sample | None = None
        where = 0
        try:
            with open(tar, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tf:
                while (info := tf.next()) is not None:
                    tf.members.clear()  # streaming: keep no member list (bounded memory)
                    where = info.offset
                    if info.isdir():
                        continue
                    parts = split_member_name(info.name)
                    if not info.isfile() or parts is None:
                        why = "not a regular file" if not info.isfile() else "member name has no key.extension shape"
                        yield self.broken(f"{tar}#{info.name}", ReasonCode.UNSUPPORTED_FORMAT, why)
                        continue
                    key, ext = parts
                    if sample is not None and sample.key != key:
                        yield self.isolated(f"{tar}#{sample.key}", lambda s=sample: self._finish(tar, s))
                        sample = None
                    sample = sample or _Sample(key)
                    self._add_member(tar, tf, info, ext, sample)
                end = tf.offset
            if sample is not None:
                yield self.isolated(f"{tar}#{sample.key}", lambda s=sample: self._finish(tar, s))
                sample = None
            problem = _tail_problem(tar, end)
            if problem:
                yield self.broken(f"{tar}@{end}", ReasonCode.UNREADABLE, problem)
        except (tarfile.TarError, OSError, EOFError) as e:
            detail = f"{type(e).__name__}: {e}"
            meta = {"incomplete_key": sample.key, "members_read": sample.members} if sample else None
            log.warning("%s: stopped at byte %d: %s", tar, where, detail)
            yield self.broken(f"{tar}@{where}", ReasonCode.UNREADABLE, detail, meta=meta)

    def _add_member(self, tar: str, tf: tarfile.TarFile, info: tarfile.TarInfo, ext: str, s: _Sample) -> None:
        kind = ext.rsplit(".", 1)[-1].lower()
        s.members.append(info.name)
        f = tf.extractfile(info)
        if f is None:  # pragma: no cover - regular files always have data
            return
        modality = MEDIA_EXTS.get(kind)
        if modality is not None:
            digest = _hash(f) if self.params.hash_media else None
            s.media.append(
                new_media(modality, tar, role="input", member=info.name, offset=info.offset_data,
                          length=info.size, bytes=info.size, sha256=digest)
            )  # fmt: skip
            return
        cap = _TEXT_CAP if kind in (*_TEXT_EXTS, "json") else _META_CAP
        if info.size > cap:
            s.meta[ext] = f"<{info.size} bytes, not read>"
            return
        data = f.read()
        if kind == "json":
            s.json.append((ext, data))
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            s.meta[ext] = f"<{info.size} bytes, not UTF-8>"
            return
        if kind in _TEXT_EXTS:
            s.texts.append((kind, text.strip()))
        else:
            s.meta[ext] = text.strip()

    def _finish(self, tar: str, s: _Sample) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        meta = dict(s.meta)
        media_kinds = {m["modality"] for m in s.media}
        for kind, text in s.texts:
            if kind == "caption":
                target = "caption"
            elif not s.media:
                target = "text"
            else:
                target = "transcript" if media_kinds == {Modality.AUDIO.value} else "caption"
            if text and target not in fields:
                fields[target] = text
            elif text:
                meta[kind] = text
        for ext, data in s.json:
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError) as e:
                meta[f"{ext}_error"] = f"invalid JSON: {e}"
                meta[ext] = data.decode("utf-8", "replace")[:_META_CAP]
                continue
            if not isinstance(obj, dict):
                meta[ext] = obj
                continue
            mapped, rest = split_fields(obj)
            meta.update(rest)
            for k, v in mapped.items():
                if v.strip() and k not in fields:
                    fields[k] = v
                elif v.strip():
                    meta[f"json_{k}"] = v
        locator = f"{tar}#{s.key}"
        license = fields.pop("license", None)
        text = has_text(fields)
        if not s.media and not text:
            detail = f"sample has no media and no text (members: {s.members})"
            return self.broken(locator, ReasonCode.UNSUPPORTED_FORMAT, detail, meta=meta or None)
        rec = self.record(
            locator,
            media=s.media,
            modalities=modalities_of(s.media, text),
            layout=layout_of(s.media, text),
            meta=meta or None,
            **fields,
        )
        if license:
            rec["license"] = license
        return rec


def _hash(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _tail_problem(tar: str, end: int) -> str | None:
    """After the last member: the rest of the file must be the zero blocks that end a tar."""
    with open(tar, "rb") as f:
        f.seek(end)
        seen = 0
        while chunk := f.read(_CHUNK):
            if chunk.strip(b"\0"):
                return f"data that is not a tar header at byte {end} (corrupt member header?)"
            seen += len(chunk)
    if seen < tarfile.BLOCKSIZE:
        return f"no end-of-archive marker after byte {end} (truncated tar?)"
    return None
