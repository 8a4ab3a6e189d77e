"""A small curated table with real media (images, a PNG, videos, audio, interleaved documents,
text-only rows) and two mixes of it: a pre-mixed stage in tokens with a schedule, and a
per-group stage in samples. Built once per test session and shared by the stats and loader tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate.demo.synth import make_audio, make_image, make_video
from mixtures.config import MixtureConfig
from mixtures.report_model import MixReport
from schemas.record import content_hash, new_media, new_record, record_id, to_table

GROUPS = [
    {"name": "image-text", "weight": 0.35, "where": {"layout": ["image-text"]}},
    {"name": "video-text", "weight": 0.2, "where": {"layout": ["video-text"]}},
    {"name": "audio-text", "weight": 0.15, "where": {"layout": ["audio-text"]}},
    {"name": "interleaved", "weight": 0.2, "where": {"layout": ["interleaved"]}},
    {"name": "text", "weight": 0.1, "where": {"layout": ["text"]}},
]

MIXTURE = {
    "name": "loader-test",
    "seed": 5,
    "stages": [
        {
            "name": "premixed",
            "unit": "tokens",
            "budget": 2400,
            "max_repeat": 3,
            "tolerance": 0.5,
            "shards": {"max_samples": 4},
            "groups": [
                {"name": "paired", "weight": 0.7, "groups": GROUPS[:3]},
                {"name": "docs", "weight": 0.3, "groups": GROUPS[3:]},
            ],
            "schedule": [{"at": 0.7, "weights": {"paired": 0.5, "docs": 0.5}}],
        },
        {
            "name": "pergroup",
            "unit": "samples",
            "budget": 48,
            "max_repeat": 2,
            "shards": {"max_samples": 5, "mode": "per_group"},
            "groups": GROUPS,
        },
        {
            # the same image-text rows are eligible for both groups (two buckets)
            "name": "overlap",
            "unit": "samples",
            "budget": 16,
            "max_repeat": 1,
            "shards": {"max_samples": 5, "mode": "per_group"},
            "groups": [
                {"name": "captioning", "weight": 0.5, "buckets": ["understanding"], "where": {"layout": ["image-text"]}},
                {"name": "t2i", "weight": 0.5, "buckets": ["generation"]},
            ],
        },
    ],
}


def _media(modality: str, path: Path, **probe: Any) -> dict[str, Any]:
    data = path.read_bytes()
    return new_media(modality, str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), **probe)


def _finish(rec: dict[str, Any]) -> dict[str, Any]:
    rec["content_hash"] = content_hash(rec)
    rec["id"] = record_id(rec["content_hash"], rec["source"], rec["locator"])
    return rec


def make_curated(root: Path) -> Path:
    """Write ROOT/run/samples/part-0.parquet (a `curate run`-shaped folder) and its media."""
    media = root / "media"
    rows = []
    for i in range(10):
        w, h = (160 + 32 * i, 120 + 16 * (i % 4))
        png = i % 5 == 4
        p = make_image(media / f"im{i}.{'png' if png else 'jpg'}", w, h, seed=i, pattern="shapes")
        rows.append(
            new_record(
                source="photos" if i % 2 else "web",
                locator=f"media/{p.name}",
                layout="image-text",
                modalities=["image", "text"],
                media=[_media("image", p, format="png" if png else "jpeg", width=w, height=h)],
                caption=f"a picture number {i} with shapes " + "and colours " * (i % 3),
                tasks=["captioning", "text_to_image"],
                buckets=["understanding", "generation"],
                scores={"aesthetic": 3.0 + 0.3 * i, "clip_score": 0.2 + 0.01 * i, "min_side": float(min(w, h))},
            )
        )
    for i in range(5):
        p = make_video(media / f"v{i}.mp4", seconds=1.0 + 0.5 * i, fps=8, width=128, height=96, seed=i)
        rows.append(
            new_record(
                source="clips",
                locator=f"media/{p.name}",
                layout="video-text",
                modalities=["video", "text"],
                media=[_media("video", p, format="mp4", width=128, height=96, duration_s=1.0 + 0.5 * i, fps=8.0)],
                caption=f"a moving square, clip {i}",
                tasks=["video_captioning"],
                buckets=["understanding"],
                scores={"motion": 0.1 * i},
            )
        )
    for i in range(5):
        p = make_audio(media / f"a{i}.wav", seconds=1.0 + 0.5 * i, seed=i)
        rows.append(
            new_record(
                source="speech",
                locator=f"media/{p.name}",
                layout="audio-text",
                modalities=["audio", "text"],
                media=[_media("audio", p, format="wav", duration_s=1.0 + 0.5 * i, sample_rate=16000, channels=1)],
                transcript=f"spoken words number {i}",
                tasks=["asr"],
                buckets=["understanding"],
                scores={"snr_db": 10.0 + i},
            )
        )
    for i in range(6):
        ps = [make_image(media / f"doc{i}_{j}.jpg", 96, 64 + 16 * j, seed=100 + 10 * i + j) for j in range(2)]
        rows.append(
            new_record(
                source="docs",
                locator=f"docs.jsonl:{i}",
                layout="interleaved",
                modalities=["image", "text"],
                media=[_media("image", p, format="jpeg", width=96, height=64 + 16 * j) for j, p in enumerate(ps)],
                interleaved=[
                    {"kind": "text", "text": f"document {i} starts here", "media_index": None},
                    {"kind": "media", "text": None, "media_index": 0},
                    {"kind": "text", "text": "and goes on after the first picture " * (i + 1), "media_index": None},
                    {"kind": "media", "text": None, "media_index": 1},
                ],
                tasks=["interleaved_understanding"],
                buckets=["understanding"],
            )
        )
    for i in range(6):
        rows.append(
            new_record(
                source="text",
                locator=f"text.jsonl:{i}",
                layout="text",
                modalities=["text"],
                text=f"plain text document {i}. " + "words " * (20 * (i + 1)),
                tasks=["text"],
                buckets=["understanding"],
                scores={"text_chars": 30.0 + 120 * i},
            )
        )
    rows = [_finish(r) for r in rows]
    out = root / "run" / "samples"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(rows), out / "part-0.parquet")
    return root / "run"


_BUILT: dict[str, Any] = {}


def build(tmp_path_factory) -> dict[str, Any]:
    """Curated table + the pre-mixed and per-group mixes, once per session:
    {"curated", "premixed", "pergroup", "reports" (stage -> MixReport), "root"}."""
    if _BUILT:
        return _BUILT
    from mixtures.mixer import mix_stage

    root = tmp_path_factory.mktemp("mixcorpus")
    curated = make_curated(root)
    cfg = MixtureConfig.model_validate(MIXTURE)
    reports = {}
    for stage in ("premixed", "pergroup"):
        reports[stage] = mix_stage(cfg, stage, curated, root / "shards" / stage)
    _BUILT.update(root=root, curated=curated, premixed=root / "shards" / "premixed", pergroup=root / "shards" / "pergroup", reports=reports)
    return _BUILT


def mix_extra(stage: str) -> tuple[Path, MixReport]:
    """Mix another stage of MIXTURE from the session's curated table (after ``build``)."""
    from mixtures.mixer import mix_stage

    out = _BUILT["root"] / "shards" / stage
    return out, mix_stage(MixtureConfig.model_validate(MIXTURE), stage, _BUILT["curated"], out)
