"""Manifest readers: ``jsonl``, ``parquet`` and ``obelics`` (JSONL read as OBELICS documents).

All three share the row parser in ``manifest_rows``: one row -> one record, or one quarantined
record (BAD_MANIFEST_ROW, with the parse error and the raw row in ``meta["raw"]``, capped at
``RAW_CAP`` characters).

- ``jsonl`` units are byte ranges: ``{"file", "start", "end"}``, ``bytes_per_unit`` bytes each. A unit
  reads the lines whose first byte lies in [start, end), so every line is read exactly once.
  Locator: ``<file>:<byte offset of the line>``.
- A ``jsonl`` (or ``obelics``) file that holds one JSON array (``[{...}, {...}]``, compact or
  pretty-printed: ``json_array.is_json_array``) is read element by element with bounded memory:
  units ``{"file", "start", "end", "array": true}`` whose starts are element offsets about
  ``bytes_per_unit`` apart (found by one pass over a file larger than that while planning).
  Locator: ``<file>:<byte offset of the element>``. Where the file stops being a valid array,
  the rest of it is one quarantined record.
- ``parquet`` units are row groups: ``{"file", "row_group", "first_row"}``, read in Arrow batches.
  Locator: ``<file>:row<index of the row in the file>``. A file whose footer cannot be read is
  planned as one unit with ``row_group: null`` that yields one UNREADABLE record.

``path`` is a file, a folder (every ``*.jsonl`` / ``*.parquet`` inside, recursively) or a glob.
Relative media paths resolve against ``media_root`` (itself relative to the manifest's folder),
by default the manifest's own folder. Every local media path is checked for existence
(``media_check``): each record gets ``media_referenced`` / ``media_missing`` scores, and a unit
where most media are missing logs a warning with the ``media_root`` that would find them.
``fields`` renames a manifest's keys before parsing (``{image: path, caption: text}``).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator

from operators.base import Params, Reader, Unit
from operators.confine import Confinement
from operators.ingest._common import is_url, list_files
from operators.ingest.json_array import ArrayError, is_json_array, iter_elements, split_points
from operators.ingest.manifest_rows import RowError, RowOptions, parse_row
from operators.ingest.media_check import MediaTally, suggest_media_root
from operators.ingest.row_hints import FIELD_TARGETS
from operators.registry import register_reader
from schemas.enums import ReasonCode

__all__ = ["JsonlParams", "JsonlReader", "ObelicsParams", "ObelicsReader", "ParquetParams", "ParquetReader"]

log = logging.getLogger(__name__)

RAW_CAP = 4096
Format = Literal["auto", "llava", "preference", "trajectory", "obelics", "generic"]


class _RootParams(Params):
    media_root: str | None = Field(
        None,
        description="folder or URL that relative media paths resolve against, relative to the manifest's folder "
        "(default: the manifest's folder)",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="rename the manifest's keys before parsing, {record key: manifest key}: "
        "{image: path, caption: text} reads a row's 'path' as its image and 'text' as its caption",
    )
    unmapped_media: Literal["quarantine", "keep"] = Field(
        "quarantine",
        description="a row without media but with keys that look like media references no format reads "
        "(path, file_name, img, image_path, a url to a .jpg...): quarantine (the message names the fields "
        "mapping to set) or keep (read it without its media)",
    )

    @field_validator("fields")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(FIELD_TARGETS))
        if unknown:
            raise ValueError(
                f"unknown record key(s) {unknown}: a fields mapping renames to one of {list(FIELD_TARGETS)}"
            )
        sources = list(value.values())
        twice = sorted({k for k in sources if sources.count(k) > 1})
        if twice:
            raise ValueError(f"manifest key(s) {twice} mapped to more than one record key")
        if any(not k.strip() for k in sources):
            raise ValueError("a manifest key in fields is empty")
        return value


class _FormatParams(_RootParams):
    format: Format = Field("auto", description="row format; auto detects it per row")


class JsonlParams(_FormatParams):
    bytes_per_unit: int = Field(8 << 20, ge=1, description="bytes of manifest per ingest unit (default 8 MiB)")


class ObelicsParams(_RootParams):
    bytes_per_unit: int = Field(8 << 20, ge=1, description="bytes of manifest per ingest unit (default 8 MiB)")


class ParquetParams(_FormatParams):
    batch_size: int = Field(1024, ge=1, description="rows per Arrow batch while reading a row group")


def _is_array(path: str) -> bool:
    """Whether a manifest file holds one JSON array (only regular files are opened)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and is_json_array(path)
    except OSError:
        return False  # read() reports the file as unreadable


