"""Before shards are written, the rows they draw are copied once out of every curated file into
an uncompressed Arrow IPC file (``SHARDS/.gather/<n>.arrow``, only the rows some shard still to
write needs, in file order), which the shard tasks memory-map and take from.

A shard of a pre-mixed stage draws from every file, and Parquet is read a row group at a time:
without this step every shard would decode every row group of every file (the whole table per
shard). With it the table is decoded once, one Ray task per file, spread over the nodes, each
holding one row group; a shard task touches only the pages of its own rows. The folder is
removed once every shard is written."""

from __future__ import annotations

import dataclasses
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixtures.pool import ordered_map
from mixtures.shards import ShardJob

__all__ = ["BATCH_ROWS", "gather", "remove"]

BATCH_ROWS = 4096  # rows per record batch of a gathered file (what a shard's take decodes around a row)


def _gather_file(path: str, rows: np.ndarray, dest: str) -> int:
    """Rows ``rows`` (ascending) of one curated file, every column, into ``dest``; returns how many."""
    pf = pq.ParquetFile(path)
    bounds = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    group_of = np.searchsorted(bounds, rows, side="right") - 1
    tmp = Path(dest).with_name(Path(dest).name + ".tmp")
    written = 0
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, pf.schema_arrow) as writer:
        for g in np.unique(group_of).tolist():
            part = pf.read_row_group(g, use_threads=False).take(pa.array(rows[group_of == g] - bounds[g]))
            for batch in part.to_batches(max_chunksize=BATCH_ROWS):
                writer.write_batch(batch)
                written += batch.num_rows
    tmp.replace(dest)
    return written


def gather(jobs: list[ShardJob], folder: Path) -> list[ShardJob]:
    """The rows of ``jobs`` copied into ``folder`` (one file per curated file they read); the jobs
    again, reading from there."""
    remove(folder)
    if not jobs:
        return jobs
    folder.mkdir(parents=True)
    wanted: dict[str, list[np.ndarray]] = defaultdict(list)
    for job in jobs:
        for i, path in enumerate(job.files):
            wanted[path].append(job.row[job.file == i])
    paths = sorted(wanted)
    rows = {p: np.unique(np.concatenate(wanted[p])) for p in paths}
    del wanted
    dest = {p: str(folder / f"{n:06d}.arrow") for n, p in enumerate(paths)}
    ordered_map(_gather_file, [(p, rows[p], dest[p]) for p in paths])
    out = []
    for job in jobs:
        at = np.empty(len(job), dtype=np.int64)
        for i, path in enumerate(job.files):
            mine = job.file == i
            at[mine] = np.searchsorted(rows[path], job.row[mine])
        out.append(dataclasses.replace(job, gathered=[dest[p] for p in job.files], gathered_row=at))
    return out


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
