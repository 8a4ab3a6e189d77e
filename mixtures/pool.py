"""The candidate pool of a stage: every kept row of the curated table that some leaf group can
draw, with its cost in the stage unit, as columnar arrays (about 45 bytes a row, ids not held).

The curated Parquet files are scanned batch by batch on the columns the groups and the costs
read (one Ray task per file when Ray is up, else in this process), so memory holds one batch of
records, never a file of Python dicts. A row stored in several bucket partitions enters the pool
once, at its first copy (by file, then row); copies are told apart by two 64-bit hashes of the id
(its order key and a polynomial hash). Ids themselves stay in the files: the order keys are
computed from them (``order_keys``), the shard writer reads them with the rows.

Arrays per pool row: ``file_index`` and ``row_index`` (int32: where the row is), ``source``
(int32, an index into ``source_names``, which are sorted), ``bytes`` (int64, media bytes),
``costs[unit]`` (float64), the epoch-0 order key of the seed (uint64), and ``members``: per leaf
group the pool rows it can draw (int64, ascending)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixtures.config import Estimators, GroupSpec, StageMix
from mixtures.table_costs import COST_COLUMNS, media_bytes, table_costs
from mixtures.table_match import match_columns, match_leaves

__all__ = ["COST_KEYS", "Leaf", "Pool", "curated_files", "leaves_of", "load_pool", "order_key", "order_keys", "ordered_map"]

COST_KEYS = ("samples", "tokens", "seconds", "hours", "text_tokens", "image_tokens", "video_tokens", "audio_tokens", "frames", "images")
BATCH_ROWS = 32_768  # rows of a curated file decoded at a time
_POLY = np.uint64(0x100000001B3)  # the second hash of an id: sum of (byte + 1) * P^i mod 2^64, with its length


@dataclass
class Leaf:
    """A leaf group: the path of names from the root, and the conditions of every ancestor."""

    path: str  # "understanding/image-text"
    specs: list[GroupSpec]  # root ... leaf

    def matches(self, row: dict[str, Any]) -> bool:
        for g in self.specs:
            if g.buckets is not None and not set(g.buckets) & set(row.get("buckets") or []):
                return False
            if g.tasks is not None and not set(g.tasks) & set(row.get("tasks") or []):
                return False
            if not g.where.matches(row):
                return False
        return True


def leaves_of(groups: list[GroupSpec], parents: list[GroupSpec] | None = None) -> list[Leaf]:
    out: list[Leaf] = []
    for g in groups:
        chain = [*(parents or []), g]
        if g.groups:
            out += leaves_of(g.groups, chain)
        else:
            out.append(Leaf("/".join(x.name for x in chain), chain))
    return out


def order_key(sample_id: str, seed: int, epoch: int = 0) -> int:
    """Stable position of a sample in its source's order: a hash of (id, seed, epoch). Adding a
    source never moves the others."""
    digest = hashlib.blake2b(f"{sample_id}\0{seed}\0{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def order_keys(ids: pa.Array, seed: int, epoch: int = 0) -> np.ndarray:
    """``order_key`` of every id of a string array, as uint64."""
    suffix = f"\0{seed}\0{epoch}".encode()
    b2 = hashlib.blake2b
    raw = ids.cast(pa.binary()).to_pylist()
    digests = b"".join([b2(x + suffix, digest_size=8).digest() for x in raw])
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _poly_hash(ids: pa.Array) -> np.ndarray:
    """A second 64-bit hash of every id (with the order key: two ids are one row only when both agree)."""
    arr = ids.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]] if len(arr) else np.zeros(0, np.uint8)
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    if not len(data):
        return lengths.astype(np.uint64)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(int(lengths.max()), _POLY, dtype=np.uint64))
        cum = np.concatenate(([np.uint64(0)], np.cumsum((data.astype(np.uint64) + np.uint64(1)) * powers[pos], dtype=np.uint64)))
        return (cum[offsets[1:]] - cum[offsets[:-1]]) ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def _ray_up() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def ordered_map(fn: Any, args: list[tuple], *, in_flight: int | None = None) -> list[Any]:
    """``[fn(*a) for a in args]``, as Ray tasks when Ray is up (at most ``in_flight`` at a time,
    spread over the cluster's nodes), else in this process."""
    if not _ray_up() or len(args) < 2:
        return [fn(*a) for a in args]
    import ray

    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(fn)
    limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    out: list[Any] = [None] * len(args)
    pending: dict[Any, int] = {}
    nxt = 0
    while nxt < len(args) or pending:
        while nxt < len(args) and len(pending) < limit:
            pending[task.remote(*args[nxt])] = nxt
            nxt += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        out[pending.pop(ready[0])] = ray.get(ready[0])
    return out


@dataclass
class Pool:
    files: list[str] = field(default_factory=list)
    file_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # which curated file holds the row
    row_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # row inside that file
    source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # index into source_names
    source_names: list[str] = field(default_factory=list)  # sorted
    bytes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # media bytes (for shard size limits)
    costs: dict[str, np.ndarray] = field(default_factory=dict)  # the stage unit -> cost of every row
    members: dict[str, np.ndarray] = field(default_factory=dict)  # leaf path -> pool rows (ascending)
    fingerprint: str = ""  # hash of (id, content hash) of every pool row: the input's identity
    keys: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)  # (seed, epoch) -> order keys

    def __len__(self) -> int:
        return len(self.row_index)

    def nbytes(self) -> int:
        """Bytes the pool's arrays hold."""
        arrays = [self.file_index, self.row_index, self.source, self.bytes, *self.costs.values(), *self.members.values(), *self.keys.values()]
        return int(sum(a.nbytes for a in arrays))

    def file_rows(self) -> list[tuple[int, int, int]]:
        """(file index, first pool row, end) of every file with pool rows: the pool is in file order."""
        bounds = np.flatnonzero(np.diff(self.file_index)) + 1
        starts = np.concatenate(([0], bounds)).astype(np.int64)
        ends = np.concatenate((bounds, [len(self)])).astype(np.int64)
        return [(int(self.file_index[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True) if e > s]

    def ids_of(self, rows: np.ndarray) -> list[str]:
        """The ids of pool rows ``rows`` (read from the curated files)."""
        rows = np.asarray(rows, dtype=np.int64)
        out: list[str] = [""] * len(rows)
        order = np.argsort(self.file_index[rows], kind="stable")
        files = self.file_index[rows][order]
        for f in np.unique(files):
            picked = order[files == f]
            ids = pq.read_table(self.files[int(f)], columns=["id"]).column("id")
            for i, v in zip(picked.tolist(), ids.take(pa.array(self.row_index[rows[picked]])).to_pylist(), strict=True):
                out[i] = v
        return out

    def order_keys(self, seed: int, epoch: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Order keys of every pool row (of ``rows`` only, zeros elsewhere) for (seed, epoch); the
        epoch-0 keys are kept for the next plan."""
        if (seed, epoch) in self.keys:
            return self.keys[(seed, epoch)]
        want = None if rows is None else np.zeros(len(self), dtype=bool)
        if want is not None:
            want[rows] = True
        jobs = []
        for f, a, b in self.file_rows():
            sel = np.arange(a, b) if want is None else a + np.flatnonzero(want[a:b])
            if len(sel):
                jobs.append((self.files[f], self.row_index[sel], seed, epoch, sel))
        keys = np.zeros(len(self), dtype=np.uint64)
        for (_, _, _, _, sel), k in zip(jobs, ordered_map(_file_keys, [j[:4] for j in jobs]), strict=True):
            keys[sel] = k
        if epoch == 0 and rows is None:
            self.keys[(seed, 0)] = keys
        return keys


def _file_keys(path: str, rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    ids = pq.read_table(path, columns=["id"]).column("id").take(pa.array(rows))
    return order_keys(ids.combine_chunks(), seed, epoch)


def curated_files(path: str | Path) -> list[str]:
    """The Parquet files of a curated table: OUT (a run folder), OUT/samples, or a folder of files."""
    p = Path(path)
    if (p / "samples").is_dir():
        p = p / "samples"
    if p.is_file():
        return [str(p)]
    files = sorted(str(f) for f in p.rglob("*.parquet") if not f.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{path}: no curated Parquet files (expected a `curate run` output folder)")
    return files


def _scan_file(path: str, leaves: list[Leaf], est: Estimators, unit: str, seed: int, threads: bool = False) -> dict[str, Any]:
    """The candidates of one curated file: kept rows some leaf takes, with what the pool keeps."""
    pf = pq.ParquetFile(path)
    present = set(pf.schema_arrow.names)
    wanted = {"id", "status", "source", *match_columns(leaves), *COST_COLUMNS}
    names = [c for c in pf.schema_arrow.names if c in wanted]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "source", "bytes", "cost", "bits", "key0", "key2")}
    sources: dict[str, int] = {}
    start = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=names, use_threads=threads):
        n = batch.num_rows
        if "status" in present:
            kept = pc.fill_null(pc.equal(batch.column("status"), "kept"), False).to_numpy(zero_copy_only=False)
        else:
            kept = np.zeros(n, dtype=bool)
        bits = match_leaves(leaves, batch, kept)
        cand = bits.any(axis=1)
        rows = np.flatnonzero(cand)
        if len(rows):
            pick = pa.array(rows)
            ids = batch.column("id").take(pick)
            src = batch.column("source").take(pick) if "source" in present else pa.nulls(len(rows), pa.string())
            enc = pc.dictionary_encode(pc.fill_null(src, ""))
            local = np.asarray([sources.setdefault(s, len(sources)) for s in enc.dictionary.to_pylist()], dtype=np.int32)
            parts["row"].append((start + rows).astype(np.int32))
            parts["source"].append(local[enc.indices.to_numpy(zero_copy_only=False)])
            parts["bytes"].append(media_bytes(batch)[rows])
            parts["cost"].append(table_costs(batch, est)[unit][rows])
            parts["bits"].append(np.packbits(bits[rows], axis=1))
            parts["key0"].append(order_keys(ids, seed, 0))
            parts["key2"].append(_poly_hash(ids))
        start += n
    nb = (len(leaves) + 7) // 8
    empty = {"row": np.int32, "source": np.int32, "bytes": np.int64, "cost": np.float64, "key0": np.uint64, "key2": np.uint64}
    out: dict[str, Any] = {k: np.concatenate(v) if v else np.zeros(0, empty.get(k, np.uint8)) for k, v in parts.items()}
    if not parts["bits"]:
        out["bits"] = np.zeros((0, nb), dtype=np.uint8)
    out["names"] = list(sources)
    return out


def _first_copies(key0: np.ndarray, key2: np.ndarray) -> np.ndarray:
    """Booleans: the first candidate of every id (same two hashes = same id)."""
    n = len(key0)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    order = np.argsort(key0, kind="stable")
    k0 = key0[order]
    same = np.flatnonzero(k0[1:] == k0[:-1])
    if not len(same):
        return keep
    # only the rows whose first hash is shared: sort those by (key0, key2, position)
    shared = np.unique(np.concatenate((order[same], order[same + 1])))
    o = np.lexsort((shared, key2[shared], key0[shared]))
    s = shared[o]
    dup = (key0[s][1:] == key0[s][:-1]) & (key2[s][1:] == key2[s][:-1])
    keep[s[1:][dup]] = False
    return keep


def load_pool(path: str | Path, stage: StageMix, estimators: Estimators, *, seed: int = 0) -> Pool:
    """Scan the curated table once (and the ids once more, for the input's fingerprint). A row
    eligible for several buckets is stored once per bucket partition; it enters the pool once.
    ``seed``: the order keys computed on the way (another seed's are computed when planned)."""
    leaves = leaves_of(stage.groups)
    files = curated_files(path)
    scans = ordered_map(_scan_file, [(f, leaves, estimators, stage.unit, seed, not _ray_up()) for f in files])
    names = sorted({s for sc in scans for s in sc["names"]})
    code = {s: i for i, s in enumerate(names)}
    cat = {k: np.concatenate([sc[k] for sc in scans]) for k in ("row", "bytes", "cost", "key0", "key2")}
    cat["bits"] = np.concatenate([sc["bits"] for sc in scans])
    cat["source"] = np.concatenate([np.asarray([code[s] for s in sc["names"]] or [0], dtype=np.int32)[sc["source"]] for sc in scans])
    cat["file"] = np.repeat(np.arange(len(files), dtype=np.int32), [len(sc["row"]) for sc in scans])
    del scans
    keep = _first_copies(cat["key0"], cat.pop("key2"))
    pool = Pool(files=files, source_names=names)
    pool.file_index = cat["file"][keep]
    pool.row_index = cat["row"][keep]
    pool.source = cat["source"][keep]
    pool.bytes = cat["bytes"][keep]
    pool.costs = {stage.unit: cat["cost"][keep]}
    pool.keys[(seed, 0)] = cat["key0"][keep]
    bits = cat["bits"][keep]
    del cat
    for j, leaf in enumerate(leaves):
        pool.members[leaf.path] = np.flatnonzero((bits[:, j // 8] >> (7 - j % 8)) & 1).astype(np.int64)
    del bits
    pool.fingerprint = _fingerprint(pool)
    return pool


def _fingerprint(pool: Pool) -> str:
    """sha256 of ``<id>:<content_hash>\\n`` of every pool row, in pool order (16 hex digits)."""
    fp = hashlib.sha256()
    for f, a, b in pool.file_rows():
        pf = pq.ParquetFile(pool.files[f])
        cols = [c for c in ("id", "content_hash") if c in pf.schema_arrow.names]
        t = pf.read(columns=cols, use_threads=False).take(pa.array(pool.row_index[a:b]))
        ids = t.column("id").combine_chunks()
        ch = t.column("content_hash").combine_chunks() if "content_hash" in cols else pa.nulls(len(ids), pa.string())
        lines = pc.binary_join_element_wise(pc.binary_join_element_wise(ids, pc.fill_null(ch, "None"), ":"), "", "\n")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
        fp.update(memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])])
    return fp.hexdigest()[:16]
