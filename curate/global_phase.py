"""A global operator as a map-reduce over files, moving only small key rows.

Every step is a Ray task per file, partition or file bucket, and holds a bounded number of bytes
in its process whatever the corpus size: partitions are sized by their key rows
(``ROWS_PER_PARTITION``, ``KEY_ROWS_PER_PARTITION``), and each file is read and written alone.
Layout under the segment's folder (file index = the file's position in the sorted input list):

map:     every input file -> ``op.summarize`` -> ``_keys/<index>.arrow``: its key rows sorted
         by (fine) partition of ``_key`` in one Arrow IPC file whose metadata holds each
         partition's row offset, so a reducer memory-maps each file and slices its partitions
         (no footer to parse, nothing else read) and the map writes one file.
reduce:  every partition (consecutive fine partitions up to the target size) -> ``op.decide`` ->
         ``_dparts/p<k>.arrow`` (the decisions with each id's file index, grouped by file
         bucket) -> regroup: every file bucket -> ``_decisions/<file stem>.parquet``.
apply:   every file -> ``op.apply`` with ``_decisions/<its stem>.parquet`` only (``ApplyFn``, run
         inside the segment's Ray Data pipeline together with the row-local stages that follow).

Operators with ``row_refs`` (the near-duplicate operators, ``operators.dedup.near``) keep their
signatures out of the shuffle: the map step writes the file's ROW TABLE once to
``_rows/<index>.arrow`` (Arrow IPC, uncompressed: reducers memory-map it and read only the rows
they ask for) and key rows of 12 bytes (``_key``, ``_row``) to ``_keys``. Then:

hot:     every partition -> its keys with more than ``op.bucket_cap()`` key rows (one small array
         per partition, collected on the driver and handed to every reducer);
reduce:  every partition -> ``op.decide_partition`` (reads the rows of its candidate buckets by
         reference) -> ``_partials/p<k>.parquet``: edges of two row references (24 bytes + detail);
combine: one task -> ``op.combine_refs`` over all edge files (connected components; the rows
         that could not be signed come from the row tables of the files that had some) ->
         ``_decisions/<file stem>.parquet`` per file with decisions, and ``op.report_stats``.

Optional steps (see ``GlobalOperator``): ``fit`` runs first, as one Ray task on a sample of rows
spread evenly over the files (k-means centroids), and the fitted operator runs the rest; an
operator with ``combine`` but not ``row_refs`` gets its summary with ``_file`` in ``decide``, and
one task concatenates the partials and calls ``op.combine``.

``_key`` is a string (hashed with crc32) or an integer (mixed with splitmix64, vectorised).

A ``_SUCCESS`` file (JSON: the layout, the number of decisions, and what every step held and
moved: peak RSS per task, bytes written and read per row) makes a finished decision step skip
on rerun. Full records never leave their file (Ray Data's own hash shuffle moved whole nested
records and cost seconds per thousand rows on 2 cores; see benchmarks/).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.base import GlobalOperator
from operators.dedup.lsh import hot_keys
from operators.dedup.near import REF_SHIFT, RowSource, TableRows
from schemas.files import atomic_write_bytes, atomic_write_json
from schemas.hashing import partition_of

__all__ = ["ApplyFn", "FileRows", "InProcessRun", "decide_globally", "run_in_process"]

log = logging.getLogger(__name__)
#: summary rows per partition of an operator without row references (dedup_exact: ~100 B a row
#: plus the texts it carries)
ROWS_PER_PARTITION = 1_000_000
#: key rows per partition with row references: a reducer holds 16 B per key row (key and row
#: reference) while it sorts, then the signatures of the rows of its buckets of two or more
KEY_ROWS_PER_PARTITION = 1_000_000
#: at least this many summary (or key) rows per partition, when more partitions only add tasks
MIN_ROWS_PER_PARTITION = 100_000
LAYOUT = "per-file-decisions/1"
_OFFSETS = b"nmm.offsets"
#: fine partitions per reducer (what the map writes), merged by their real sizes into reducers
FINE = 4


# ------------------------------------------------------------------------------- measurement


def _reset_peak() -> None:
    """Start a fresh peak-RSS count for this task (Linux: a worker process runs many tasks)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def current_rss() -> int:
    """This process's resident set now (bytes; 0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss() -> int:
    """This process's peak resident set (bytes) since the last ``_reset_peak``: VmHWM, else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _task(fn):
    """Run ``fn`` as a measured step: its result dict gains pid, seconds and peak RSS."""

    @functools.wraps(fn)
    def run(*args, **kwargs) -> dict[str, Any]:
        pa.default_memory_pool().release_unused()  # what earlier tasks of this worker left cached
        _reset_peak()
        start = current_rss()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs) or {}
        out.update(pid=os.getpid(), s=time.perf_counter() - t0, cpu=time.process_time() - c0, peak_rss=peak_rss(), rss_start=start)
        pa.default_memory_pool().release_unused()
        return out

    return run


