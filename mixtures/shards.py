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
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import webdataset as wds

from operators.media_io import read_media_bytes
from schemas.files import atomic_write_bytes, atomic_write_json
from schemas.media_types import DEFAULT_MEMBER_EXT, MEMBER_EXT, MEMBER_PREFIX
from schemas.record import from_table

__all__ = ["ShardJob", "check_key", "media_members", "write_shard"]

_RECORD_FIELDS = (
    "id", "source", "locator", "license", "layout", "modalities", "tasks", "buckets", "caption", "alt_text",
    "instruction", "response", "transcript", "text", "language", "conversation", "interleaved", "preference",
    "interaction", "scores", "parent_id",
)  # fmt: skip

ShardJob = dict[str, Any]  # {"path", "samples": [{"file", "row", "key", "group", "repeat", "cost", "text_first"?}], "stage", "unit"}


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


def _rows(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_file: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        by_file[s["file"]].append(s["row"])
    cache: dict[tuple[str, int], dict[str, Any]] = {}
    for f, rows in by_file.items():
        uniq = sorted(set(rows))
        table = pq.read_table(f).take(uniq)
        for r, rec in zip(uniq, from_table(table), strict=True):
            cache[(f, r)] = rec
    return [cache[(s["file"], s["row"])] for s in samples]


def write_shard(job: ShardJob) -> dict[str, Any]:
    """Write the shard (temp name, then rename) and its stats; return the stats."""
    path = Path(job["path"])
    rows = _rows(job["samples"])
    buf = io.BytesIO()
    stats: dict[str, Any] = {
        "shard": path.name, "stage": job["stage"], "unit": job["unit"], "samples": 0, "skipped": [],
        "by_group": {}, "by_phase": {}, "by_layout": defaultdict(int), "by_modality": defaultdict(int), "by_source": defaultdict(int),
        "by_member": defaultdict(int), "text_first": defaultdict(int),
    }  # fmt: skip
    writer = wds.TarWriter(buf, encoder=False, mtime=0.0, user="nmm", group="nmm")
    for s, row in zip(job["samples"], rows, strict=True):
        key = check_key(s["key"])
        sample: dict[str, Any] = {"__key__": key}
        media_meta = []
        try:
            for i, suffix in media_members(row.get("media") or []):
                m = row["media"][i]
                sample[suffix] = read_media_bytes(m)
                media_meta.append({**{k: v for k, v in m.items() if v is not None}, "member": f"{key}.{suffix}", "index": i})
        except OSError as e:  # the file went away after curation: skip, say so
            stats["skipped"].append({"id": row["id"], "key": key, "error": str(e)})
            continue
        record = {k: row.get(k) for k in _RECORD_FIELDS if row.get(k) not in (None, [], {})}
        record.update(key=key, stage=job["stage"], group=s["group"], repeat=s["repeat"], cost=s["cost"], media=media_meta)
        if "text_first" in s:
            record["text_first"] = s["text_first"]
            stats["text_first"][s["group"]] += int(s["text_first"])
        sample["json"] = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode()
        text = _primary_text(row)
        if text:
            sample["txt"] = text.encode()
        writer.write(sample)
        for suffix in sample:
            if suffix != "__key__":
                stats["by_member"][suffix] += 1
        g = stats["by_group"].setdefault(s["group"], defaultdict(float))
        for unit, value in s["cost"].items():
            g[unit] += value
        ph = stats["by_phase"].setdefault(str(s.get("phase", 0)), defaultdict(float))
        ph[s["group"]] += s["cost"][job["unit"]]
        stats["samples"] += 1
        stats["by_layout"][row.get("layout") or "unknown"] += 1
        stats["by_source"][row["source"]] += 1
        for mod in row.get("modalities") or []:
            stats["by_modality"][mod] += 1
    writer.close()
    data = buf.getvalue()
    stats["bytes"] = len(data)
    stats["sha256"] = hashlib.sha256(data).hexdigest()
    total = sum(g.get(job["unit"], 0.0) for g in stats["by_group"].values())
    stats["shares"] = {g: (v.get(job["unit"], 0.0) / total if total else 0.0) for g, v in sorted(stats["by_group"].items())}
    atomic_write_bytes(path, data)
    atomic_write_json(path.with_name(path.name[: -len(".tar")] + ".stats.json"), stats, indent=1, sort_keys=True)
    return json.loads(json.dumps(stats, default=dict))
