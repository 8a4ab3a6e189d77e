"""A global operator as a map-reduce over files, moving only small key rows.

map:    every input file -> ``op.summarize`` -> rows hash-partitioned on ``_key`` into
        ``_keys/p<k>/<file>.parquet``
reduce: every partition -> ``op.decide`` -> ``_decisions/p<k>.parquet`` (with each id's file)
apply:  every file -> ``op.apply`` with the decisions for its rows (``ApplyFn``, run inside the
        segment's Ray Data pipeline together with the row-local stages that follow)

Optional steps (see ``GlobalOperator``): ``fit`` runs first, as one Ray task on a sample of rows
spread evenly over the files (k-means centroids), and the fitted operator runs the rest; with
``combine``, every partition's ``decide`` output is written to ``_partials/p<k>.parquet`` and one
Ray task concatenates them and calls ``op.combine`` (connected components over near-duplicate
edges), writing ``_decisions/combined.parquet``.

``_key`` is a string (hashed with crc32) or an integer (mixed with splitmix64, vectorised).

Each step is a Ray task per file or partition; a ``_SUCCESS`` marker makes a finished
decision step skip on rerun. Full records never leave their file, so the cost is that of
shuffling a few dozen bytes per row (Ray Data's own hash shuffle moved whole nested records and
cost seconds per thousand rows on 2 cores; see benchmarks/).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from operators.base import GlobalOperator
from schemas.files import atomic_write_json, atomic_write_parquet
from schemas.hashing import partition_of

__all__ = ["ApplyFn", "InProcessRun", "decide_globally", "run_in_process"]

log = logging.getLogger(__name__)
ROWS_PER_PARTITION = 1_000_000
#: operators with ``combine`` (near-duplicate LSH) emit several key rows per row and verify pairs
#: in ``decide``: they get more, smaller partitions so the reduce step uses every core
ROWS_PER_EDGE_PARTITION = 50_000


def _summarize_file(op: GlobalOperator, path: str, partitions: int, keys_dir: str) -> int:
    table = pq.read_table(path)
    summary = op.summarize(table)
    if summary.num_rows == 0:
        return 0
    stem = Path(path).stem
    summary = summary.append_column("_file", pa.array([stem] * summary.num_rows, pa.string()))
    part = pa.array(partition_of(summary["_key"].combine_chunks(), partitions), pa.int32())
    for p in pc.unique(part).to_pylist():
        atomic_write_parquet(summary.filter(pc.equal(part, p)), Path(keys_dir) / f"p{p:05d}" / f"{stem}.parquet")
    return summary.num_rows


def _decide_partition(op: GlobalOperator, part_dir: str, out_path: str) -> int:
    files = sorted(Path(part_dir).glob("*.parquet"))
    summary = pa.concat_tables([pq.read_table(f) for f in files])
    if op.has_combine():  # partial results; ``combine`` names each decided id's file
        partial = op.decide(summary)
        atomic_write_parquet(partial, Path(out_path))
        return partial.num_rows
    decisions = op.decide(summary.drop_columns(["_file"]))
    if decisions.num_rows:
        decisions = decisions.join(summary.select(["id", "_file"]), "id", join_type="left outer")
    else:
        decisions = decisions.append_column("_file", pa.array([], pa.string()))
    atomic_write_parquet(decisions, Path(out_path))
    return decisions.num_rows


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


def _combine(op: GlobalOperator, partial_dir: str, out_path: str) -> int:
    files = sorted(Path(partial_dir).glob("*.parquet"))
    partials = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    decisions = op.combine(partials)
    if "_file" not in decisions.column_names:
        raise ValueError(f"{op.stage}: combine() must return a `_file` column with each id's file")
    if op.report_file and op.artifacts_dir:
        atomic_write_json(Path(op.artifacts_dir) / op.report_file, op.report(partials, decisions))
    atomic_write_parquet(decisions, Path(out_path))
    return decisions.num_rows


@dataclass
class InProcessRun:
    """What ``run_in_process`` gives: the applied table, the decisions, and ``op.report`` (with combine)."""

    table: pa.Table
    decisions: pa.Table
    report: dict[str, Any]


def run_in_process(op: GlobalOperator, table: pa.Table, partitions: int = 3) -> InProcessRun:
    """fit -> summarize -> hash-partition on ``_key`` -> decide per partition -> combine -> apply,
    in one process on one table: the steps ``decide_globally`` runs as Ray tasks over files
    (tests, benchmarks, notebooks). Writes nothing."""
    if op.fit_rows() > 0 and table.num_rows:  # about fit_rows() rows, evenly spaced, as from files
        k = min(table.num_rows, op.fit_rows())
        op.fit(table.take(pa.array(np.unique(np.linspace(0, table.num_rows - 1, k).round().astype(np.int64)))), table.num_rows)
    summary = op.summarize(table)
    if op.has_combine():
        summary = summary.append_column("_file", pa.nulls(summary.num_rows, pa.string()))
    part = np.asarray(partition_of(summary["_key"].combine_chunks(), partitions)) if summary.num_rows else np.zeros(0)
    decided = [op.decide(summary.filter(pa.array(part == p))) for p in range(partitions) if (part == p).any()]
    report: dict[str, Any] = {}
    if op.has_combine():
        partials = pa.concat_tables(decided) if decided else None
        decisions = op.combine(partials) if partials is not None else pa.table({"id": pa.array([], pa.string())})
        if partials is not None:
            report = op.report(partials, decisions)
    else:
        decisions = pa.concat_tables(decided) if decided else pa.table({"id": pa.array([], pa.string())})
    return InProcessRun(op.apply(table, decisions), decisions, report)


def decide_globally(op: GlobalOperator, files: list[Path], out: Path, cpus: int) -> Path:
    """Run the map and reduce steps (and the optional fit and combine steps); returns the
    decisions folder (reused when complete)."""
    import ray

    decisions_dir = out / "_decisions"
    if (decisions_dir / "_SUCCESS").exists():
        return decisions_dir
    keys_dir = out / "_keys"
    partial_dir = out / "_partials"
    for d in (keys_dir, partial_dir, decisions_dir):
        shutil.rmtree(d, ignore_errors=True)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    combining = op.has_combine()
    per_partition = ROWS_PER_EDGE_PARTITION if combining else ROWS_PER_PARTITION
    partitions = max(1, min(4 * max(1, cpus), math.ceil(rows / per_partition)))
    if op.fit_rows() > 0 and files:
        op = ray.get(ray.remote(num_cpus=1)(_fit).remote(op, [str(f) for f in files], rows))
    op_ref = ray.put(op)
    summarize = ray.remote(num_cpus=1)(_summarize_file)
    ray.get([summarize.remote(op_ref, str(f), partitions, str(keys_dir)) for f in files])
    decide = ray.remote(num_cpus=1)(_decide_partition)
    parts = sorted(p for p in keys_dir.glob("p*") if p.is_dir())
    target = partial_dir if combining else decisions_dir
    counts = ray.get([decide.remote(op_ref, str(p), str(target / f"{p.name}.parquet")) for p in parts])
    if combining:
        decided = 0
        if parts:
            combine = ray.remote(num_cpus=1)(_combine)
            decided = ray.get(combine.remote(op_ref, str(partial_dir), str(decisions_dir / "combined.parquet")))
        log.info("%s: %d partial rows from %d partitions -> %d decisions", op.stage, sum(counts), len(parts), decided)
        counts = [decided]
    decisions_dir.mkdir(parents=True, exist_ok=True)
    (decisions_dir / "_SUCCESS").write_text(f"{sum(counts)}\n")
    shutil.rmtree(keys_dir, ignore_errors=True)
    shutil.rmtree(partial_dir, ignore_errors=True)
    log.info("%s: %d rows, %d partitions, %d decisions", op.stage, rows, partitions, sum(counts))
    return decisions_dir


class ApplyFn:
    """``map_batches`` callable: a block of input file paths -> their records with decisions applied."""

    def __init__(self, op: GlobalOperator, decisions_dir: Path) -> None:
        self.op = op
        self.decisions_dir = str(decisions_dir)

    def _decisions_for(self, stem: str) -> pa.Table:
        files = sorted(Path(self.decisions_dir).glob("*.parquet"))
        if not files:
            return pa.table({"id": pa.array([], pa.string())})
        ds = pads.dataset([str(f) for f in files], format="parquet")
        return ds.to_table(filter=pc.field("_file") == stem)

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = []
        for path in batch["path"].to_pylist():
            table = pq.read_table(path)
            tables.append(self.op.apply(table, self._decisions_for(Path(path).stem)))
        return pa.concat_tables(tables)