def _plain(value: Any) -> Any:
    """Row values made JSON-friendly for meta: bytes become a size note, containers recurse."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


MP = TypeVar("MP", bound=Params)


class _ManifestReader(Reader[MP]):
    produces: ClassVar[tuple[str, ...]] = ("text", "image", "video", "audio")
    #: row format forced by the reader (None: the ``format`` param)
    fixed_format: ClassVar[str | None] = None
    suffixes: ClassVar[tuple[str, ...]] = ()

    @property
    def row_format(self) -> str:
        return self.fixed_format or self.params.format

    def _files(self) -> list[str]:
        return list_files(self.path, self.suffixes)

    def media_root(self, manifest: str) -> str:
        root = self.params.media_root
        folder = os.path.dirname(manifest)
        if not root:
            return folder
        if is_url(root):
            return root
        return os.path.normpath(os.path.join(folder, os.path.expanduser(root)))

    def confinement_for(self, payload: dict[str, Any]) -> Confinement:
        root = self.media_root(payload["file"])
        if is_url(root) or not self.params.media_root:
            return self.confinement
        cache = self.__dict__.setdefault("_by_root", {})
        if root not in cache:
            base = self.confinement
            cache[root] = Confinement([*base.roots, root], base.schemes)
        return cache[root]

    @property
    def row_options(self) -> RowOptions:
        opts = self.__dict__.get("_row_options")
        if opts is None:
            p = self.params
            opts = RowOptions(
                fields=p.fields, unmapped_media=p.unmapped_media, params_at=f"sources.{self.source}.params"
            )
            self.__dict__["_row_options"] = opts
        return opts

    def _row(self, row: Any, locator: str, root: str, tally: MediaTally | None = None) -> dict[str, Any]:
        try:
            rec = self.record(locator, **parse_row(row, self.row_format, root, self.row_options))
        except Exception as e:  # noqa: BLE001 - a row the parser chokes on is quarantined, never lost
            if not isinstance(e, RowError):
                log.warning("unexpected error parsing %s", locator, exc_info=True)
            detail = str(e) if isinstance(e, RowError) else f"{type(e).__name__}: {e}"
            return self._bad(locator, detail, json.dumps(_plain(row), ensure_ascii=False, default=str))
        if tally is not None:
            tally.check(rec)
        return rec

    def _tally(self, payload: dict[str, Any]) -> MediaTally:
        return MediaTally(self.confinement_for(payload))

    def media_root_hint(self, manifest: str, missing: list[str]) -> str | None:
        """The ``media_root`` (relative to the manifest's folder) under which the ``missing`` media
        paths of ``manifest`` would exist, or None: for a summary that found most media missing."""
        return suggest_media_root(os.path.dirname(manifest), self.media_root(manifest), missing)

    def _warn_missing(self, tally: MediaTally, where: str, manifest: str, root: str) -> None:
        tally.warn(self.source, where, manifest, root, configured=bool(self.params.media_root))

    def _bad(self, locator: str, detail: str, raw: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"raw": raw[:RAW_CAP]}
        if len(raw) > RAW_CAP:
            meta["raw_truncated"] = True
        return self.broken(locator, ReasonCode.BAD_MANIFEST_ROW, detail, meta=meta)


@register_reader
class JsonlReader(_ManifestReader[JsonlParams]):
    """JSON Lines manifests (LLaVA, preference, trajectory, OBELICS or generic rows), split by bytes."""

    name: ClassVar[str] = "jsonl"
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".ndjson")

    def plan(self) -> Iterator[Unit]:
        step = self.params.bytes_per_unit
        for f in self._files():
            size = os.path.getsize(f)
            if size and _is_array(f):
                yield from self._plan_array(f, size, step)
                continue
            for start in range(0, size, step):
                yield self.unit({"file": f, "start": start, "end": min(start + step, size)})

    def _plan_array(self, f: str, size: int, step: int) -> Iterator[Unit]:
        if size > step:
            log.info("%s: a JSON array of %d bytes; finding element offsets to split it into units", f, size)
        starts = split_points(f, step) if size > step else [0]
        for start, end in zip(starts, [*starts[1:], size], strict=True):
            yield self.unit({"file": f, "start": start, "end": end, "array": True})

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        path, start, end = payload["file"], payload["start"], payload["end"]
        root = self.media_root(path)
        tally = self._tally(payload)
        rows = 0
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is done
        except OSError as e:
            yield self.broken(f"{path}:{start}", ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
            return
        with f:
            if payload.get("array"):
                for rec in self._array(f, path, start, end, root, tally):
                    rows += 1
                    yield rec
            else:
                if start > 0:  # skip the line that began before this unit (the previous unit reads it)
                    f.seek(start - 1)
                    f.readline()
                pos = f.tell()
                while pos < end:
                    line = f.readline()
                    if not line:
                        break
                    if line.strip():
                        rows += 1
                        yield self._line(line, f"{path}:{pos}", root, tally)
                    pos += len(line)
        log.debug("jsonl %s [%d, %d): %d rows", path, start, end, rows)
        self._warn_missing(tally, f"{path} bytes {start}-{end}", path, root)

    def _array(self, f: Any, path: str, start: int, end: int, root: str, tally: MediaTally) -> Iterator[dict[str, Any]]:
        """The elements of a JSON array that begin in [start, end); where the array breaks, one
        quarantined record for the rest of the file."""
        try:
            for offset, value in iter_elements(f, start, end):
                yield self._row(value, f"{path}:{offset}", root, tally)
        except ArrayError as e:
            f.seek(e.offset)
            raw = f.read(RAW_CAP + 1).decode("utf-8", "replace")
            rest = os.path.getsize(path) - e.offset
            yield self._bad(
                f"{path}:{e.offset}", f"invalid JSON array: {e}; the rest of the file ({rest} bytes) is not read", raw
            )

    def _line(self, line: bytes, locator: str, root: str, tally: MediaTally | None = None) -> dict[str, Any]:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            return self._bad(locator, f"invalid JSON: {e}", line.decode("utf-8", "replace").rstrip("\r\n"))
        return self._row(row, locator, root, tally)


@register_reader
class ObelicsReader(JsonlReader):
    """OBELICS-style interleaved documents (``texts`` / ``images`` lists) in JSON Lines."""

    Params: ClassVar[type[Params]] = ObelicsParams

    name: ClassVar[str] = "obelics"
    produces: ClassVar[tuple[str, ...]] = ("text", "image")
    fixed_format: ClassVar[str | None] = "obelics"


@register_reader
class ParquetReader(_ManifestReader[ParquetParams]):
    """Parquet manifests with the same row formats as ``jsonl``; one unit per row group."""

    name: ClassVar[str] = "parquet"
    suffixes: ClassVar[tuple[str, ...]] = (".parquet",)

    def plan(self) -> Iterator[Unit]:
        import pyarrow.parquet as pq

        for f in self._files():
            try:
                meta = pq.read_metadata(f)
            except Exception as e:  # noqa: BLE001 - read() reports the broken file as one record
                log.warning("cannot read the parquet footer of %s: %s", f, e)
                yield self.unit({"file": f, "row_group": None, "first_row": 0})
                continue
            first = 0
            for g in range(meta.num_row_groups):
                yield self.unit({"file": f, "row_group": g, "first_row": first})
                first += meta.row_group(g).num_rows

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        path, group, index = payload["file"], payload["row_group"], payload["first_row"]
        root = self.media_root(path)
        tally = self._tally(payload)
        try:
            pf = pq.ParquetFile(path)
            if group is None:
                raise OSError("the file has no readable parquet footer")
            for batch in pf.iter_batches(batch_size=self.params.batch_size, row_groups=[group]):
                for row in batch.to_pylist():
                    yield self._row(row, f"{path}:row{index}", root, tally)
                    index += 1
            self._warn_missing(tally, f"{path} row group {group}", path, root)
        except Exception as e:  # noqa: BLE001 - keep the rows read so far, quarantine the rest
            where = f"{path}:row{index}" if group is not None else path
            detail = f"row group {group}: {type(e).__name__}: {e}" if group is not None else f"{type(e).__name__}: {e}"
            yield self.broken(where, ReasonCode.UNREADABLE, detail)
