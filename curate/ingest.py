"""The ingest step the engine runs on workers: read one unit with its reader, then give every
record its ingest order, media hashes, content hash and id. Unreadable media quarantine the row
(or, inside an interleaved document, only mark that media item)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa

from operators.base import FATAL_ERRORS, Reader, mark
from operators.errors import media_failure
from operators.media_io import MediaUnavailable, sha256_media
from schemas.enums import Layout, ReasonCode, Status
from schemas.record import content_hash, record_id, set_media_error, to_table

__all__ = ["IngestFn", "finalize_record"]

log = logging.getLogger(__name__)
_ROW_BITS = 24


_REMOTE = ("http://", "https://")


def _hash_media(rec: dict[str, Any], operator: str) -> None:
    interleaved = rec.get("layout") == Layout.INTERLEAVED.value
    for m in rec.get("media") or []:
        if m.get("sha256") or m.get("error"):
            continue
        if (m.get("uri") or "").startswith(_REMOTE):
            # web media is never downloaded at ingest (no network, no hanging workers)
            detail = f"{m['uri']}: http(s) media is not downloaded by ingest"
            if interleaved:
                set_media_error(m, ReasonCode.REMOTE_MEDIA, detail)
            elif rec["status"] == Status.KEPT.value:
                mark(rec, Status.QUARANTINED, operator, ReasonCode.REMOTE_MEDIA, detail)
            continue
        try:
            m["sha256"], m["bytes"] = sha256_media(m)
        except MediaUnavailable as e:
            failure = media_failure(e)
            if interleaved:  # a document keeps its other parts; the item says what is wrong
                set_media_error(m, failure.reason, failure.detail)
                continue
            if rec["status"] == Status.KEPT.value:
                mark(rec, Status.QUARANTINED, operator, failure.reason, failure.detail)


def finalize_record(rec: dict[str, Any], *, unit: str, ordinal: int, row: int, reader: str) -> dict[str, Any]:
    rec["unit"] = unit
    rec["seq"] = (ordinal << _ROW_BITS) | min(row, (1 << _ROW_BITS) - 1)
    operator = f"ingest:{reader}"
    rec["lineage"] = [operator, *(rec.get("lineage") or [])]
    if rec["status"] == Status.KEPT.value:
        _hash_media(rec, operator)
    rec["content_hash"] = content_hash(rec)
    rec["id"] = record_id(rec["content_hash"], rec["source"], rec["locator"])
    return rec


class IngestFn:
    """Callable for ``map_batches``: a batch of units (one per block) -> their records."""

    def __init__(self, readers: dict[str, Reader]) -> None:
        self.readers = readers

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict[str, Any]] = []
        for unit in batch.to_pylist():
            reader = self.readers[unit["source"]]
            payload = json.loads(unit["payload"])
            n = 0
            try:
                for rec in reader.read(payload):
                    out.append(finalize_record(rec, unit=unit["unit"], ordinal=unit["ordinal"], row=n, reader=reader.name))
                    n += 1
            except FATAL_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - a unit that breaks mid-way loses nothing already read
                log.warning("reader %s failed on unit %s: %s", reader.name, unit["unit"], e)
                listed = payload.get("items") or payload.get("files") or [{}]
                first = listed[0].get("path") if isinstance(listed[0], dict) else listed[0]
                where = payload.get("file") or payload.get("path") or first or unit["unit"]
                rec = reader.broken(f"{where}@row{n}", ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
                out.append(finalize_record(rec, unit=unit["unit"], ordinal=unit["ordinal"], row=n, reader=reader.name))
        return to_table(out)
