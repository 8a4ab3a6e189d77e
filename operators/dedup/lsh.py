"""LSH key arithmetic shared by the near-duplicate operators: 64-bit keys as Arrow int64, padded
per-row key matrices, candidate pairs inside buckets, the smallest shared key of a pair (so a
pair that shares several keys is verified once, in one bucket), and hot keys (buckets too big
to verify all their pairs)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.hashing import mix64

__all__ = [
    "PAD",
    "KeyLists",
    "as_key",
    "bucket_pairs",
    "cap_key_matrix",
    "cap_keys",
    "first_shared_key",
    "hot_keys",
    "in_sorted",
    "key_matrix",
]

PAD = np.iinfo(np.int64).max  # padding of the per-row key matrix: never a real key


def as_key(x: np.ndarray) -> np.ndarray:
    """uint64 key values as int64 (Arrow's and Parquet's integer), keeping the bits."""
    return np.asarray(x, dtype=np.uint64).view(np.int64)


def cap_keys(keys: np.ndarray, cap: int) -> np.ndarray:
    """A row's distinct keys, at most ``cap`` of them: a consistent bottom-k sample (by mixed hash),
    so the same keys survive in every copy of a row."""
    keys = np.unique(np.asarray(keys, dtype=np.uint64))
    if len(keys) > cap:
        keys = np.sort(keys[np.argsort(mix64(keys), kind="stable")[:cap]])
    return keys


def cap_key_matrix(keys: np.ndarray, cap: int) -> np.ndarray:
    """``cap_keys`` for every row of a (rows, k) matrix of distinct keys per row."""
    if keys.shape[1] <= cap:
        return keys
    pick = np.argsort(mix64(keys), axis=1, kind="stable")[:, :cap]
    return np.sort(np.take_along_axis(keys, pick, axis=1), axis=1)


def bucket_pairs(keys: np.ndarray, max_pairs: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All pairs (i < j) of positions sharing a value in the SORTED array ``keys``, in chunks of at
    most about ``max_pairs``. Cost is the sum of bucket_size^2 / 2, never n^2 / 2."""
    n = len(keys)
    if n < 2:
        return
    first = np.ones(n, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, n))
    bucket_of = np.repeat(np.arange(len(starts)), sizes)
    ends = (starts + sizes)[bucket_of]  # one past each row's bucket
    later = ends - np.arange(n) - 1  # partners after each row in its bucket
    rows = np.flatnonzero(later > 0)
    if rows.size == 0:
        return
    counts = later[rows]
    cum = np.cumsum(counts)
    lo = 0
    while lo < len(rows):
        base = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, base + max_pairs, side="right"))
        hi = max(hi, lo + 1)
        r, c = rows[lo:hi], counts[lo:hi]
        left = np.repeat(r, c)
        run_start = np.repeat(np.cumsum(c) - c, c)
        right = left + (np.arange(int(c.sum())) - run_start) + 1
        yield left, right
        lo = hi


