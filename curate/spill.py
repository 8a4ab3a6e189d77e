"""Group rows by a string key in bounded memory: hold them until there are too many, then spill
them to disk partitioned by a hash of the key, and give them back one partition at a time.

``Spill(max_rows)`` is how the outputs that must see every row with one id (or one survivor id)
together stay bounded in memory: hours counted once per id (``curate.media_hours``), group sizes
of the dedup report (``curate.dedup_report``). A partition that still holds more than
``max_rows`` rows when read is split again on other bits of the hash, so a process holds about
``max_rows`` rows at a time (a single key with more rows than that is given back whole).

``string_hash`` is the hash (FNV-1a 64 over the UTF-8 bytes, then ``mix64``), vectorised over an
Arrow string array; ``string_hash_one`` is the same for one Python string. The explain index
(``curate.explain_index``) partitions ids with it too, so a lookup finds its partition without a
scan.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["Spill", "group_counts", "string_hash", "string_hash_one"]

_FNV_BASIS = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MASK = (1 << 64) - 1
_FNV_PRIME_INT = 0x100000001B3
#: levels of re-partitioning before a partition is given back whatever its size
_MAX_DEPTH = 6


def string_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 hash per value (null as the empty string), deterministic on every machine."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type):
        off_type = np.int64
    else:
        values = values.cast(pa.string()) if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)) else values
        off_type = np.int32
    n = len(values)
    h = np.full(n, _FNV_BASIS, dtype=np.uint64)
    if n == 0:
        return h
    bufs = values.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[values.offset : values.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    if values.null_count:
        lengths = np.where(np.asarray(values.is_valid()), lengths, 0)
    longest = int(lengths.max(initial=0))
    with np.errstate(over="ignore"):
        for j in range(longest):
            active = lengths > j
            if active.all():
                h ^= data[starts + j].astype(np.uint64)
                h *= _FNV_PRIME
            else:
                sel = np.flatnonzero(active)
                x = h[sel] ^ data[starts[sel] + j].astype(np.uint64)
                h[sel] = x * _FNV_PRIME
    from schemas.hashing import mix64

    return mix64(h)


def string_hash_one(value: str) -> int:
    """``string_hash`` of one string, in plain Python (a lookup imports neither numpy kernels
    nor ``schemas``: the finaliser is ``schemas.hashing.mix64``'s, splitmix64's; a test checks
    that both agree)."""
    h = int(_FNV_BASIS)
    for b in value.encode():
        h = ((h ^ b) * _FNV_PRIME_INT) & _MASK
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


class Spill:
    """Rows grouped by ``key`` in bounded memory (see the module docstring). Use as a context
    manager: the spill folder goes away on exit."""

    def __init__(self, max_rows: int, key: str = "id", *, fanout: int = 16, directory: str | Path | None = None) -> None:
        self.max_rows = max(1, int(max_rows))
        self.key = key
        self.fanout = fanout
        self.directory = directory
        self._held: list[pa.Table] = []
        self._rows = 0
        self._dir: Path | None = None
        self._writers: list[Any] = []
        self._schema: pa.Schema | None = None
        self._counts: list[int] = []

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._schema is None:
            self._schema = table.schema
        table = table.cast(self._schema) if table.schema != self._schema else table
        if not self.spilled:
            self._held.append(table)
            self._rows += table.num_rows
            if self._rows > self.max_rows:
                self._start_spilling()
            return
        self._write(table)

    def _start_spilling(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="nmm-spill-", dir=self.directory))
        self._writers = [pa.ipc.new_stream(str(self._dir / f"p{i:03d}.arrows"), self._schema) for i in range(self.fanout)]
        self._counts = [0] * self.fanout
        held, self._held, self._rows = self._held, [], 0
        for t in held:
            self._write(t)

    def _split(self, table: pa.Table, depth: int) -> list[pa.Table]:
        """``table`` cut into ``fanout`` pieces on the hash bits of level ``depth``."""
        h = string_hash(table[self.key]) // np.uint64(self.fanout**depth)
        part = (h % np.uint64(self.fanout)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.fanout + 1))
        t = table.take(pa.array(order))
        return [t.slice(bounds[p], bounds[p + 1] - bounds[p]) for p in range(self.fanout)]

    def _write(self, table: pa.Table) -> None:
        for p, piece in enumerate(self._split(table, 0)):
            if piece.num_rows:
                self._writers[p].write_table(piece)
                self._counts[p] += piece.num_rows

    def partitions(self) -> Iterator[pa.Table]:
        """Tables whose key sets do not overlap; every row added is in exactly one. Rows keep the
        order they were added in within a partition."""
        if not self.spilled:
            if self._held:
                yield pa.concat_tables(self._held)
            self._held, self._rows = [], 0
            return
        for w in self._writers:
            w.close()
        self._writers = []
        assert self._dir is not None
        for i in range(self.fanout):
            yield from self._read(self._dir / f"p{i:03d}.arrows", self._counts[i], depth=1)

    def _read(self, path: Path, rows: int, depth: int) -> Iterator[pa.Table]:
        if rows == 0:
            return
        if rows <= self.max_rows or depth >= _MAX_DEPTH:
            with pa.OSFile(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
            path.unlink(missing_ok=True)
            yield table
            return
        # too many for one go: stream it into sub-partitions on the next bits of the hash
        children = [path.with_name(f"{path.stem}-{p:03d}.arrows") for p in range(self.fanout)]
        counts = [0] * self.fanout
        assert self._schema is not None
        writers = [pa.ipc.new_stream(str(c), self._schema) for c in children]
        try:
            with pa.OSFile(str(path)) as source:
                for batch in pa.ipc.open_stream(source):
                    for p, piece in enumerate(self._split(pa.Table.from_batches([batch]), depth)):
                        if piece.num_rows:
                            writers[p].write_table(piece)
                            counts[p] += piece.num_rows
        finally:
            for w in writers:
                w.close()
        path.unlink(missing_ok=True)
        for child, n in zip(children, counts, strict=True):
            yield from self._read(child, n, depth + 1)
            child.unlink(missing_ok=True)


def group_counts(*columns: pa.Array | pa.ChunkedArray) -> list[tuple[Any, ...]]:
    """(values..., count) per distinct combination of the columns, in order of first appearance
    (Arrow's group_by alone keeps that order for one or two keys only)."""
    import pyarrow.compute as pc

    names = [f"k{i}" for i in range(len(columns))]
    t = pa.table({**dict(zip(names, columns, strict=True)), "_row": pa.array(np.arange(len(columns[0]), dtype=np.int64))})
    g = t.group_by(names, use_threads=False).aggregate([("_row", "min"), ("_row", "count")])
    g = g.take(pc.sort_indices(g["_row_min"]))
    return list(zip(*(g[n].to_pylist() for n in [*names, "_row_count"]), strict=True))
