"""Write one WebDataset shard: members ``<key>.<ext>``, all members of a sample adjacent, one
member per extension, keys without dots; plus ``<shard>.stats.json``.

A shard is a pure function of its sample list, so a rerun writes byte-identical files
(fixed mtime, owner and member order; JSON with sorted keys: the bytes WebDataset's TarWriter
writes). The tar is streamed to a temporary file, hashed as it is written, then renamed: memory
holds the job's rows (read a row group at a time, only the row groups it needs) and one
sample's media, and a media file above ``STREAM_ABOVE`` is copied into the tar as it is read."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixtures.config import Estimators
from mixtures.pool import COST_KEYS, order_key
from mixtures.table_costs import table_costs
from operators.media_io import open_media
from schemas.files import atomic_write_json
from schemas.media_types import DEFAULT_MEMBER_EXT, MEMBER_EXT, MEMBER_PREFIX
from schemas.record import from_table

__all__ = ["ShardJob", "ShardSample", "ShardStats", "check_key", "media_members", "stats_path_of", "write_shard"]

#: media up to this size are read whole before their sample is written (a file that cannot be
#: read skips the sample); larger ones are copied into the tar as they are read
STREAM_ABOVE = 16 * 2**20
_RECORD_FIELDS = (
    "id", "source", "locator", "license", "layout", "modalities", "tasks", "buckets", "caption", "alt_text",
    "instruction", "response", "transcript", "text", "language", "conversation", "interleaved", "preference",
    "interaction", "scores", "parent_id",
)  # fmt: skip

@dataclass(frozen=True, slots=True)
class ShardSample:
    """One sample of a shard: where its curated row is and what the mix says about it."""

    file: str  # curated Parquet file
    row: int  # row inside that file
    key: str  # WebDataset key, unique across the stage
    group: str  # leaf group path
    repeat: int  # epoch of the source this draw is from (0 = first use)
    phase: int  # schedule phase
    cost: dict[str, float]  # unit -> cost
    text_first: bool | None = None  # None: the group sets no text_first


@dataclass(frozen=True)
class ShardJob:
    """One shard to write (a Ray task's argument): its path and its samples, in order, as columns
    (about 20 bytes a sample). The task reads the rows, keys them (``<id>``, or ``<id>_<use>``
    for a row the stage used ``use`` times before) and costs them as the pool did."""

    path: str
    stage: str
    unit: str
    files: list[str]  # the curated files it reads
    file: np.ndarray  # per sample: index into ``files``
    row: np.ndarray  # per sample: row inside that file
    use: np.ndarray  # per sample: earlier uses of the row in the stage
    group: np.ndarray  # per sample: index into ``groups``
    groups: list[str]
    repeat: np.ndarray  # per sample: epoch of its source
    phase: np.ndarray  # per sample: schedule phase
    estimators: Estimators
    seed: int = 0
    text_first: dict[str, float] = field(default_factory=dict)  # group -> share with the text first
    gathered: list[str] | None = None  # the rows copied out of ``files`` (mixtures.gather), parallel to it
    gathered_row: np.ndarray | None = None  # per sample: its row in that copy

    def __len__(self) -> int:
        return len(self.row)

    @property
    def stats_path(self) -> Path:
        return stats_path_of(self.path)


@dataclass(slots=True)
class ShardStats:
    """What ``<shard>.stats.json`` holds: counts and amounts of one written shard."""

    shard: str = ""  # file name
    stage: str = ""
    unit: str = "samples"
    samples: int = 0
    bytes: int = 0
    sha256: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"id", "key", "error"}
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> unit -> amount
    by_phase: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> group -> amount in the unit
    by_phase_source: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> source -> amount in the unit
    by_layout: dict[str, int] = field(default_factory=dict)
    by_modality: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    by_member: dict[str, int] = field(default_factory=dict)  # member suffix -> samples with it
    text_first: dict[str, int] = field(default_factory=dict)  # group -> samples with text first
    shares: dict[str, float] = field(default_factory=dict)  # group -> share of the unit

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardStats:
        """From a stats JSON; keys an older mixer did not write keep their defaults."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def stats_path_of(tar: str | Path) -> Path:
    """``<dir>/<shard>.tar`` -> ``<dir>/<shard>.stats.json``."""
    tar = Path(tar)
    return tar.with_name(tar.name[: -len(".tar")] + ".stats.json")


def check_key(key: str) -> str:
    """WebDataset splits member names at the first dot: a key must have none."""
    if "." in key or "/" in key or not key:
        raise ValueError(f"shard key {key!r} contains a dot or slash; use a hash of the id (e.g. sha1(id)[:24]) as the key")
    return key


def _ext(media: dict[str, Any]) -> str:
    fmt = (media.get("format") or "").lower().split(",")[0]
    if fmt in MEMBER_EXT:
        return MEMBER_EXT[fmt]
    name = media.get("member") or media.get("uri") or ""
    suffix = os.path.splitext(name)[1].lstrip(".").lower()
    return MEMBER_EXT.get(suffix, suffix or DEFAULT_MEMBER_EXT.get(media.get("modality") or "", "bin"))


def media_members(media: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(index into media, member suffix) for every media item that goes into the shard."""
    usable = [(i, m) for i, m in enumerate(media) if not m.get("error") and m.get("role") != "keyframe"]
    if len(usable) == 1:
        i, m = usable[0]
        return [(i, _ext(m))]
    counters: dict[str, int] = defaultdict(int)
    out = []
    for i, m in usable:
        prefix = MEMBER_PREFIX.get(m.get("modality") or "", "media")
        out.append((i, f"{prefix}{counters[prefix]}.{_ext(m)}"))
        counters[prefix] += 1
    return out


def _primary_text(row: dict[str, Any]) -> str | None:
    for key in ("caption", "transcript", "text", "alt_text", "instruction"):
        if row.get(key):
            return row[key]
    return None


def _read(job: ShardJob) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], np.ndarray]:
    """The distinct rows the job draws (records), their costs in every unit, and each sample's
    index into them: from the gathered copies (memory-mapped Arrow, only the batches of its rows),
    else from the curated files, a row group at a time and only the row groups it needs."""
    where = job.row if job.gathered is None else job.gathered_row
    tables, keys, maps = [], [], []
    try:
        for fi in np.unique(job.file).tolist():
            rows = np.unique(where[job.file == fi])
            if job.gathered is None:
                pf = pq.ParquetFile(job.files[fi])
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
                read = functools.partial(pf.read_row_group, use_threads=False)
            else:
                maps.append(pa.memory_map(job.gathered[fi]))
                reader = pa.ipc.open_file(maps[-1])
                sizes = [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)]
                read = reader.get_batch
            bounds = np.cumsum([0, *sizes])
            group_of = np.searchsorted(bounds, rows, side="right") - 1
            for g in np.unique(group_of).tolist():
                part = read(g).take(pa.array(rows[group_of == g] - bounds[g]))
                tables.append(part if isinstance(part, pa.Table) else pa.Table.from_batches([part]))
                keys.append(fi * 2**32 + rows[group_of == g].astype(np.int64))
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        key = np.concatenate(keys)
        order = np.argsort(key, kind="stable")
        index = order[np.searchsorted(key[order], job.file.astype(np.int64) * 2**32 + where)]
        return from_table(table), table_costs(table, job.estimators), index
    finally:
        for m in maps:
            m.close()


class _Hashing:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha = f, hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)


def _members(key: str, row: dict[str, Any]) -> tuple[dict[str, bytes | tuple[IO[bytes], int]], list[dict[str, Any]]]:
    """The media members of a sample ({suffix: bytes, or (open file, size) for a large one}) and
    their records; OSError when a file is gone (nothing is left open then)."""
    members: dict[str, bytes | tuple[IO[bytes], int]] = {}
    meta = []
    try:
        for i, suffix in media_members(row.get("media") or []):
            m = row["media"][i]
            f = open_media(m)
            try:
                size = f.seek(0, os.SEEK_END)
                f.seek(0)
                members[suffix] = (f, size) if size > STREAM_ABOVE else f.read()
            finally:
                if not isinstance(members.get(suffix), tuple):
                    f.close()
            meta.append({**{k: v for k, v in m.items() if v is not None}, "member": f"{key}.{suffix}", "index": i})
    except OSError:
        _close(members)
        raise
    return members, meta


def _close(members: dict[str, Any]) -> None:
    for v in members.values():
        if isinstance(v, tuple):
            v[0].close()


def _record(s: ShardSample, row: dict[str, Any], stage: str, media: list[dict[str, Any]]) -> bytes:
    record = {k: row.get(k) for k in _RECORD_FIELDS if row.get(k) not in (None, [], {})}
    record.update(key=s.key, stage=stage, group=s.group, repeat=s.repeat, cost=s.cost, media=media)
    if s.text_first is not None:
        record["text_first"] = s.text_first
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode()


class _Counts:
    """Running counts of one shard, as plain dicts once done."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.samples = 0
        self.skipped: list[dict[str, str]] = []
        self.by_group: dict[str, dict[str, float]] = {}
        self.by_phase: dict[str, dict[str, float]] = {}
        self.by_phase_source: dict[str, dict[str, float]] = {}
        self.by: dict[str, dict[str, int]] = {k: defaultdict(int) for k in ("layout", "modality", "source", "member", "text_first")}

    def add(self, s: ShardSample, row: dict[str, Any], members: list[str]) -> None:
        if s.text_first is not None:
            self.by["text_first"][s.group] += int(s.text_first)
        for suffix in members:
            self.by["member"][suffix] += 1
        g = self.by_group.setdefault(s.group, defaultdict(float))
        for unit, value in s.cost.items():
            g[unit] += value
        self.by_phase.setdefault(str(s.phase), defaultdict(float))[s.group] += s.cost[self.unit]
        self.by_phase_source.setdefault(str(s.phase), defaultdict(float))[row["source"]] += s.cost[self.unit]
        self.samples += 1
        self.by["layout"][row.get("layout") or "unknown"] += 1
        self.by["source"][row["source"]] += 1
        for mod in row.get("modalities") or []:
            self.by["modality"][mod] += 1

    def stats(self, job: ShardJob, size: int, sha256: str) -> ShardStats:
        total = sum(g.get(self.unit, 0.0) for g in self.by_group.values())
        return ShardStats(
            shard=Path(job.path).name, stage=job.stage, unit=job.unit, samples=self.samples, bytes=size,
            sha256=sha256, skipped=self.skipped,
            by_group={g: dict(v) for g, v in self.by_group.items()}, by_phase={k: dict(v) for k, v in self.by_phase.items()},
            by_phase_source={k: dict(v) for k, v in self.by_phase_source.items()},
            by_layout=dict(self.by["layout"]), by_modality=dict(self.by["modality"]), by_source=dict(self.by["source"]),
            by_member=dict(self.by["member"]), text_first=dict(self.by["text_first"]),
            shares={g: (v.get(self.unit, 0.0) / total if total else 0.0) for g, v in sorted(self.by_group.items())},
        )  # fmt: skip


def _sample(job: ShardJob, i: int, row: dict[str, Any], costs: dict[str, np.ndarray], u: int) -> ShardSample:
    use = int(job.use[i])
    key = row["id"] if use == 0 else f"{row['id']}_{use}"
    group = job.groups[int(job.group[i])]
    share = job.text_first.get(group)
    return ShardSample(
        file=job.files[int(job.file[i])],
        row=int(job.row[i]),
        key=key,
        group=group,
        repeat=int(job.repeat[i]),
        phase=int(job.phase[i]),
        cost={k: float(costs[k][u]) for k in COST_KEYS},
        # a pure function of (seed, key): reruns and resumes agree
        text_first=None if share is None else order_key(key, job.seed, -1) < share * 2**64,
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes | tuple[IO[bytes], int]) -> None:
    """One member, with the header WebDataset's TarWriter writes (fixed mtime, owner and mode)."""
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.mode, ti.uname, ti.gname = 0.0, 0o0444, "nmm", "nmm"
    if isinstance(data, tuple):
        f, ti.size = data
        tar.addfile(ti, f)
    else:
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))


