"""Manifest readers: ``jsonl``, ``parquet`` and ``obelics`` (JSONL read as OBELICS documents).

All three share the row parser in ``manifest_rows``: one row -> one record, or one quarantined
record (BAD_MANIFEST_ROW, with the parse error and the raw row in ``meta["raw"]``, capped at
``RAW_CAP`` characters).

- ``jsonl`` units are byte ranges: ``{"file", "start", "end"}``, ``bytes_per_unit`` bytes each. A unit
  reads the lines whose first byte lies in [start, end), so every line is read exactly once.
  Locator: ``<file>:<byte offset of the line>``.
- ``parquet`` units are row groups: ``{"file", "row_group", "first_row"}``, read in Arrow batches.
  Locator: ``<file>:row<index of the row in the file>``. A file whose footer cannot be read is
  planned as one unit with ``row_group: null`` that yields one UNREADABLE record.

``path`` is a file, a folder (every ``*.jsonl`` / ``*.parquet`` inside, recursively) or a glob.
Relative media paths resolve against ``media_root`` (itself relative to the manifest's folder),
by default the manifest's own folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from operators.base import Params, Reader, Unit
from operators.confine import Confinement
from operators.ingest._common import is_url, list_files
from operators.ingest.manifest_rows import RowError, parse_row
from operators.registry import register_reader
from schemas.enums import ReasonCode

__all__ = ["JsonlParams", "JsonlReader", "ObelicsParams", "ObelicsReader", "ParquetParams", "ParquetReader"]

log = logging.getLogger(__name__)

RAW_CAP = 4096
Format = Literal["auto", "llava", "preference", "trajectory", "obelics", "generic"]


class _RootParams(Params):
    media_root: str | None = Field(
        None, description="folder or URL that relative media paths resolve against (default: the manifest's folder)"
    )


class _FormatParams(_RootParams):
    format: Format = Field("auto", description="row format; auto detects it per row")


class JsonlParams(_FormatParams):
    bytes_per_unit: int = Field(8 << 20, ge=1, description="bytes of manifest per ingest unit (default 8 MiB)")


class ObelicsParams(_RootParams):
    bytes_per_unit: int = Field(8 << 20, ge=1, description="bytes of manifest per ingest unit (default 8 MiB)")


class ParquetParams(_FormatParams):
    batch_size: int = Field(1024, ge=1, description="rows per Arrow batch while reading a row group")


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

    def _row(self, row: Any, locator: str, root: str) -> dict[str, Any]:
        try:
            return self.record(locator, **parse_row(row, self.row_format, root))
        except Exception as e:  # noqa: BLE001 - a row the parser chokes on is quarantined, never lost
            if not isinstance(e, RowError):
                log.warning("unexpected error parsing %s", locator, exc_info=True)
            detail = str(e) if isinstance(e, RowError) else f"{type(e).__name__}: {e}"
            return self._bad(locator, detail, json.dumps(_plain(row), ensure_ascii=False, default=str))

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
            for start in range(0, size, step):
                yield self.unit({"file": f, "start": start, "end": min(start + step, size)})

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        path, start, end = payload["file"], payload["start"], payload["end"]
        root = self.media_root(path)
        rows = 0
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is done
        except OSError as e:
            yield self.broken(f"{path}:{start}", ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
            return
        with f:
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
                    yield self._line(line, f"{path}:{pos}", root)
                pos += len(line)
        log.debug("jsonl %s [%d, %d): %d rows", path, start, end, rows)

    def _line(self, line: bytes, locator: str, root: str) -> dict[str, Any]:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            return self._bad(locator, f"invalid JSON: {e}", line.decode("utf-8", "replace").rstrip("\r\n"))
        return self._row(row, locator, root)


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
        try:
            pf = pq.ParquetFile(path)
            if group is None:
                raise OSError("the file has no readable parquet footer")
            for batch in pf.iter_batches(batch_size=self.params.batch_size, row_groups=[group]):
                for row in batch.to_pylist():
                    yield self._row(row, f"{path}:row{index}", root)
                    index += 1
        except Exception as e:  # noqa: BLE001 - keep the rows read so far, quarantine the rest
            where = f"{path}:row{index}" if group is not None else path
            detail = f"row group {group}: {type(e).__name__}: {e}" if group is not None else f"{type(e).__name__}: {e}"
            yield self.broken(where, ReasonCode.UNREADABLE, detail)
