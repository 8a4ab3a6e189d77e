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
ROWS_PER_PARTITION rows (``curate.explain_build.partitions_for``).

This module is the read side and imports nothing heavy (a `curate explain` command is mostly
Python start-up); ``curate.explain_build`` writes the index. Building it is a map-reduce with
bounded memory: each final file (one Ray task per file in ``finalize``) writes a run, its index rows sorted by (partition, id), as one Arrow IPC file;
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

import pyarrow as pa
import pyarrow.parquet as pq

from curate.spill import string_hash_one

__all__ = ["EXAMPLE_COLUMNS", "INDEX_DIR", "SLIM_COLUMNS", "ExplainIndex", "IndexMissing", "partition_of_id"]

INDEX_DIR = "explain"
VERSION = 1
ROW_GROUP = 4096
ROWS_PER_PARTITION = 100_000
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


def partition_of_id(record_id: str, partitions: int) -> int:
    return string_hash_one(record_id) % partitions


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
            rows += _matching(t, lambda v: v == record_id)
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
                rows += _matching(t, lambda v: v is not None and v.startswith(prefix))
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
        found = [r for r in t.to_pylist() if _has_reason(r, reason)][:limit]
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
                for i, r in enumerate(zip(t.column("status_operator").to_pylist(), t.column("status_reason").to_pylist(), strict=True)):
                    if _has_reason({"status_operator": r[0], "status_reason": r[1]}, reason):
                        yield t.slice(i, 1).to_pylist()[0]


def _matching(t: pa.Table, keep: Any) -> list[dict[str, Any]]:
    """The rows of ``t`` whose id ``keep`` accepts, as dicts (scores as a dict). Python on one
    row group's ids, not a compute kernel: converting a Python value to Arrow makes pyarrow
    import pandas, half a second of a `curate explain` command."""
    rows = []
    for i, v in enumerate(t.column("id").to_pylist()):
        if keep(v):
            r = t.slice(i, 1).to_pylist()[0]
            r["scores"] = dict(r.get("scores") or [])
            rows.append(r)
    return rows


def _has_reason(row: dict[str, Any], reason: str) -> bool:
    if ":" in reason:
        op, _, r = reason.rpartition(":")
        return row.get("status_operator") == op and row.get("status_reason") == r
    return row.get("status_reason") == reason
