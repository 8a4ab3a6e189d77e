"""WebDataset tar reader: one record per sample (the members sharing a key), streamed.

A member ``dir/abc.seg.jpg`` has key ``dir/abc`` (the path up to the first dot of the basename)
and extension ``seg.jpg``; its last part (``jpg``) picks how it is read:

- image/video/audio extensions -> a media ref: ``uri`` = the tar's absolute path (for a compressed
  shard, its decompressed copy: see below), ``member``, ``offset``/``length`` of the data inside
  the tar, ``bytes``, and ``sha256`` of the data (hashed here in bounded chunks while the stream
  passes by, so the engine need not read it again);
- ``txt`` / ``text`` -> caption (transcript when the sample's only media is audio, text when it has
  no media); ``caption`` -> caption; ``json`` -> a JSON object whose caption/text/alt_text/
  transcript/instruction/response/language/license keys map to fields, the rest to ``meta``;
- anything else (``cls``...) -> ``meta[<extension>]`` (UTF-8 text up to 64 KiB, else a size note).

Samples with neither media nor text, members without a ``key.ext`` name, and links are quarantined
(UNSUPPORTED_FORMAT). A truncated or corrupt tar keeps the samples completed before the damage and
yields one UNREADABLE record, locator ``<tar>@<byte offset where reading stopped>``, whose ``meta``
names the sample that was being read. Payload: ``{"file": <tar path>}``. Locator: ``<tar>#<key>``.

Shards: ``.tar``, and compressed ones, ``.tar.gz`` / ``.tgz``, ``.tar.zst`` / ``.tzst``, ``.tar.xz``,
``.tar.bz2`` (the compression is told by the file's first bytes, not its name: a gzipped file named
``.tar`` is read as what it is). The source path may be a file, a folder, a glob or a brace list
(``train-{000000..000099}.tar``, ``{train,val}/``), as WebDataset takes them.

Media of a compressed shard. A member of a compressed stream has no byte offset that a later stage
could seek to, and probe, dedup and the mixer's copy each open media again: decompressing the
shard on every open would cost O(shard) per read. So the reader streams a compressed shard once
(bounded memory), writes the decompressed tar to ``<artifacts>/<shard stem>-<16 hex>.tar`` as it
goes (``<artifacts>`` is ``OUT/artifacts/ingest/<source>``, set by the engine; the hex digest names
the shard's path, size and mtime, so a rerun rewrites the same file: to a temporary name, renamed
when the shard is done), and its media refs point into that copy (``uri`` = the copy, ``member``,
``offset``, ``length`` exactly as for a plain tar) while locators keep naming the compressed shard
(``<shard>#<key>``). The copy is the decompressed size of the shard, and it lives with the run's
outputs that reference it (delete it with them). A shard that inflates past
``max_decompressed_gb`` stops there (a guard against decompression bombs), and a damaged stream
keeps the samples before the damage, like a damaged tar (byte offsets then count the
decompressed stream).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import os
import posixpath
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from pydantic import Field

from operators.base import Params, Reader, Unit
from operators.confine import Confinement
from operators.ingest._common import MEDIA_EXTS, has_text, layout_of, list_files, modalities_of, split_fields
from operators.registry import register_reader
from schemas.enums import Modality, ReasonCode
from schemas.record import new_media

__all__ = ["SHARD_SUFFIXES", "WebDatasetParams", "WebDatasetReader", "compression_of", "split_member_name"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_META_CAP = 64 << 10
_TEXT_CAP = 16 << 20
_TEXT_EXTS = ("txt", "text", "caption")

#: names a folder or glob source is listed for (a file named directly is read whatever its name)
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.xz", ".tar.bz2")
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"))
_BZ2_BLOCKS = (b"1AY&SY", b"\x17rE8P\x90")  # after b"BZh" + level: a first block, or the end of an empty stream
#: what reading a damaged tar or compressed stream can raise
_READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


class WebDatasetParams(Params):
    hash_media: bool = Field(True, description="sha256 each media member while streaming (saves a second read)")
    max_decompressed_gb: float = Field(
        64, gt=0, description="a compressed shard that inflates past this many GiB stops there (unreadable row)"
    )


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


@dataclass
class _Progress:
    """Where the stream of one tar is: the header being read, the end of the last member, the open sample."""

    where: int = 0
    end: int = 0
    sample: _Sample | None = None


def compression_of(path: str) -> str | None:
    """``'gzip'``, ``'zstd'``, ``'xz'`` or ``'bz2'`` by the file's first bytes; None for anything else
    (a plain tar, or not a tar at all). Raises OSError when the file cannot be read."""
    with open(path, "rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    if head[257:262] == b"ustar":  # a tar header (its first member's name could start like anything)
        return None
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in _BZ2_BLOCKS:
        return "bz2"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


class _Copying:
    """The decompressed stream, read by ``tarfile`` front to back: every byte read is also written to
    the copy (a stream-mode tarfile only ever calls ``read``, even to skip data). A stream that
    breaks (damaged, truncated, past ``cap``) reads as ended, so that tarfile still yields the
    samples it holds; ``error`` keeps why."""

    def __init__(self, stream: IO[bytes], copy: IO[bytes], cap: int) -> None:
        self.stream, self.copy, self.cap, self.size = stream, copy, cap, 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            data = self.stream.read(size if size is not None and size >= 0 else _CHUNK)
        except _READ_ERRORS as e:
            self.error = e
            return b""
        if self.size + len(data) > self.cap:
            self.error = OSError(f"decompresses to more than {self.cap} bytes (max_decompressed_gb): stopped there")
            data = data[: self.cap - self.size]
        self.size += len(data)
        self.copy.write(data)
        return data

    def drain(self) -> None:
        """Read to the end of the stream (the tar's padding; gzip checks its CRC at the end)."""
        while self.read(_CHUNK):
            pass


class _Zstd:
    """A zstandard stream (every frame) whose errors are OSErrors. A stream cut short reads as
    ended, not as an error: the tar checks see what is missing (a member cut short, no
    end-of-archive marker)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as e:
            raise OSError(f"zstd: {e}") from e


@contextmanager
def _decompressing(raw: IO[bytes], codec: str) -> Iterator[IO[bytes]]:
    """``raw`` decompressed, read front to back (bounded memory)."""
    if codec == "zstd":
        yield _Zstd(raw)  # type: ignore[misc]
    elif codec == "gzip":
        with gzip.GzipFile(fileobj=raw) as stream:
            yield stream
    elif codec == "xz":
        with lzma.LZMAFile(raw) as stream:
            yield stream
    else:
        with bz2.BZ2File(raw) as stream:
            yield stream


def _plain_stem(name: str) -> str:
    base = os.path.basename(name)
    for sfx in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if base.lower().endswith(sfx):
            return base[: -len(sfx)] or "shard"
    return base


@register_reader
class WebDatasetReader(Reader[WebDatasetParams]):
    """WebDataset shards (.tar, .tar.gz/.tgz, .tar.zst): images, videos, audio with their captions and JSON metadata."""

    name: ClassVar[str] = "webdataset"
    produces: ClassVar[tuple[str, ...]] = ("image", "video", "audio", "text")

    def plan(self) -> Iterator[Unit]:
        for tar in list_files(self.path, SHARD_SUFFIXES):
            yield self.unit({"file": tar})

    @property
    def copies_dir(self) -> str:
        """Where the decompressed copies of compressed shards go: the engine's artifacts folder for
        this source (outside a run: the system's temporary folder)."""
        return self.artifacts_dir or os.path.join(tempfile.gettempdir(), "nmm-curate", "ingest", self.source)

    def confinement_for(self, payload: dict[str, Any]) -> Confinement:
        """The source's roots plus the folder of the decompressed copies its media refs point into."""
        base = self.confinement
        copies = os.path.realpath(self.copies_dir)
        if copies in base.roots:
            return base
        return Confinement([*base.roots, copies], base.schemes)

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        tar = payload["file"]
        try:
            codec = compression_of(tar)
        except OSError as e:
            yield self.broken(f"{tar}@0", ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
            return
        if codec is None:
            yield from self._read_plain(tar)
        else:
            yield from self._read_compressed(tar, codec)

    def _read_plain(self, tar: str) -> Iterator[dict[str, Any]]:
        at = _Progress()
        try:
            with open(tar, "rb") as f:
                yield from self._samples(tar, tar, f, at)
            problem = _tail_problem(tar, at.end)
            if problem:
                yield self.broken(f"{tar}@{at.end}", ReasonCode.UNREADABLE, problem)
        except _READ_ERRORS as e:
            yield self._stopped(tar, at, e)

    def _read_compressed(self, shard: str, codec: str) -> Iterator[dict[str, Any]]:
        """Stream a compressed shard once, writing the decompressed tar that its media refs point
        into; its records come after the copy has its final name (a stage may open them at once)."""
        st = os.stat(shard)
        key = hashlib.sha256(f"{os.path.abspath(shard)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
        copy = os.path.join(self.copies_dir, f"{_plain_stem(shard)}-{key}.tar")
        os.makedirs(self.copies_dir, exist_ok=True)
        part = f"{copy}.{uuid.uuid4().hex[:8]}.part"
        out: list[dict[str, Any]] = []
        at = _Progress()
        cap = int(self.params.max_decompressed_gb * (1 << 30))
        try:
            with open(shard, "rb") as raw, _decompressing(raw, codec) as stream, open(part, "wb") as f:
                copying = _Copying(stream, f, cap)
                error: BaseException | None = None
                try:
                    for rec in self._samples(shard, copy, copying, at, intact=lambda: copying.error is None):
                        out.append(rec)
                    copying.drain()
                except _READ_ERRORS as e:
                    error = e
            error = copying.error or error  # the stream's own error says more than the tar cut short
            if error is not None and copying.size == 0 and copying.error is None:
                error = OSError(f"the {codec} stream decodes to no data (empty, or cut short?)")
            if error is not None:
                out.append(self._stopped(shard, at, error, codec))
            elif problem := _tail_problem(part, at.end):
                out.append(self.broken(f"{shard}@{at.end}", ReasonCode.UNREADABLE, f"{problem} ({codec} stream)"))
            os.replace(part, copy)
        except _READ_ERRORS as e:  # the shard or the copy cannot be opened or written
            out.append(self._stopped(shard, at, e, codec))
        finally:
            if os.path.exists(part):
                os.unlink(part)
        yield from out

    def _samples(
        self, tar: str, uri: str, f: IO[bytes], at: _Progress, intact: Callable[[], bool] = lambda: True
    ) -> Iterator[dict[str, Any]]:
        """The records of one tar stream ``f``: locators name ``tar``, media refs point into ``uri``.
        When the stream broke (``intact()`` false), the last sample may miss members: it is left in
        ``at.sample`` for the UNREADABLE record to name, as when the tar itself breaks mid-sample."""
        with tarfile.open(fileobj=f, mode="r|") as tf:
            while (info := tf.next()) is not None:
                tf.members.clear()  # streaming: keep no member list (bounded memory)
                at.where = info.offset
                if info.isdir():
                    continue
                parts = split_member_name(info.name)
                if not info.isfile() or parts is None:
                    why = "not a regular file" if not info.isfile() else "member name has no key.extension shape"
                    yield self.broken(f"{tar}#{info.name}", ReasonCode.UNSUPPORTED_FORMAT, why)
                    continue
                key, ext = parts
                if at.sample is not None and at.sample.key != key:
                    yield self.isolated(f"{tar}#{at.sample.key}", lambda s=at.sample: self._finish(tar, s))
                    at.sample = None
                at.sample = at.sample or _Sample(key)
                self._add_member(uri, tf, info, ext, at.sample)
            at.end = tf.offset
        if at.sample is not None and intact():
            yield self.isolated(f"{tar}#{at.sample.key}", lambda s=at.sample: self._finish(tar, s))
            at.sample = None

    def _stopped(self, tar: str, at: _Progress, e: BaseException, codec: str | None = None) -> dict[str, Any]:
        """The UNREADABLE record of a tar whose reading stopped at ``at.where`` (or, when the tar
        ended early without an error of its own, after its last member)."""
        detail = f"{type(e).__name__}: {e}"
        if codec:
            detail += f" ({codec} stream; byte offsets count the decompressed tar)"
        meta = {"incomplete_key": at.sample.key, "members_read": at.sample.members} if at.sample else None
        where = max(at.where, at.end)
        log.warning("%s: stopped at byte %d: %s", tar, where, detail)
        return self.broken(f"{tar}@{where}", ReasonCode.UNREADABLE, detail, meta=meta)

    def _add_member(self, uri: str, tf: tarfile.TarFile, info: tarfile.TarInfo, ext: str, s: _Sample) -> None:
        kind = ext.rsplit(".", 1)[-1].lower()
        s.members.append(info.name)
        f = tf.extractfile(info)
        if f is None:  # pragma: no cover - regular files always have data
            return
        modality = MEDIA_EXTS.get(kind)
        if modality is not None:
            digest = _hash(f) if self.params.hash_media else None
            s.media.append(
                new_media(modality, uri, role="input", member=info.name, offset=info.offset_data,
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
