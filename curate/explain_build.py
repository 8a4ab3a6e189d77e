"""Write the explain index (layout and lookups: ``curate.explain_index``).

Map (one task per final file, in ``curate.outputs.finalize``): ``index_rows`` of the file, with
where each row was published, and ``write_run``: the rows sorted by (partition, id) as one Arrow
IPC file. Reduce (one task per partition): ``reduce_partition`` reads its slice of every run
(binary search on the run's partition column, memory-mapped), sorts it by id, writes
``ids-NNNNN.parquet`` and sums the hours of its kept media with each id counted once (the rows of
one id meet here). ``trim_examples`` caps the rows kept per reason; ``write_meta`` writes
index.json with ``stage_info`` (stages, the score keys they write, route rules).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.explain_index import (
    EXAMPLE_COLUMNS,
    EXAMPLES_PER_REASON,
    INDEX_DIR,
    MAX_PARTITIONS,
    ROW_GROUP,
    ROWS_PER_PARTITION,
    SLIM_COLUMNS,
    VERSION,
)
from curate.media_hours import SECONDS_COLUMNS, HoursSum, first_of_each_id, timed_seconds
from curate.spill import string_hash
from schemas.enums import Status
from schemas.files import atomic_write_json, atomic_write_parquet

__all__ = [
    "EXAMPLE_COLUMNS",
    "INDEX_DIR",
    "index_rows",
    "partition_of_ids",
    "partitions_for",
    "reduce_partition",
    "stage_info",
    "trim_examples",
    "write_meta",
    "write_run",
]


def partitions_for(rows: int) -> int:
    return int(min(MAX_PARTITIONS, max(1, -(-rows // ROWS_PER_PARTITION))))


def partition_of_ids(ids: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    return (string_hash(ids) % np.uint64(partitions)).astype(np.int32)


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
    tmp = _tmp_of(path)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as writer:
        writer.write_table(t, max_chunksize=max(1, t.num_rows))
    tmp.replace(path)


def _slice_of(run: Path, p: int) -> pa.Table | None:
    """Partition ``p``'s rows of one run, copied out of the memory map: touched pages of a map
    count in the process's memory until it closes, so the reduce holds one run's map at a time."""
    with pa.memory_map(str(run)) as source:
        t = pa.ipc.open_file(source).read_all()
        part = t["_part"].combine_chunks().to_numpy(zero_copy_only=False)
        lo, hi = (int(x) for x in np.searchsorted(part, [p, p + 1]))
        del part
        if hi <= lo:
            return None
        piece = t.slice(lo, hi - lo).take(pa.array(np.arange(hi - lo)))  # a copy in Arrow's pool
        del t
    return piece


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
    tmp = _tmp_of(path)
    pq.write_table(t, tmp, row_group_size=ROW_GROUP, compression="zstd", write_statistics=True)
    tmp.replace(path)


def _tmp_of(path: Path) -> Path:
    """A temporary name of its own per attempt: a retried task may write the same file at once."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


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


