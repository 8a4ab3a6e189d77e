"""The explain index: every row of a run by id, so ``curate explain OUT ID`` reads one row group
instead of scanning the run.

Layout (written by ``curate.outputs.finalize``, or rebuilt from a run's published files by
``rebuild``)::

    OUT/explain/index.json            version, partitions, rows, the stages (op, score keys
                                      they write) and the route rules of the config
    OUT/explain/ids-00000.parquet     one partition: rows whose ``string_hash(id) % partitions``
    ...                               is its number, sorted by id, row groups of ROW_GROUP rows
                                      with min/max statistics
    OUT/explain/reasons.parquet       up to EXAMPLES_PER_REASON rows per (status, operator,
                                      reason), in ingest order: ``curate explain --reason``

An index row holds what explain shows without the record: id, source, locator, layout,
modalities, language, unit, seq, parent_id, the status with operator, reason and detail,
duplicate_of, lineage, scores, buckets, tasks, and where the whole record was published
(``file`` relative to OUT: ``samples/bucket=<first bucket>/part-N.parquet`` or
``rejected/part-N.parquet``, and ``row`` in that file).

A lookup hashes the id to its partition (``curate.spill.string_hash_one``), reads that file's
footer, picks the row group whose id statistics bracket the id and reads it: one footer and one
row group of at most ROW_GROUP rows, whatever the run's size. Partitions hold about
ROWS_PER_PARTITION rows (``partitions_for``).

Building it is a map-reduce with bounded memory: each final file (one Ray task per file in
``finalize``) writes a run, its index rows sorted by (partition, id), as one Arrow IPC file;
then one task per partition reads its slice of every run (found by binary search on the run's
partition column, memory-mapped), sorts it by id and writes the partition. A reduce holds one
partition (about ROWS_PER_PARTITION rows, a few hundred bytes each). Because the rows of one id
meet in one reduce, the reduce is also where the hours of kept media are summed with each id
counted once (``curate.media_hours``) and where ids that occur in more than one row are counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.media_hours import SECONDS_COLUMNS, HoursSum, first_of_each_id, timed_seconds
from curate.spill import string_hash, string_hash_one
from schemas.enums import Status
from schemas.files import atomic_write_json, atomic_write_parquet

__all__ = [
    "INDEX_DIR",
    "IndexMissing",
    "SLIM_COLUMNS",
    "ExplainIndex",
    "index_rows",
    "partitions_for",
    "reduce_partition",
    "trim_examples",
    "write_meta",
    "write_run",
]

INDEX_DIR = "explain"
VERSION = 1
ROW_GROUP = 4096
ROWS_PER_PARTITION = 250_000
MAX_PARTITIONS = 4096
EXAMPLES_PER_REASON = 1000
#: record columns an index row keeps (plus ``file`` and ``row``)
SLIM_COLUMNS = (
    "id", "source", "locator", "layout", "modalities", "language", "unit", "seq", "parent_id", "status",
    "status_operator", "status_reason", "status_detail", "duplicate_of", "lineage", "scores", "buckets", "tasks",
)  # fmt: skip
#: columns of reasons.parquet
EXAMPLE_COLUMNS = ("id", "source", "locator", "status", "status_operator", "status_reason", "status_detail", "duplicate_of", "file", "row")


class IndexMissing(FileNotFoundError):
    """The run has no explain index (a run from before it, or one whose finalize did not finish)."""


def partitions_for(rows: int) -> int:
    return int(min(MAX_PARTITIONS, max(1, -(-rows // ROWS_PER_PARTITION))))


def partition_of_ids(ids: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    return (string_hash(ids) % np.uint64(partitions)).astype(np.int32)


def partition_of_id(record_id: str, partitions: int) -> int:
    return string_hash_one(record_id) % partitions


def index_rows(table: pa.Table, file: pa.Array, row: pa.Array) -> pa.Table:
    """The index rows of a final file's ``table`` (``file`` and ``row``: where each row was
    published), with the seconds columns the reduce sums (kept media hours)."""
    from schemas.record import SAMPLE_SCHEMA

    cols: dict[str, Any] = {}
    for name in SLIM_COLUMNS:
        cols[name] = table[name] if name in table.column_names else pa.nulls(table.num_rows, SAMPLE_SCHEMA.field(name).type)
    cols["file"] = file
    cols["row"] = row
    audio_s, video_s = timed_seconds(table)
    cols[SECONDS_COLUMNS[0]] = audio_s
    cols[SECONDS_COLUMNS[1]] = video_s
    return pa.table(cols)


def write_run(rows: pa.Table, path: Path, partitions: int) -> None:
    """One map output: ``rows`` sorted by (partition, id), as an Arrow IPC file."""
    part = partition_of_ids(rows["id"], partitions)
    t = rows.append_column("_part", pa.array(part))
    t = t.take(pc.sort_indices(t, sort_keys=[("_part", "ascending"), ("id", "ascending")]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as writer:
        writer.write_table(t, max_chunksize=max(1, t.num_rows))
    tmp.replace(path)


def _slice_of(run: Path, p: int) -> pa.Table | None:
    with pa.memory_map(str(run)) as source:
        t = pa.ipc.open_file(source).read_all()
        part = t["_part"].combine_chunks().to_numpy(zero_copy_only=False)
        lo, hi = np.searchsorted(part, [p, p + 1])
        if hi <= lo:
            return None
        return t.slice(int(lo), int(hi - lo)).combine_chunks()  # a copy: the map may close


def reduce_partition(p: int, runs: list[str], out_dir: str) -> dict[str, Any]:
    """Partition ``p`` of the index from every run: sorted by id and written; returns the hours
    of its kept rows (each id once), its row count and how many rows repeat an id."""
    pieces = [s for s in (_slice_of(Path(r), p) for r in runs) if s is not None]
    hours = HoursSum()
    path = Path(out_dir) / f"ids-{p:05d}.parquet"
    if not pieces:
        empty = index_schema()
        atomic_write_parquet(empty.empty_table(), path)
        return {"partition": p, "rows": 0, "repeated_ids": 0, "hours": hours.__getstate__()}
    t = pa.concat_tables(pieces)
    del pieces
    t = t.append_column("_order", pa.array(np.arange(t.num_rows, dtype=np.int64)))
    t = t.take(pc.sort_indices(t, sort_keys=[("id", "ascending"), ("_order", "ascending")]))
    ids = t["id"].combine_chunks()
    repeated = int(pc.sum(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py() or 0) if len(ids) > 1 else 0
    kept = t.filter(pc.fill_null(pc.equal(t["status"], Status.KEPT.value), False)).select(["id", "source", "language", *SECONDS_COLUMNS, "_order"])
    kept = first_of_each_id(kept)
    hours.add(*(kept[c].combine_chunks() for c in ("source", "language", *SECONDS_COLUMNS)))
    t = t.drop_columns(["_part", "_order", *SECONDS_COLUMNS])
    _write_parquet(t, path)
    return {"partition": p, "rows": t.num_rows, "repeated_ids": repeated, "hours": hours.__getstate__()}


def index_schema() -> pa.Schema:
    from schemas.record import SAMPLE_SCHEMA

    fields = [SAMPLE_SCHEMA.field(c) for c in SLIM_COLUMNS]
    return pa.schema([*fields, pa.field("file", pa.string()), pa.field("row", pa.int64())])


def _write_parquet(t: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(t, tmp, row_group_size=ROW_GROUP, compression="zstd", write_statistics=True)
    tmp.replace(path)


def trim_examples(t: pa.Table, cap: int = EXAMPLES_PER_REASON) -> pa.Table:
    """The first ``cap`` rows of each (status, status_operator, status_reason), in order."""
    if t.num_rows == 0:
        return t
    key = pc.binary_join_element_wise(
        pc.fill_null(t["status"], ""), pc.fill_null(t["status_operator"], ""), pc.fill_null(t["status_reason"], ""), "\x1f"
    )
    codes = _combined(pc.dictionary_encode(key)).indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = np.sort(order[rank < cap])
    return t.take(pa.array(keep)) if len(keep) < t.num_rows else t


def _combined(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def write_meta(out: Path, *, partitions: int, rows: int, repeated_ids: int, stages: list[dict[str, Any]], examples: int) -> None:
    atomic_write_json(
        out / INDEX_DIR / "index.json",
        {
            "version": VERSION,
            "partitions": partitions,
            "hash": "fnv1a64+mix64 of the id's UTF-8 bytes, modulo partitions",
            "row_group": ROW_GROUP,
            "rows": rows,
            "repeated_ids": repeated_ids,
            "examples_per_reason": EXAMPLES_PER_REASON,
            "examples": examples,
            "stages": stages,
        },
    )


def stage_info(loaded: Any) -> list[dict[str, Any]]:
    """Per stage of a loaded pipeline: name, op, the score keys it writes and, for a route
    stage, its rules (so explain can say which rules a row matches)."""
    out = []
    for st in loaded.stages:
        info: dict[str, Any] = {"name": st.spec.stage_name, "op": st.spec.op, "writes": sorted(getattr(st.op, "writes", {}) or {})}
        params = st.op.params
        if st.spec.op == "route":
            info["rules"] = [r.model_dump(mode="json", by_alias=True) for r in params.rules]
            info["unmatched"] = params.unmatched
        out.append(info)
    readers = {}
    for s in loaded.sources:
        name = f"ingest:{s.reader.name}"
        readers[name] = {"name": name, "op": name, "writes": ["media_missing", "media_referenced"] if hasattr(s.reader, "media_root_hint") else []}
    return [*readers.values(), *out]


class ExplainIndex:
    """Read side of the index of one run."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.dir = self.out / INDEX_DIR
        meta = self.dir / "index.json"
        if not meta.is_file():
            raise IndexMissing(str(meta))
        self.meta = json.loads(meta.read_text())
        self.partitions = int(self.meta["partitions"])

    def _file(self, p: int) -> Path:
        return self.dir / f"ids-{p:05d}.parquet"

    @staticmethod
    def _groups(pf: pq.ParquetFile, lo: str, hi: str) -> list[int]:
        """Row groups whose id range meets [lo, hi]."""
        md = pf.metadata
        col = pf.schema_arrow.get_field_index("id")
        found = []
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(col).statistics
            if st is None or not st.has_min_max or (st.min <= hi and st.max >= lo):
                found.append(i)
        return found

    def lookup(self, record_id: str) -> list[dict[str, Any]]:
        """The index rows of ``record_id`` (usually one)."""
        path = self._file(partition_of_id(record_id, self.partitions))
        if not path.is_file():
            return []
        pf = pq.ParquetFile(path)
        rows: list[dict[str, Any]] = []
        for g in self._groups(pf, record_id, record_id):
            t = pf.read_row_group(g)
            rows += _dicts(t.filter(pc.equal(t["id"], record_id)))
        return rows

    def by_prefix(self, prefix: str, limit: int = 10) -> list[dict[str, Any]]:
        """Rows whose id starts with ``prefix`` (every partition: a footer and the row groups
        that can hold it each)."""
        rows: list[dict[str, Any]] = []
        for p in range(self.partitions):
            path = self._file(p)
            if not path.is_file():
                continue
            pf = pq.ParquetFile(path)
            for g in self._groups(pf, prefix, prefix + "\U0010ffff"):
                t = pf.read_row_group(g)
                rows += _dicts(t.filter(pc.starts_with(t["id"], prefix)))
                if len(rows) >= limit:
                    return rows[:limit]
        return rows

    def reasons(self) -> pa.Table:
        path = self.dir / "reasons.parquet"
        return pq.read_table(path) if path.is_file() else pa.table({c: pa.array([], pa.string()) for c in EXAMPLE_COLUMNS})

    def examples(self, reason: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows whose status_reason (or ``operator:reason``) is ``reason``, in
        ingest order. Beyond the stored examples (EXAMPLES_PER_REASON per reason) the index
        partitions are scanned (a scan of the run's index; those rows come in id order)."""
        t = self.reasons()
        mask = _reason_mask(t, reason)
        found = t.filter(mask).slice(0, limit).to_pylist()
        if len(found) < limit and len(found) >= int(self.meta.get("examples_per_reason", EXAMPLES_PER_REASON)):
            seen = {r["id"] for r in found}
            for row in self._scan_reason(reason):
                if row["id"] not in seen:
                    found.append(row)
                    if len(found) >= limit:
                        break
        return found

    def _scan_reason(self, reason: str) -> Iterator[dict[str, Any]]:
        for p in range(self.partitions):
            path = self._file(p)
            if not path.is_file():
                continue
            pf = pq.ParquetFile(path)
            for g in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(g, columns=list(EXAMPLE_COLUMNS))
                yield from t.filter(_reason_mask(t, reason)).to_pylist()


def _dicts(t: pa.Table) -> list[dict[str, Any]]:
    rows = t.to_pylist()
    for r in rows:
        r["scores"] = dict(r.get("scores") or [])
    return rows


def _reason_mask(t: pa.Table, reason: str) -> pa.Array:
    if ":" in reason:
        op, _, r = reason.rpartition(":")  # ingest operators are "ingest:<reader>"
        m = pc.and_(pc.equal(t["status_operator"], op), pc.equal(t["status_reason"], r))
    else:
        m = pc.equal(t["status_reason"], reason)
    return pc.fill_null(m, False)