def key_matrix(keys_col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<int64> column -> a (rows, longest) int64 matrix padded with PAD."""
    arr = keys_col.combine_chunks() if isinstance(keys_col, pa.ChunkedArray) else keys_col
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(arr), max(1, width)), PAD, dtype=np.int64)
    if width:
        values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        row = np.repeat(np.arange(len(arr)), lengths)
        col = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[row, col] = values
    return out


def in_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Per value: whether it is in ``sorted_keys`` (binary search: cheap when those are few)."""
    if not len(sorted_keys):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values


def hot_keys(keys: np.ndarray, cap: int | None) -> np.ndarray:
    """The keys (sorted) that more than ``cap`` of the given key rows share (none when cap is None)."""
    keys = np.asarray(keys, dtype=np.int64)
    if cap is None or len(keys) <= cap:
        return np.zeros(0, np.int64)
    values, counts = np.unique(keys, return_counts=True)
    return values[counts > cap]


class KeyLists:
    """Rows of a list<int64> column as padded key matrices, gathered on demand; with ``hot``
    (sorted keys), each entry also knows whether it is a hot key."""

    def __init__(self, col: pa.ChunkedArray | pa.Array, hot: np.ndarray | None = None) -> None:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        self.offsets = arr.offsets.to_numpy().astype(np.int64)
        self.values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(self.offsets)
        self.width = int(lengths.max()) if len(lengths) else 1
        self.hot = in_sorted(self.values, hot) if hot is not None and len(hot) else None

    def _gather(self, rows: np.ndarray, values: np.ndarray, pad) -> np.ndarray:
        start, end = self.offsets[rows], self.offsets[rows + 1]
        lengths = end - start
        width = max(1, int(lengths.max()) if len(lengths) else 1)
        out = np.full((len(rows), width), pad, dtype=values.dtype)
        r = np.repeat(np.arange(len(rows)), lengths)
        c = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[r, c] = values[np.repeat(start, lengths) + c]
        return out

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self._gather(rows, self.values, PAD)

    def rank_of(self, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Per (row, key the row holds): the key's place in the row's sorted list."""
        return self._lower_bound(np.asarray(rows), np.asarray(keys, dtype=np.int64)) - self.offsets[rows]

    def _lower_bound(self, rows: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Per (row, value): the position in ``values`` of the first key >= value in the row's
        list (sorted), by a vectorised binary search."""
        lo = self.offsets[rows].copy()
        hi = self.offsets[rows + 1].copy()
        top = len(self.values) - 1
        while True:
            active = lo < hi
            if not active.any():
                return lo
            mid = (lo + hi) >> 1
            less = active & (self.values[np.minimum(mid, top)] < v)
            lo = np.where(less, mid + 1, lo)
            hi = np.where(active & ~less, mid, hi)

    def shared_below(self, x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
        """Per pair of rows (x[i], y[i]) that share a key at rank rx[i] in x's list and ry[i] in
        y's (lists sorted as int64): whether they also share a smaller key that is not hot.

        The shorter of the two prefixes is scanned in order: each key is compared with the other
        row's key of the same rank (LSH keys of similar rows line up), else looked up in the
        other's prefix by binary search. A pair leaves the scan at its first shared key, so
        near-duplicates, which share their first keys, cost a comparison or two; a pair with a
        key at rank 0 costs nothing."""
        rx, ry = np.asarray(rx, dtype=np.int64), np.asarray(ry, dtype=np.int64)
        swap = ry < rx
        scan, other = np.where(swap, y, x), np.where(swap, x, y)
        short, long_ = np.minimum(rx, ry), np.maximum(rx, ry)
        found = np.zeros(len(x), dtype=bool)
        todo = np.flatnonzero(short > 0)
        j = 0
        while len(todo):
            pos = self.offsets[scan[todo]] + j
            base = self.offsets[other[todo]]
            v = self.values[pos]
            hit = self.values[base + j] == v  # j < short <= long_: inside the other's prefix
            if self.hot is not None:
                hit &= ~self.hot[pos]
                miss = np.flatnonzero(~hit & ~self.hot[pos])
            else:
                miss = np.flatnonzero(~hit)
            if len(miss):
                lo = base[miss]
                hi = lo + long_[todo[miss]]
                while True:
                    active = lo < hi
                    if not active.any():
                        break
                    mid = (lo + hi) >> 1
                    less = active & (self.values[mid] < v[miss])
                    lo = np.where(less, mid + 1, lo)
                    hi = np.where(active & ~less, mid, hi)
                end = base[miss] + long_[todo[miss]]
                inside = lo < end
                hit[miss[inside]] = self.values[lo[inside]] == v[miss[inside]]
            found[todo[hit]] = True
            j += 1
            todo = todo[~hit & (short[todo] > j)]
        return found

    def shared(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per pair of rows (x[i], y[i]): (smallest shared key that is not hot, smallest shared
        hot key, number of shared keys); PAD where there is none."""
        kx, ky = self(x), self(y)
        eq = (kx[:, :, None] == ky[:, None, :]).any(axis=2) & (kx != PAD)
        count = eq.sum(axis=1)
        if self.hot is None:
            return np.where(eq, kx, PAD).min(axis=1), np.full(len(x), PAD, np.int64), count
        hx = self._gather(x, self.hot, False)
        cold = np.where(eq & ~hx, kx, PAD).min(axis=1)
        hot = np.where(eq & hx, kx, PAD).min(axis=1)
        return cold, hot, count


def first_shared_key(kx: np.ndarray, ky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of padded key rows: (smallest shared key or PAD, number of shared keys)."""
    eq = (kx[:, :, None] == ky[:, None, :]).any(axis=2) & (kx != PAD)
    shared = np.where(eq, kx, PAD)
    return shared.min(axis=1), eq.sum(axis=1)