def _step_stats(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step: tasks, the largest peak RSS of a task, seconds summed and the longest task, and
    the sum of every other counter."""
    out: dict[str, Any] = {"tasks": len(results)}
    if not results:
        return out
    out["peak_rss_max"] = max(r["peak_rss"] for r in results)
    out["peak_over_start_max"] = max(r["peak_rss"] - r.get("rss_start", 0) for r in results)
    out["task_s_sum"] = round(sum(r["s"] for r in results), 3)
    out["task_cpu_s_sum"] = round(sum(r.get("cpu", 0) for r in results), 3)
    out["task_s_max"] = round(max(r["s"] for r in results), 3)
    for k in sorted({k for r in results for k in r} - {"pid", "s", "cpu", "peak_rss", "rss_start"}):
        values = [r[k] for r in results if isinstance(r.get(k), int | float | np.integer | np.floating)]
        if values:
            out[k] = sum(values)
    return out


# ------------------------------------------------------------------------------- file layout


def _write_grouped(table: pa.Table, tags: np.ndarray, n_tags: int, path: Path) -> int:
    """``table`` sorted by ``tags`` (0..n_tags-1) into one Arrow IPC file whose metadata holds
    the row offset of every tag, so a reader slices its tags without reading the rest; its size."""
    tags = np.asarray(tags, dtype=np.int64)
    order = np.argsort(tags, kind="stable")
    table = table.take(pa.array(order))
    offsets = np.zeros(n_tags + 1, dtype="<i8")
    np.cumsum(np.bincount(tags, minlength=n_tags), out=offsets[1:])
    table = table.replace_schema_metadata({_OFFSETS: offsets.tobytes()})
    data = _ipc_bytes(table)
    atomic_write_bytes(path, data)
    return len(data)


def _read_groups(path: Path, lo: int, hi: int, columns: list[str] | None = None) -> pa.Table | None:
    """The rows of tags lo..hi-1 of a ``_write_grouped`` file (None when there are none),
    memory-mapped: only those rows are read, and copied out so that the file is unmapped at
    once (a mapped file costs its process up to 2 MB of resident pages however little it reads:
    a reducer keeping every file mapped would hold 2 MB per input file)."""
    with pa.memory_map(str(path), "r") as src:
        table = pa.ipc.open_file(src).read_all()
        offsets = np.frombuffer(table.schema.metadata[_OFFSETS], dtype="<i8").copy()
        start, stop = int(offsets[lo]), int(offsets[hi])
        if stop <= start:
            return None
        if columns is not None:
            table = table.select(columns)
        return table.take(pa.array(np.arange(start, stop)))


def _ranges(counts: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Consecutive tags grouped into ranges of about ``target`` rows (at least one tag each;
    tags without rows are left out at the ends of the ranges)."""
    out, lo, acc = [], 0, 0
    for t, c in enumerate(counts.tolist()):
        if acc and acc + c > target:
            out.append((lo, t))
            lo, acc = t, 0
        acc += c
    if acc:
        out.append((lo, len(counts)))
    return out


def _table_bytes(table: pa.Table) -> bytes:
    """One Parquet file's bytes (zstd)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


class FileRows(RowSource):
    """The row tables the map step wrote (``_rows/<index>.arrow``), memory-mapped: a read touches
    only the pages of the rows asked for, and nothing stays mapped after it."""

    def __init__(self, rows_dir: str | Path) -> None:
        self.rows_dir = Path(rows_dir)
        first = next(iter(sorted(self.rows_dir.glob("*.arrow"))), None) if self.rows_dir.exists() else None
        self.schema = None
        if first is not None:
            with pa.memory_map(str(first), "r") as src:
                self.schema = pa.ipc.open_file(src).schema
            self.column_names = self.schema.names

    def rows_of(self, file: int, rows: np.ndarray, columns: list[str] | None) -> pa.Table:
        if file < 0 or len(rows) == 0:
            schema = self.schema or pa.schema([])
            t = schema.empty_table()
            return t.select(columns) if columns is not None else t
        with pa.memory_map(str(self.rows_dir / f"{file:06d}.arrow"), "r") as src:
            t = pa.ipc.open_file(src).read_all()
            if columns is not None:
                t = t.select(columns)
            return t.take(pa.array(rows, pa.int64()))


# ------------------------------------------------------------------------------- the steps


@_task
def _map_file(op: GlobalOperator, path: str, index: int, fine: int, work: str) -> dict[str, Any]:
    table = pq.read_table(path)
    out: dict[str, Any] = {"rows": table.num_rows, "key_rows": 0, "key_bytes": 0, "row_bytes": 0, "errors": 0}
    if getattr(op, "row_refs", False):
        keys, rows = op.summarize(table)
        del table
        if rows.num_rows:
            data = _ipc_bytes(rows)
            atomic_write_bytes(Path(work) / "_rows" / f"{index:06d}.arrow", data)
            out.update(row_bytes=len(data), summary_rows=rows.num_rows, errors=int(pc.sum(pc.is_valid(rows["_error_reason"])).as_py() or 0))
    else:
        keys = op.summarize(table)
        del table
    if keys.num_rows:
        part = np.asarray(partition_of(keys["_key"].combine_chunks(), fine))
        out["key_bytes"] = _write_grouped(keys, part, fine, Path(work) / "_keys" / f"{index:06d}.arrow")
        out["key_rows"] = keys.num_rows
        out["fine_counts"] = np.bincount(part, minlength=fine)
    return out


def _partition_keys(span: tuple[int, int], key_files: list[tuple[int, str]], columns: list[str] | None) -> tuple[list[pa.Table], list[int]]:
    """The key rows of fine partitions span[0]..span[1]-1 from every key file, and each part's file index."""
    tables, owners = [], []
    for index, path in key_files:
        t = _read_groups(Path(path), span[0], span[1], columns)
        if t is not None and t.num_rows:
            tables.append(t)
            owners.append(index)
    return tables, owners


@_task
def _hot_partition(span: tuple[int, int], key_files: list[tuple[int, str]], cap: int) -> dict[str, Any]:
    tables, _ = _partition_keys(span, key_files, ["_key"])
    keys = np.concatenate([t["_key"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
    return {"hot": hot_keys(keys, cap), "key_rows": len(keys)}


@_task
def _reduce_refs(op, span: tuple[int, int], key_files: list[tuple[int, str]], work: str, hot: np.ndarray, out_path: str) -> dict[str, Any]:
    tables, owners = _partition_keys(span, key_files, None)
    if not tables:
        return {}
    key = np.concatenate([t["_key"].to_numpy() for t in tables])
    ref = np.concatenate([(np.int64(i) << np.int64(REF_SHIFT)) | t["_row"].to_numpy().astype(np.int64) for i, t in zip(owners, tables, strict=True)])
    rank = np.concatenate([t["_rank"].to_numpy() for t in tables]) if "_rank" in tables[0].column_names else None
    del tables
    res = op.decide_partition(key, ref, FileRows(Path(work) / "_rows"), hot, rank)
    del key, ref, rank
    data = _table_bytes(res.edges)
    atomic_write_bytes(out_path, data)
    return {**res.counts, "edge_bytes": len(data), "edges_in_memory_bytes": res.edges.nbytes}


def _file_bucket(index: np.ndarray, files: int, buckets: int) -> np.ndarray:
    return (np.asarray(index, dtype=np.int64) * buckets // max(1, files)).astype(np.int64)


@_task
def _reduce_summary(op, span: tuple[int, int], key_files: list[tuple[int, str]], stems: list[str], out_path: str, buckets: int) -> dict[str, Any]:
    tables, owners = _partition_keys(span, key_files, None)
    if not tables:
        return {}
    summary = pa.concat_tables(
        [t.append_column("_fidx", pa.array(np.full(t.num_rows, i, np.int32))) for i, t in zip(owners, tables, strict=True)],
        promote_options="default",
    )
    del tables
    if op.has_combine():  # partial results; ``combine`` names each decided id's file
        files = pa.array(stems, pa.string()).take(summary["_fidx"])
        partial = op.decide(summary.drop_columns(["_fidx"]).append_column("_file", files))
        atomic_write_bytes(out_path, _table_bytes(partial))
        return {"summary_rows": summary.num_rows, "partial_rows": partial.num_rows}
    decisions = op.decide(summary.drop_columns(["_fidx"]))
    if "_file" in decisions.column_names:
        decisions = decisions.drop_columns(["_file"])
    if decisions.num_rows:
        decisions = decisions.join(summary.select(["id", "_fidx"]), "id", join_type="left outer")
        bucket = _file_bucket(decisions["_fidx"].to_numpy(), len(stems), buckets)
        nbytes = _write_grouped(decisions, bucket, buckets, Path(out_path))
    else:
        nbytes = 0
    return {"summary_rows": summary.num_rows, "decisions": decisions.num_rows, "decision_bytes": nbytes}


def _write_per_file(decisions: pa.Table, index: np.ndarray, stems: list[str], decisions_dir: Path) -> int:
    """Decisions (with their file index) -> one ``_decisions/<stem>.parquet`` per file; files written."""
    if decisions.num_rows == 0:
        return 0
    order = np.argsort(index, kind="stable")
    index = index[order]
    decisions = decisions.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    ends = np.r_[starts[1:], len(index)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        stem = stems[int(index[lo])]
        part = decisions.slice(lo, hi - lo)
        part = part.set_column(part.schema.get_field_index("_file"), "_file", pa.array([stem] * part.num_rows, pa.string()))
        atomic_write_bytes(decisions_dir / f"{stem}.parquet", _table_bytes(part))
    return len(starts)


@_task
def _regroup(b: int, dpart_files: list[str], stems: list[str], decisions_dir: str) -> dict[str, Any]:
    tables = [t for f in dpart_files if (t := _read_groups(Path(f), b, b + 1)) is not None and t.num_rows]
    if not tables:
        return {"files": 0}
    decisions = pa.concat_tables(tables, promote_options="default")
    index = decisions["_fidx"].to_numpy()
    decisions = decisions.drop_columns(["_fidx"])
    if "_file" not in decisions.column_names:
        decisions = decisions.append_column("_file", pa.nulls(decisions.num_rows, pa.string()))
    return {"files": _write_per_file(decisions, index, stems, Path(decisions_dir)), "decisions": decisions.num_rows}


def _errors_of(work: Path, indices: list[int]) -> pa.Table | None:
    """The rows that could not be signed, from the row tables of the files that had some."""
    parts = []
    for index in indices:
        with pa.memory_map(str(work / "_rows" / f"{index:06d}.arrow"), "r") as src:
            t = pa.ipc.open_file(src).read_all().select(["id", "_error_reason", "_error_detail"])
            rows = np.flatnonzero(pc.is_valid(t["_error_reason"]).to_numpy(zero_copy_only=False))
            t = t.take(pa.array(rows))
        parts.append(t.append_column("_ref", pa.array((np.int64(index) << np.int64(REF_SHIFT)) | rows.astype(np.int64))))
    return pa.concat_tables(parts) if parts else None


def _edge_loader(path: str):
    return lambda columns: pq.read_table(path, columns=columns)


@_task
def _combine_refs(op, partial_files: list[str], work: str, stems: list[str], error_files: list[int], counts: dict[str, int]) -> dict[str, Any]:
    work_dir = Path(work)
    decisions = op.combine_refs([_edge_loader(f) for f in partial_files], FileRows(work_dir / "_rows"), _errors_of(work_dir, error_files))
    if op.report_file and op.artifacts_dir:
        atomic_write_json(Path(op.artifacts_dir) / op.report_file, op.report_stats(counts, decisions))
    index = (decisions["_ref"].to_numpy() >> REF_SHIFT).astype(np.int64)
    nbytes = decisions.nbytes
    files = _write_per_file(decisions.drop_columns(["_ref"]), index, stems, work_dir / "_decisions")
    return {"decisions": decisions.num_rows, "decision_files": files, "decision_bytes": nbytes}


@_task
def _combine_partials(op, partial_files: list[str], stems: list[str], decisions_dir: str) -> dict[str, Any]:
    partials = pa.concat_tables([pq.read_table(f) for f in partial_files], promote_options="default")
    decisions = op.combine(partials)
    if "_file" not in decisions.column_names:
        raise ValueError(f"{op.stage}: combine() must return a `_file` column with each id's file")
    if op.report_file and op.artifacts_dir:
        atomic_write_json(Path(op.artifacts_dir) / op.report_file, op.report(partials, decisions))
    position = {s: i for i, s in enumerate(stems)}
    index = np.array([position.get(f, -1) for f in decisions["_file"].to_pylist()], dtype=np.int64)
    return {"decisions": decisions.num_rows, "decision_files": _write_per_file(decisions, index, stems, Path(decisions_dir))}


def _sample_rows(files: list[str], total: int, want: int) -> pa.Table:
    """About ``want`` rows spread evenly over ``files``: evenly spaced rows of evenly spaced files,
    reading no more files than needed to hold about twice ``want`` rows (at least 8)."""
    per_file = max(1, total // max(1, len(files)))
    n_files = min(len(files), max(8, math.ceil(2 * want / per_file)))
    files = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, n_files).round().astype(np.int64))]
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    frac = min(1.0, want / max(1, total))
    parts = []
    for f in files:
        table = pq.read_table(f)
        n = table.num_rows
        k = min(n, math.ceil(n * frac))
        if k:
            parts.append(table.take(pa.array(np.unique(np.linspace(0, n - 1, k).round().astype(np.int64)))))
    return pa.concat_tables(parts) if parts else pa.table({})


def _fit(op: GlobalOperator, files: list[str], total: int) -> GlobalOperator:
    op.fit(_sample_rows(files, total, op.fit_rows()), total)
    return op


def partitions_for(rows: int, per_row: int, per_partition: int, cpus: int) -> int:
    """Partitions for ``rows * per_row`` summary rows: at most ``per_partition`` each, and enough
    to keep the cores busy while every partition holds at least MIN_ROWS_PER_PARTITION."""
    n = rows * max(1, per_row)
    return max(1, math.ceil(n / per_partition), min(2 * max(1, cpus), math.ceil(n / MIN_ROWS_PER_PARTITION)))


# ------------------------------------------------------------------------------- in one process


@dataclass
class InProcessRun:
    """What ``run_in_process`` gives: the applied table, the decisions, and ``op.report`` (with combine)."""

    table: pa.Table
    decisions: pa.Table
    report: dict[str, Any]


def run_in_process(op: GlobalOperator, table: pa.Table, partitions: int = 3) -> InProcessRun:
    """fit -> summarize -> hash-partition on ``_key`` -> (hot keys) -> decide per partition ->
    combine -> apply, in one process on one table: the steps ``decide_globally`` runs as Ray
    tasks over files (tests, benchmarks, notebooks). Writes nothing."""
    if op.fit_rows() > 0 and table.num_rows:  # about fit_rows() rows, evenly spaced, as from files
        k = min(table.num_rows, op.fit_rows())
        op.fit(table.take(pa.array(np.unique(np.linspace(0, table.num_rows - 1, k).round().astype(np.int64)))), table.num_rows)
    report: dict[str, Any] = {}
    if getattr(op, "row_refs", False):
        keys, rows = op.summarize(table)
        src = TableRows([rows])
        key = keys["_key"].to_numpy()
        ref = keys["_row"].to_numpy().astype(np.int64)  # file 0
        part = np.asarray(partition_of(keys["_key"].combine_chunks(), partitions)) if len(key) else np.zeros(0, np.int32)
        hot = hot_keys(key, op.bucket_cap())
        rank = keys["_rank"].to_numpy() if "_rank" in keys.column_names else None
        results = [
            op.decide_partition(key[part == p], ref[part == p], src, hot, None if rank is None else rank[part == p])
            for p in range(partitions)
            if (part == p).any()
        ]
        errs = rows.filter(pc.is_valid(rows["_error_reason"])) if rows.num_rows else None
        if errs is not None:
            errs = errs.select(["id", "_error_reason", "_error_detail"]).append_column(
                "_ref", pa.array(np.flatnonzero(pc.is_valid(rows["_error_reason"]).to_numpy(zero_copy_only=False)).astype(np.int64))
            )
        decisions = op.combine_refs([(lambda cols, r=r: r.edges.select(cols)) for r in results], src, errs).drop_columns(["_ref"])
        if rows.num_rows:
            counts: dict[str, int] = {}
            for r in results:
                for k, v in r.counts.items():
                    counts[k] = counts.get(k, 0) + v
            report = op.report_stats(counts, decisions)
        return InProcessRun(op.apply(table, decisions), decisions, report)
    summary = op.summarize(table)
    if op.has_combine():
        summary = summary.append_column("_file", pa.nulls(summary.num_rows, pa.string()))
    part = np.asarray(partition_of(summary["_key"].combine_chunks(), partitions)) if summary.num_rows else np.zeros(0)
    decided = [op.decide(summary.filter(pa.array(part == p))) for p in range(partitions) if (part == p).any()]
    if op.has_combine():
        partials = pa.concat_tables(decided) if decided else None
        decisions = op.combine(partials) if partials is not None else pa.table({"id": pa.array([], pa.string())})
        if partials is not None:
            report = op.report(partials, decisions)
    else:
        decisions = pa.concat_tables(decided) if decided else pa.table({"id": pa.array([], pa.string())})
    return InProcessRun(op.apply(table, decisions), decisions, report)


# ------------------------------------------------------------------------------- on Ray


def _done(decisions_dir: Path) -> bool:
    try:
        info = json.loads((decisions_dir / "_SUCCESS").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("layout") == LAYOUT


def decide_globally(
    op: GlobalOperator,
    files: list[Path],
    out: Path,
    cpus: int,
    *,
    key_rows_per_partition: int = KEY_ROWS_PER_PARTITION,
    rows_per_partition: int = ROWS_PER_PARTITION,
) -> Path:
    """Run the map and reduce steps (and the optional fit, hot-key and combine steps); returns the
    decisions folder (reused when complete): ``<stem>.parquet`` per input file with decisions.

    The map step hash-partitions key rows into FINE times more partitions than the estimate
    (``op.keys_per_row()`` key rows a row), and the reducers take consecutive fine partitions up to
    ``key_rows_per_partition`` (``rows_per_partition``) rows, by the counts the map step found."""
    import ray

    decisions_dir = out / "_decisions"
    if _done(decisions_dir):
        return decisions_dir
    dirs = {name: out / name for name in ("_keys", "_rows", "_partials", "_dparts", "_decisions")}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    t_start = time.perf_counter()
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    stems = [Path(f).stem for f in files]
    refs = bool(getattr(op, "row_refs", False))
    per_row = op.keys_per_row() if refs else 1
    target = key_rows_per_partition if refs else rows_per_partition
    fine = FINE * partitions_for(rows, per_row, target, cpus)
    steps: dict[str, list[dict[str, Any]]] = {}
    if op.fit_rows() > 0 and files:
        op = ray.get(ray.remote(num_cpus=1)(_fit).remote(op, [str(f) for f in files], rows))
    op_ref = ray.put(op)
    mapped = ray.get([ray.remote(num_cpus=1)(_map_file).remote(op_ref, str(f), i, fine, str(out)) for i, f in enumerate(files)])
    key_files = [(i, str(dirs["_keys"] / f"{i:06d}.arrow")) for i, m in enumerate(mapped) if m["key_rows"]]
    fine_counts = sum((m.pop("fine_counts") for m in mapped if "fine_counts" in m), np.zeros(fine, np.int64))
    steps["map"] = mapped
    key_rows = int(fine_counts.sum())
    # reducers: consecutive fine partitions, enough of them to keep the cores busy
    per_reducer = max(1, min(target, max(MIN_ROWS_PER_PARTITION, math.ceil(key_rows / (2 * max(1, cpus))))))
    spans = _ranges(fine_counts, per_reducer) if key_rows else []
    decisions_dir.mkdir(parents=True, exist_ok=True)
    n_decisions = 0
    if refs:
        cap = op.bucket_cap()
        hot = np.zeros(0, np.int64)
        if cap is not None and spans:
            found = ray.get([ray.remote(num_cpus=1)(_hot_partition).remote(sp, key_files, cap) for sp in spans])
            steps["hot"] = [{k: v for k, v in f.items() if k != "hot"} | {"hot_keys": len(f["hot"])} for f in found]
            hot = np.unique(np.concatenate([f["hot"] for f in found]))
        hot_ref = ray.put(hot)
        reduce = ray.remote(num_cpus=1)(_reduce_refs)
        outs = [str(dirs["_partials"] / f"p{p:05d}.parquet") for p in range(len(spans))]
        reduced = ray.get([reduce.remote(op_ref, sp, key_files, str(out), hot_ref, o) for sp, o in zip(spans, outs, strict=True)])
        steps["reduce"] = reduced
        counts: dict[str, int] = {}
        for r in reduced:
            for k in ("key_rows", "rows_read", "candidate_pairs", "edges", "hot_buckets", "hot_members", "hot_unverified"):
                counts[k] = counts.get(k, 0) + int(r.get(k, 0))
        partial_files = [o for o, r in zip(outs, reduced, strict=True) if r]
        error_files = [i for i, m in enumerate(mapped) if m.get("errors")]
        if partial_files or error_files or any(m.get("summary_rows") for m in mapped):
            combined = ray.get(
                ray.remote(num_cpus=1)(_combine_refs).remote(op_ref, partial_files, str(out), stems, error_files, counts)
            )
            steps["combine"] = [combined]
            n_decisions = combined["decisions"]
    elif op.has_combine():
        decide = ray.remote(num_cpus=1)(_reduce_summary)
        outs = [str(dirs["_partials"] / f"p{p:05d}.parquet") for p in range(len(spans))]
        reduced = ray.get([decide.remote(op_ref, sp, key_files, stems, o, 1) for sp, o in zip(spans, outs, strict=True)])
        steps["reduce"] = reduced
        partial_files = [o for o, r in zip(outs, reduced, strict=True) if r]
        if partial_files:
            combined = ray.get(ray.remote(num_cpus=1)(_combine_partials).remote(op_ref, partial_files, stems, str(decisions_dir)))
            steps["combine"] = [combined]
            n_decisions = combined["decisions"]
    else:
        buckets = max(1, min(len(files), len(spans)))
        decide = ray.remote(num_cpus=1)(_reduce_summary)
        outs = [str(dirs["_dparts"] / f"p{p:05d}.arrow") for p in range(len(spans))]
        reduced = ray.get([decide.remote(op_ref, sp, key_files, stems, o, buckets) for sp, o in zip(spans, outs, strict=True)])
        steps["reduce"] = reduced
        dparts = [o for o, r in zip(outs, reduced, strict=True) if r.get("decisions")]
        if dparts:
            regrouped = ray.get([ray.remote(num_cpus=1)(_regroup).remote(b, dparts, stems, str(decisions_dir)) for b in range(buckets)])
            steps["regroup"] = regrouped
            n_decisions = sum(r.get("decisions", 0) for r in regrouped)
    info = {
        "layout": LAYOUT,
        "decisions": n_decisions,
        "rows": rows,
        "files": len(files),
        "key_rows": key_rows,
        "fine_partitions": fine,
        "partitions": len(spans),
        "seconds": round(time.perf_counter() - t_start, 3),
        "steps": {name: _step_stats(results) for name, results in steps.items()},
    }
    atomic_write_json(decisions_dir / "_SUCCESS", info)
    for name in ("_keys", "_rows", "_partials", "_dparts"):
        shutil.rmtree(dirs[name], ignore_errors=True)
    log.info("%s: %d rows, %d files, %d partitions, %d decisions", op.stage, rows, len(files), len(spans), n_decisions)
    return decisions_dir


class ApplyFn:
    """``map_batches`` callable: a block of input file paths -> their records with decisions
    applied, each file with its own decision file only (``_decisions/<stem>.parquet``)."""

    def __init__(self, op: GlobalOperator, decisions_dir: Path) -> None:
        self.op = op
        self.decisions_dir = str(decisions_dir)

    def _decisions_for(self, stem: str) -> pa.Table:
        path = Path(self.decisions_dir) / f"{stem}.parquet"
        if not path.exists():
            return pa.table({"id": pa.array([], pa.string())})
        return pq.read_table(path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = []
        for path in batch["path"].to_pylist():
            table = pq.read_table(path)
            tables.append(self.op.apply(table, self._decisions_for(Path(path).stem)))
        return pa.concat_tables(tables)
