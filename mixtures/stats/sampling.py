"""Per-sample values of a bounded sample: resolution, duration, tokens, scores and thumbnails per
group, read from the ``<key>.json`` members of some shards (or from curated rows)."""

from __future__ import annotations

import base64
import io
import json
import math
import random
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtures.stats.model import Distributions, Spread
from schemas.media_types import modality_of_ext

__all__ = ["Sampled", "Thumb", "iter_tar_samples", "media_kind", "pick_shards", "read_shard_samples", "tar_of"]

_THUMB_SIDE = 160


@dataclass(frozen=True)
class Thumb:
    src: str  # data: URI of a JPEG
    caption: str
    key: str
    kind: str  # "image" | "video"
    id: str  # sample id: one thumbnail per id


class Sampled:
    """Per-sample values of a bounded sample, and thumbnails per group."""

    def __init__(self, thumbs: int) -> None:
        self.resolution: list[tuple[str, int, int]] = []  # (modality, width, height)
        self.duration: list[tuple[str, float]] = []  # (modality, seconds)
        self.tokens: list[tuple[str, float]] = []  # (group, tokens)
        self.text_tokens: list[float] = []
        self.scores: dict[str, list[float]] = defaultdict(list)
        self.thumbs: dict[str, list[Thumb]] = defaultdict(list)
        self.max_thumbs = thumbs
        self.samples = 0
        self.groups: Counter[str] = Counter()

    def add(self, group: str, record: dict[str, Any], cost: dict[str, float] | None) -> None:
        self.samples += 1
        self.groups[group] += 1
        for m in record.get("media") or []:
            if m.get("error") or m.get("role") == "keyframe":
                continue
            kind = m.get("modality") or "unknown"
            if m.get("width") and m.get("height"):
                self.resolution.append((kind, int(m["width"]), int(m["height"])))
            if m.get("duration_s"):
                self.duration.append((kind, float(m["duration_s"])))
        if cost:
            self.tokens.append((group, float(cost.get("tokens", 0.0))))
            self.text_tokens.append(float(cost.get("text_tokens", 0.0)))
        for k, v in (record.get("scores") or {}).items():
            if isinstance(v, int | float) and math.isfinite(v):
                self.scores[k].append(float(v))

    def wants_thumb(self, group: str) -> bool:
        return len(self.thumbs.get(group, ())) < self.max_thumbs

    def add_thumb(self, group: str, data: bytes, kind: str, caption: str, key: str, sample_id: str | None = None) -> None:
        """A thumbnail for the group, once per sample id (a repeat shows the same picture)."""
        if any(t.id == (sample_id or key) for t in self.thumbs.get(group, ())):
            return
        uri = _thumbnail(data, kind)
        if uri:
            self.thumbs[group].append(Thumb(uri, caption, key, kind, sample_id or key))

    def summary(self) -> Distributions:
        by_mod_px: dict[str, list[float]] = defaultdict(list)
        for kind, w, h in self.resolution:
            by_mod_px[kind].append(float(w * h))
        by_mod_dur: dict[str, list[float]] = defaultdict(list)
        for kind, d in self.duration:
            by_mod_dur[kind].append(d)
        by_group_tok: dict[str, list[float]] = defaultdict(list)
        for g, t in self.tokens:
            by_group_tok[g].append(t)
        return Distributions(
            samples=self.samples,
            by_group=dict(self.groups),
            pixels={k: Spread.of(v) for k, v in sorted(by_mod_px.items())},
            min_side={k: Spread.of([float(min(w, h)) for m, w, h in self.resolution if m == k]) for k in sorted(by_mod_px)},
            duration_s={k: Spread.of(v) for k, v in sorted(by_mod_dur.items())},
            tokens={"all": Spread.of([t for _, t in self.tokens]), **{g: Spread.of(v) for g, v in sorted(by_group_tok.items())}},
            text_tokens=Spread.of(self.text_tokens),
            scores={k: Spread.of(v) for k, v in sorted(self.scores.items())},
            thumbnails={g: len(v) for g, v in sorted(self.thumbs.items()) if v},
        )


def _thumbnail(data: bytes, kind: str) -> str | None:
    """A base64 JPEG data URI: the image itself, or the first frame of a video (PyAV)."""
    from PIL import Image

    try:
        if kind == "video":
            import av

            with av.open(io.BytesIO(data)) as container:
                img = next(container.decode(video=0)).to_image()
        else:
            img = Image.open(io.BytesIO(data))
            img.load()
        img = img.convert("RGB")
        img.thumbnail((_THUMB_SIDE, _THUMB_SIDE))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - an undecodable member gets no thumbnail, the report goes on
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def media_kind(suffix: str) -> str | None:
    """``'img0.jpg'`` -> ``'image'``; None for ``json``, ``txt`` and other non-media members."""
    return modality_of_ext(suffix.rsplit(".", 1)[-1])


def tar_of(stats_file: Path) -> Path:
    return stats_file.with_name(stats_file.name[: -len(".stats.json")] + ".tar")


def iter_tar_samples(path: Path, *, read_media: bool) -> Iterator[tuple[str, dict[str, bytes | None]]]:
    """(key, {suffix: bytes or None}) per sample of a WebDataset tar; members of a sample are
    adjacent. ``json`` and ``txt`` are always read; of the media only the first image or video
    member, and only when ``read_media``."""
    with tarfile.open(path) as tf:
        key: str | None = None
        parts: dict[str, bytes | None] = {}
        for m in tf:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            k, _, suffix = base.partition(".")
            if k != key:
                if key is not None:
                    yield key, parts
                key, parts = k, {}
            kind = media_kind(suffix)
            first_visual = kind in ("image", "video") and not any(
                media_kind(s) in ("image", "video") and b is not None for s, b in parts.items()
            )
            if suffix in ("json", "txt") or (read_media and first_visual):
                f = tf.extractfile(m)
                parts[suffix] = f.read() if f else None
            else:
                parts[suffix] = None
        if key is not None:
            yield key, parts


def pick_shards(files: list[Path], n: int, seed: int) -> list[Path]:
    """A bounded random sample of shards, spread over folders (per-group mode: every group)."""
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_folder[f.parent].append(f)
    rng = random.Random(seed)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_folder.items())]
    chosen: list[Path] = []
    while len(chosen) < n and any(pools):
        for p in pools:
            if p and len(chosen) < n:
                chosen.append(p.pop())
    return sorted(chosen)


def read_shard_samples(root: Path, stats_files: list[Path], sampled: Sampled) -> list[str]:
    """Add the samples of these shards (given by their stats files); the tars read, under ``root``."""
    read = []
    for sf in stats_files:
        tar = tar_of(sf)
        if not tar.is_file():
            continue
        read.append(tar.relative_to(root).as_posix())
        for key, parts in iter_tar_samples(tar, read_media=sampled.max_thumbs > 0):
            if not parts.get("json"):
                continue
            rec = json.loads(parts["json"])
            group = rec.get("group") or "?"
            sampled.add(group, rec, rec.get("cost"))
            if sampled.wants_thumb(group):
                for suffix, data in parts.items():
                    kind = media_kind(suffix)
                    if data is not None and kind in ("image", "video"):
                        caption = (parts.get("txt") or b"").decode("utf-8", "replace")
                        sampled.add_thumb(group, data, kind, caption[:90], key, rec.get("id"))
                        break
    return read
