"""The video pipeline (examples/pipelines/video.yaml) on Ray over the generated video corpus:
clips are derived, written and accounted for; duplicates, static, black and corrupt inputs end
where they should."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate.config import load_pipeline
from curate.demo.media import make_video_corpus
from curate.engine import Engine

ROOT = Path(__file__).resolve().parents[1]


def test_video_pipeline_balances_with_derived_clips(ray_local, tmp_path):
    videos = make_video_corpus(tmp_path / "corpus")
    assert len(videos) == 7
    loaded = load_pipeline(
        ROOT / "examples/pipelines/video.yaml", [f"sources.videos.path={tmp_path / 'corpus' / 'videos'}"]
    )
    out = tmp_path / "run"
    summary = Engine(loaded, out, progress=False).run()

    counts = summary["counts"]
    assert summary["balanced"] is True
    # 7 inputs: 4 multi-shot videos split into 3 + 3 + 3 + 3 pieces (the flash piece too short)
    assert counts == {
        "input": 7,
        "derived": 12,
        "split": 4,
        "kept": 8,
        "dropped": 3,
        "duplicate": 3,
        "quarantined": 1,
    }
    assert summary["split"] == {"video_shots": {"split": 4}}
    assert summary["dropped"] == {
        "video_shots": {"below_min": 1},
        "video_filter": {"above_max": 1, "below_min": 1},
    }
    assert summary["duplicate"] == {"dedup_exact": {"exact_duplicate": 3}}
    assert summary["quarantined"] == {"probe": {"corrupt_media": 1}}

    kept = pads.dataset(out / "samples", partitioning="hive").to_table().to_pylist()
    clips = {r["id"]: {**r, "scores": dict(r["scores"])} for r in kept}
    assert len(clips) == 8
    for clip in clips.values():
        video = clip["media"][0]
        assert clip["parent_id"] and Path(video["uri"]).is_file()
        assert Path(video["uri"]).is_relative_to(out / "artifacts" / "video_shots")
        assert clip["caption"]
        keyframes = [m for m in clip["media"] if m["role"] == "keyframe"]
        assert len(keyframes) == 4 and all(Path(m["uri"]).is_file() for m in keyframes)
        assert clip["layout"] == "video-text"
        assert clip["scores"]["duration_s"] <= 4.0 + 1e-6

    rejected = {
        (Path(r["locator"].split("#")[0]).name, r["status"], r["status_reason"])
        for r in pq.read_table(out / "rejected").to_pylist()
    }
    assert ("static.mp4", "dropped", "below_min") in rejected  # motion_score
    assert ("mostly_black.mp4", "dropped", "above_max") in rejected  # black_frame_ratio
    assert ("flash.mp4", "dropped", "below_min") in rejected  # the 0.25 s flash
    assert ("corrupt.mp4", "quarantined", "corrupt_media") in rejected
    dups = [r for r in pq.read_table(out / "rejected").to_pylist() if r["status"] == "duplicate"]
    assert {Path(r["locator"].split("#")[0]).name for r in dups} == {"three_shots_copy.mp4"}
    assert all(r["duplicate_of"] in clips for r in dups)

    planted = json.loads((tmp_path / "corpus" / "PLANTED.json").read_text())
    three = sorted(
        r["scores"]["clip_start_s"] for r in clips.values() if r["locator"].split("#")[0].endswith("/three_shots.mp4")
    )
    assert [abs(a - b) <= 1 / 12 for a, b in zip(three[1:], planted["three_shots"]["boundaries_s"], strict=True)] == [
        True,
        True,
    ]
