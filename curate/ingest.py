"""The ingest step the engine runs on workers: read one unit with its reader, then give every
record its ingest order, media hashes, content hash and id. Unreadable media quarantine the row
(or, inside an interleaved document, only mark that media item)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa

from operators.base import FATAL_ERRORS, Reader, mark
from operators.confine import Confinement
from operators.errors import SkipSample, media_failure
from operators.media_io import sha256_media
from schemas.enums import Layout, ReasonCode, Status
from schemas.record import content_hash, record_id, set_media_error, to_table
from schemas.text import repair_text, repaired

__all__ = ["IngestFn", "finalize_record"]

log = logging.getLogger(__name__)
_ROW_BITS = 24


def _refuse(rec: dict[str, Any], m: dict[str, Any], failure: SkipSample, operator: str, interleaved: bool) -> None:
    if interleaved:  # a document keeps its other parts; the item says what is wrong
        set_media_error(m, failure.reason, failure.detail)
    elif rec["status"] == Status.KEPT.value:
        mark(rec, Status.QUARANTINED, operator, failure.reason, failure.detail)


def _hash_media(rec: dict[str, Any], operator: str, confinement: Confinement) -> None:
    """sha256 and size of every media item, read only where the source may read (``confinement``)."""
    interleaved = rec.get("layout") == Layout.INTERLEAVED.value
    for m in rec.get("media") or []:
        if m.get("error"):
            continue
        refused = confinement.check(m.get("uri") or "")
        if refused is not None:  # never opened: outside the roots, or a scheme the source does not allow
            _refuse(rec, m, refused, operator, interleaved)
            continue
        if m.get("sha256"):
            continue
        try:
            m["sha256"], m["bytes"] = sha256_media(m)
        except FATAL_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read one item is that item's reason
            _refuse(rec, m, media_failure(e), operator, interleaved)


def finalize_record(
    rec: dict[str, Any], *, unit: str, ordinal: int, row: int, reader: str, confinement: Confinement | None = None
) -> dict[str, Any]:
    """Ingest order, lineage, confined media hashes, valid text, content hash and id of one record."""
    rec["unit"] = unit
    rec["seq"] = (ordinal << _ROW_BITS) | min(row, (1 << _ROW_BITS) - 1)
    operator = f"ingest:{reader}"
    rec["lineage"] = [operator, *(rec.get("lineage") or [])]
    bad_text = repair_text(rec)
    if bad_text and rec["status"] == Status.KEPT.value:
        mark(rec, Status.QUARANTINED, operator, ReasonCode.INVALID_TEXT, bad_text)
    if rec["status"] == Status.KEPT.value:
        _hash_media(rec, operator, confinement or Confinement([]))
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
            confinement = reader.confinement_for(payload)
            n = 0
            try:
                for rec in reader.read(payload):
                    out.append(_finalized(rec, unit, n, reader, confinement))
                    n += 1
            except FATAL_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - a reader that breaks mid-unit loses nothing already read
                log.warning("reader %s failed on unit %s: %s", reader.name, unit["unit"], e)
                listed = payload.get("items") or payload.get("files") or [{}]
                first = listed[0].get("path") if isinstance(listed[0], dict) else listed[0]
                where = payload.get("file") or payload.get("path") or first or unit["unit"]
                rec = reader.broken(repaired(f"{where}@row{n}"), ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
                out.append(_finalized(rec, unit, n, reader, confinement))
        return to_table(out)


def _finalized(rec: dict[str, Any], unit: dict[str, Any], n: int, reader: Reader, confinement: Confinement) -> dict[str, Any]:
    """``finalize_record``, or, when that fails on this record, a quarantined record in its place."""
    where: dict[str, Any] = dict(unit=unit["unit"], ordinal=unit["ordinal"], row=n, reader=reader.name)
    try:
        return finalize_record(rec, **where, confinement=confinement)
    except FATAL_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - this record only; its neighbours go on
        locator = repaired(str(rec.get("locator") or f"{unit['unit']}@row{n}"))
        return finalize_record(reader.broken(locator, ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}"), **where)