def write_shard(job: ShardJob) -> ShardStats:
    """Write the shard and its stats JSON (each under a temporary name, then renamed); return the
    stats. Members go to the file as they are made: memory holds one sample's media, not the shard."""
    rows, costs, index = _read(job)
    counts = _Counts(job.unit)
    path = Path(job.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as raw:
            sink = _Hashing(raw)
            tar = tarfile.open(fileobj=sink, mode="w|")  # noqa: SIM115 - closed below, before the file
            for i, u in enumerate(index.tolist()):
                row = rows[u]
                s = _sample(job, i, row, costs, u)
                key = check_key(s.key)
                try:
                    members, media = _members(key, row)
                except OSError as e:  # the file went away after curation: skip, say so
                    counts.skipped.append({"id": row["id"], "key": key, "error": str(e)})
                    continue
                sample: dict[str, Any] = {**members, "json": _record(s, row, job.stage, media)}
                text = _primary_text(row)
                if text:
                    sample["txt"] = text.encode()
                try:
                    for k in sorted(sample):
                        _add(tar, f"{key}.{k}", sample[k])
                finally:
                    _close(members)
                counts.add(s, row, list(sample))
            tar.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stats = counts.stats(job, sink.size, sink.sha.hexdigest())
    atomic_write_json(job.stats_path, stats.to_json(), indent=1, sort_keys=True)
    return stats
