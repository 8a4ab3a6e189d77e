"""A global operator as a map-reduce over files, moving only small key rows.

map:    every input file -> ``op.summarize`` -> rows hash-partitioned on ``_key`` into
        ``_keys/p<k>/<file>.parquet``
reduce: every partition -> ``op.decide`` -> ``_decisions/p<k>.parquet`` (with each id's file)
apply:  every file -> ``op.apply`` with the decisions for its rows (``ApplyFn``, run inside the
        segment's Ray Data pipeline together with the row-local stages that follow)

Each step is a Ray task per file or partition; a ``_SUCCESS`` marker makes a finished
decision step skip on rerun. Full records never leave their file, so the cost is that of
shuffling a few dozen bytes per row (Ray Data's own hash shuffle moved whole nested records and
cost seconds per thousand rows on 2 cores; see benchmarks/).
"""

from __future__ import annotations

import logging
import math
import shutil
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate.sinks import write_atomic
from operators.base import GlobalOperator

__all__ = ["ApplyFn", "decide_globally"]

log = logging.getLogger(__name__)
ROWS_PER_PARTITION = 1_000_000


def _partition_of(keys: pa.Array, partitions: int) -> list[int]:
    return [zlib.crc32(k.encode()) % partitions for k in keys.to_pylist()]


def _summarize_file(op: GlobalOperator, path: str, partitions: int, keys_dir: str) -> int:
    table = pq.read_table(path)
    summary = op.summarize(table)
    if summary.num_rows == 0:
        return 0
    stem = Path(path).stem
    summary = summary.append_column("_file", pa.array([stem] * summary.num_rows, pa.string()))
    part = pa.array(_partition_of(summary["_key"].combine_chunks(), partitions), pa.int32())
    for p in pc.unique(part).to_pylist():
        write_atomic(summary.filter(pc.equal(part, p)), Path(keys_dir) / f"p{p:05d}" / f"{stem}.parquet")
    return summary.num_rows


def _decide_partition(op: GlobalOperator, part_dir: str, out_path: str) -> int:
    files = sorted(Path(part_dir).glob("*.parquet"))
    summary = pa.concat_tables([pq.read_table(f) for f in files])
    decisions = op.decide(summary.drop_columns(["_file"]))
    if decisions.num_rows:
        decisions = decisions.join(summary.select(["id", "_file"]), "id", join_type="left outer")
    else:
        decisions = decisions.append_column("_file", pa.array([], pa.string()))
    write_atomic(decisions, Path(out_path))
    return decisions.num_rows


def decide_globally(op: GlobalOperator, files: list[Path], out: Path, cpus: int) -> Path:
    """Run the map and reduce steps; returns the decisions folder (reused when complete)."""
    import ray

    decisions_dir = out / "_decisions"
    if (decisions_dir / "_SUCCESS").exists():
        return decisions_dir
    keys_dir = out / "_keys"
    shutil.rmtree(keys_dir, ignore_errors=True)
    shutil.rmtree(decisions_dir, ignore_errors=True)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    partitions = max(1, min(4 * max(1, cpus), math.ceil(rows / ROWS_PER_PARTITION)))
    op_ref = ray.put(op)
    summarize = ray.remote(num_cpus=1)(_summarize_file)
    ray.get([summarize.remote(op_ref, str(f), partitions, str(keys_dir)) for f in files])
    decide = ray.remote(num_cpus=1)(_decide_partition)
    parts = sorted(p for p in keys_dir.glob("p*") if p.is_dir())
    counts = ray.get([decide.remote(op_ref, str(p), str(decisions_dir / f"{p.name}.parquet")) for p in parts])
    decisions_dir.mkdir(parents=True, exist_ok=True)
    (decisions_dir / "_SUCCESS").write_text(f"{sum(counts)}\n")
    shutil.rmtree(keys_dir, ignore_errors=True)
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
