"""The ingest step the engine runs on workers: read one unit with its reader, then give every
record its ingest order, media hashes, content hash and id. Unreadable media quarantine the row
(or, inside an interleaved document, only mark that media item).

The driver side of a unit lives here too (``unit_fingerprint``, ``planned_inputs``,
``describe_unit``): what the engine needs to know of a unit's payload without any reader's help,
to resume only what changed and to check the ledger against what was planned.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tarfile
from functools import lru_cache
from typing import Any

import pyarrow as pa

from operators.base import FATAL_ERRORS, Reader, mark
from operators.confine import Confinement
from operators.errors import SkipSample, media_failure
from operators.media_io import sha256_media
from schemas.enums import Layout, ReasonCode, Status
from schemas.hashing import fingerprint
from schemas.record import content_hash, record_id, set_media_error, to_table
from schemas.text import repair_text, repaired

__all__ = [
    "IngestFn", "describe_unit", "finalize_record", "planned_inputs", "unit_files", "unit_fingerprint", "unit_ordinal",
    "with_ordinal",
]  # fmt: skip

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


def unit_ordinal(seq: int) -> int:
    """The plan position of the unit a ``seq`` belongs to."""
    return seq >> _ROW_BITS


def with_ordinal(table: pa.Table, ordinal: int) -> pa.Table:
    """A unit's rows with their ``seq`` moved to plan position ``ordinal`` (row numbers kept): what
    ingest would have given them at that position."""
    import numpy as np
    import pyarrow.compute as pc

    rows = pc.fill_null(table["seq"], 0).to_numpy().astype(np.int64) & ((1 << _ROW_BITS) - 1)
    seq = pa.array((np.int64(ordinal) << _ROW_BITS) | rows, type=table.schema.field("seq").type)
    return table.set_column(table.schema.get_field_index("seq"), "seq", seq)


def finalize_record(
    rec: dict[str, Any], *, unit: str, ordinal: int, row: int, reader: str, confinement: Confinement
) -> dict[str, Any]:
    """Ingest order, lineage, confined media hashes, valid text, content hash and id of one record
    (``confinement``: where its source may read, ``Reader.confinement_for(payload)``)."""
    rec["unit"] = unit
    rec["seq"] = (ordinal << _ROW_BITS) | min(row, (1 << _ROW_BITS) - 1)
    operator = f"ingest:{reader}"
    rec["lineage"] = [operator, *(rec.get("lineage") or [])]
    bad_text = repair_text(rec)
    if bad_text and rec["status"] == Status.KEPT.value:
        mark(rec, Status.QUARANTINED, operator, ReasonCode.INVALID_TEXT, bad_text)
    if rec["status"] == Status.KEPT.value:
        _hash_media(rec, operator, confinement)
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
        broken = reader.broken(locator, ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
        return finalize_record(broken, **where, confinement=confinement)


# -- the driver side: what a unit's payload holds ------------------------------------------------
#
# The readers' payloads say what a unit reads (operators/ingest/*): ``{"items": [{"path", ...}]}``
# (media folders: one record per item), ``{"files": [...]}`` (HTML: one document per file),
# ``{"file", "start", "end"}`` (JSONL: the lines that start in the byte range), ``{"file",
# "row_group", "first_row"}`` (Parquet: the rows of one row group) and ``{"file"}`` (a WebDataset
# tar: one record per sample key, and one per member that is not a ``key.ext`` regular file).


def _paths(value: Any) -> list[str]:
    """Every absolute path string anywhere in a payload."""
    if isinstance(value, str):
        return [value] if os.path.isabs(value) else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _paths(v)]
    return []


def unit_files(payload: dict[str, Any]) -> list[tuple[str, int | None, int | None]]:
    """``(path, size, mtime_ns)`` of every file a unit's payload names, sorted (``None, None``
    for a path that does not exist now). Folders (``site_root``) are not inputs and are left out;
    a path is stat'ed, never opened."""
    out: dict[str, tuple[str, int | None, int | None]] = {}
    for p in _paths(payload):
        if p in out:
            continue
        try:
            st = os.stat(p)
        except (OSError, ValueError):  # ValueError: a NUL in the name
            out[p] = (p, None, None)
            continue
        if not stat.S_ISDIR(st.st_mode):
            out[p] = (p, st.st_size, st.st_mtime_ns)
    return [out[p] for p in sorted(out)]


def unit_fingerprint(payload: dict[str, Any]) -> str:
    """A digest of a unit's payload and of the path, size and mtime of every file it names: a
    unit whose fingerprint changed must be read again."""
    return fingerprint({"payload": payload, "files": unit_files(payload)})


