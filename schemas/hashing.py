"""The hashes the parts agree on: config fingerprints, the 64-bit mixer of integer keys, and the
partition of a key (the map and reduce steps of a global operator, in any process, must agree)."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

import numpy as np

__all__ = ["fingerprint", "mix64", "partition_of", "popcount64"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def fingerprint(body: Any, length: int = 16) -> str:
    """A short, stable hex digest of a JSON-able value (sorted keys; paths and enums as text)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:length]


def mix64(x: Any) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-mixed, deterministic 64-bit hash of uint64 values."""
    x = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def popcount64(x: Any) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    return np.bitwise_count(np.asarray(x).astype(np.uint64, copy=False)).astype(np.int64)


def partition_of(keys: Any, partitions: int) -> np.ndarray:
    """The partition of each ``_key`` of a pyarrow array: integers through ``mix64`` (nulls as 0),
    strings through crc32. Deterministic in every process and on every machine."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(keys.type):
        x = pc.fill_null(keys, 0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        return (mix64(x) % np.uint64(partitions)).astype(np.int32)
    return np.fromiter((zlib.crc32(k.encode()) % partitions for k in keys.to_pylist()), dtype=np.int32, count=len(keys))
