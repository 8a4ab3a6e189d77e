"""Write one WebDataset shard: members ``<key>.<ext>``, all members of a sample adjacent, one
member per extension, keys without dots; plus ``<shard>.stats.json``.

A shard is a pure function of its sample list, so a rerun writes byte-identical files
(fixed mtime, owner and member order; JSON with sorted keys)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import webdataset as wds

from operators.media_io import read_media_bytes
from schemas.files import atomic_write_bytes, atomic_write_json
from schemas.media_types import DEFAULT_MEMBER_EXT, MEMBER_EXT, MEMBER_PREFIX
from schemas.record import from_table

__all__ = ["ShardJob", "ShardSample", "ShardStats", "check_key", "media_members", "stats_path_of", "write_shard"]

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


@dataclass(frozen=True, slots=True)
class ShardJob:
    """One shard to write (a Ray task's argument): its path and samples, in order."""

    path: str
    samples: list[ShardSample]
    stage: str
    unit: str

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


def _rows(samples: list[ShardSample]) -> list[dict[str, Any]]:
    by_file: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        by_file[s.file].append(s.row)
    cache: dict[tuple[str, int], dict[str, Any]] = {}
    for f, rows in by_file.items():
        uniq = sorted(set(rows))
        table = pq.read_table(f).take(uniq)
        for r, rec in zip(uniq, from_table(table), strict=True):
            cache[(f, r)] = rec
    return [cache[(s.file, s.row)] for s in samples]


def _members(key: str, row: dict[str, Any]) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """The media members of a sample ({suffix: bytes}) and their records; OSError when a file is gone."""
    members, meta = {}, []
    for i, suffix in media_members(row.get("media") or []):
        m = row["media"][i]
        members[suffix] = read_media_bytes(m)
        meta.append({**{k: v for k, v in m.items() if v is not None}, "member": f"{key}.{suffix}", "index": i})
    return members, meta


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

    def stats(self, job: ShardJob, data: bytes) -> ShardStats:
        total = sum(g.get(self.unit, 0.0) for g in self.by_group.values())
        return ShardStats(
            shard=Path(job.path).name, stage=job.stage, unit=job.unit, samples=self.samples, bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(), skipped=self.skipped,
            by_group={g: dict(v) for g, v in self.by_group.items()}, by_phase={k: dict(v) for k, v in self.by_phase.items()},
            by_phase_source={k: dict(v) for k, v in self.by_phase_source.items()},
            by_layout=dict(self.by["layout"]), by_modality=dict(self.by["modality"]), by_source=dict(self.by["source"]),
            by_member=dict(self.by["member"]), text_first=dict(self.by["text_first"]),
            shares={g: (v.get(self.unit, 0.0) / total if total else 0.0) for g, v in sorted(self.by_group.items())},
        )  # fmt: skip


def write_shard(job: ShardJob) -> ShardStats:
    """Write the shard and its stats JSON (each under a temporary name, then renamed); return the stats."""
    rows = _rows(job.samples)
    buf = io.BytesIO()
    counts = _Counts(job.unit)
    writer = wds.TarWriter(buf, encoder=False, mtime=0.0, user="nmm", group="nmm")
    for s, row in zip(job.samples, rows, strict=True):
        key = check_key(s.key)
        try:
            members, media = _members(key, row)
        except OSError as e:  # the file went away after curation: skip, say so
            counts.skipped.append({"id": row["id"], "key": key, "error": str(e)})
            continue
        sample: dict[str, Any] = {"__key__": key, **members, "json": _record(s, row, job.stage, media)}
        text = _primary_text(row)
        if text:
            sample["txt"] = text.encode()
        writer.write(sample)
        counts.add(s, row, [k for k in sample if k != "__key__"])
    writer.close()
    data = buf.getvalue()
    stats = counts.stats(job, data)
    atomic_write_bytes(job.path, data)
    atomic_write_json(job.stats_path, stats.to_json(), indent=1, sort_keys=True)
    return stats