def describe_unit(payload: dict[str, Any]) -> str:
    """A unit in a few words, for people (the summary's short units)."""
    return repaired(_describe(payload))


def _describe(payload: dict[str, Any]) -> str:
    listed = payload.get("items") if isinstance(payload.get("items"), list) else payload.get("files")
    if isinstance(listed, list):
        if not listed:
            return "(nothing listed)"
        first = listed[0].get("path") if isinstance(listed[0], dict) else listed[0]
        return f"{first}" + (f" (+{len(listed) - 1} more)" if len(listed) > 1 else "")
    file = payload.get("file")
    if "start" in payload and "end" in payload:
        return f"{file} bytes {payload['start']}-{payload['end']}"
    if "row_group" in payload:
        return f"{file} row group {payload['row_group']}"
    return str(file or payload)


def planned_inputs(payload: dict[str, Any]) -> int | None:
    """How many inputs a unit holds, counted from its payload and the files it names, without
    its reader: items or files listed; for a JSONL byte range, the non-blank lines that start in
    it; for a Parquet row group, its rows (1 for a file whose footer cannot be read: the reader
    reports it as one record); for a tar, its sample keys plus its members that are not
    ``key.ext`` regular files (directories aside), as far as its headers can be read.
    None: a payload of another shape, or a file that cannot be read now (the unit is then not
    checked). Only regular files are opened."""
    for key in ("items", "files"):
        if isinstance(payload.get(key), list):
            return len(payload[key])
    file = payload.get("file")
    if not isinstance(file, str):
        return None
    try:
        st = os.stat(file)
        if not stat.S_ISREG(st.st_mode):
            return None
        keys = set(payload)
        if keys == {"file", "start", "end"}:
            if _starts_with(file, b"["):
                return None  # a JSON array, not JSON Lines: its elements are not lines
            return _jsonl_lines(file, int(payload["start"]), int(payload["end"]))
        if keys == {"file", "row_group", "first_row"}:
            group = payload["row_group"]
            return 1 if group is None else _parquet_row_groups(file, st.st_size, st.st_mtime_ns)[int(group)]
        if keys == {"file"}:
            return _tar_inputs(file)
    except (OSError, ValueError, IndexError) as e:
        log.warning("cannot count the planned inputs of %s: %s: %s", file, type(e).__name__, e)
    return None


_BLANK = b" \t\n\r\x0b\x0c"
_CHUNK = 1 << 20


def _starts_with(path: str, prefix: bytes) -> bool:
    """Whether the first non-blank bytes of a file are ``prefix`` (reads at most 64 KiB)."""
    with open(path, "rb") as f:
        return f.read(64 << 10).lstrip(_BLANK).startswith(prefix)


def _jsonl_lines(path: str, start: int, end: int) -> int:
    """Non-blank lines whose first byte lies in [start, end): the line holding byte ``start - 1``
    belongs to the unit before. Reads the range and the rest of its last line, in chunks."""
    count = 0
    with open(path, "rb") as f:
        pos = max(start - 1, 0)
        f.seek(pos)
        counting = start == 0  # is the line being scanned one of this unit's?
        text = False
        while data := f.read(_CHUNK):
            parts = data.split(b"\n")
            for k, part in enumerate(parts):
                if counting and not text and part.strip(_BLANK):
                    text = True
                pos += len(part)
                if k == len(parts) - 1:
                    break  # no newline yet: the line goes on in the next chunk
                if counting and text:
                    count += 1
                pos += 1  # the newline; ``pos`` is where the next line starts
                if pos >= end:
                    return count
                counting, text = True, False
        if counting and text:  # a last line without a newline
            count += 1
    return count


@lru_cache(maxsize=256)
def _parquet_row_groups(path: str, size: int, mtime_ns: int) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    return tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))


def _tar_inputs(path: str) -> int:
    """Distinct sample keys plus odd members (links, devices, names without ``key.ext``) of a
    tar, from its headers only (data is skipped with seeks); stops where the headers stop."""
    from operators.ingest.webdataset_tar import split_member_name

    seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as tf:
            while True:
                try:
                    info = tf.next()
                except (tarfile.TarError, EOFError, OSError):
                    break
                if info is None:
                    break
                tf.members.clear()
                if info.isdir():
                    continue
                parts = split_member_name(info.name)
                seen.add(info.name if not info.isfile() or parts is None else parts[0])
    except tarfile.TarError:  # not even a first header: the reader reports the file as one record
        pass
    return len(seen)
