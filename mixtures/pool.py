"""The candidate pool of a stage: every kept row of the curated table that some leaf group can
draw, with its cost in every unit. Read file by file; only compact arrays stay in memory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from mixtures.config import Estimators, GroupSpec, StageMix
from mixtures.costs import sample_costs
from schemas.record import from_table

__all__ = ["COST_KEYS", "Leaf", "Pool", "curated_files", "leaves_of", "load_pool", "order_key"]

COST_KEYS = ("samples", "tokens", "seconds", "hours", "text_tokens", "image_tokens", "video_tokens", "audio_tokens", "frames", "images")


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


@dataclass
class Pool:
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    file_index: list[int] = field(default_factory=list)  # which curated file holds the row
    row_index: list[int] = field(default_factory=list)  # row inside that file
    bytes: list[int] = field(default_factory=list)  # media bytes (for shard size limits)
    costs: dict[str, np.ndarray] = field(default_factory=dict)
    members: dict[str, list[int]] = field(default_factory=dict)  # leaf path -> pool rows
    files: list[str] = field(default_factory=list)
    fingerprint: str = ""  # hash of (id, content hash) of every pool row: the input's identity

    def __len__(self) -> int:
        return len(self.ids)


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


def load_pool(path: str | Path, stage: StageMix, estimators: Estimators) -> Pool:
    """Scan the curated table once. A row eligible for several buckets is stored once per bucket
    partition; it enters the pool once."""
    leaves = leaves_of(stage.groups)
    pool = Pool(files=curated_files(path), members={leaf.path: [] for leaf in leaves})
    seen: set[str] = set()
    fp = hashlib.sha256()
    costs: dict[str, list[float]] = {k: [] for k in COST_KEYS}
    for fi, f in enumerate(pool.files):
        table = pads.dataset(f, format="parquet").to_table()
        for ri, row in enumerate(from_table(table)):
            if row["status"] != "kept" or row["id"] in seen:
                continue
            matched = [leaf.path for leaf in leaves if leaf.matches(row)]
            if not matched:
                continue
            seen.add(row["id"])
            idx = len(pool.ids)
            pool.ids.append(row["id"])
            pool.sources.append(row["source"])
            pool.file_index.append(fi)
            pool.row_index.append(ri)
            pool.bytes.append(sum((m.get("bytes") or 0) for m in row.get("media") or []))
            c = sample_costs(row, estimators)
            for k in COST_KEYS:
                costs[k].append(c[k])
            for leaf in matched:
                pool.members[leaf].append(idx)
            fp.update(f"{row['id']}:{row.get('content_hash')}\n".encode())
    pool.costs = {k: np.asarray(v, dtype=np.float64) for k, v in costs.items()}
    pool.fingerprint = fp.hexdigest()[:16]
    return pool
