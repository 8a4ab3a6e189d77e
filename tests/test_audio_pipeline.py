"""End to end: examples/pipelines/audio.yaml on the generated speech corpus, through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate.config import load_pipeline
from curate.demo.audio import make_audio_corpus
from curate.engine import Engine
from curate.media_hours import media_hours

PIPELINE = Path(__file__).resolve().parents[1] / "examples" / "pipelines" / "audio.yaml"


def test_audio_pipeline_accounts_for_every_recording(ray_local, tmp_path: Path) -> None:
    paths = make_audio_corpus(tmp_path / "data")
    planted = json.loads((tmp_path / "data" / "PLANTED.json").read_text())["files"]
    loaded = load_pipeline(PIPELINE, [f"sources.audio.path={paths['audio']}"])
    out = tmp_path / "run"
    summary = Engine(loaded, out, progress=False).run()

    c = summary["counts"]
    assert summary["balanced"]
    assert c["input"] == len(planted)
    long_ones = ["lecture_long.flac", "interview_timed.wav"]
    expected_children = sum(len(planted[n]["bursts"]) for n in long_ones)
    assert (c["split"], c["derived"]) == (2, expected_children)
    assert c["input"] + c["derived"] == c["kept"] + c["dropped"] + c["duplicate"] + c["quarantined"] + c["split"]
    assert summary["quarantined"] == {"probe": {"corrupt_media": 1}}
    assert summary["duplicate"] == {"dedup_exact": {"exact_duplicate": 1}}
    assert summary["split"] == {"audio_segment": {"split": 2}}

    rejected = {Path(r["locator"]).name: r for r in pq.read_table(out / "rejected").to_pylist()}
    assert rejected["clipped.wav"]["status_detail"].startswith("clipping_ratio=")
    assert rejected["narrowband_8k.wav"]["status_detail"] == "sample_rate=8000 < 16000"
    assert rejected["silent.wav"]["status_detail"].startswith("speech_ratio=0")
    assert rejected["corrupt.wav"]["status"] == "quarantined"
    assert rejected["speech_en_00_copy.wav"]["status"] == "duplicate"
    assert {rejected[n]["status"] for n in long_ones} == {"split"}
    assert rejected["lecture_long.flac"]["transcript"]  # the untimed transcript stays on the parent

    kept = {}
    for r in pads.dataset(out / "samples", partitioning="hive").to_table().to_pylist():
        kept[r["id"]] = r
    assert len(kept) == c["kept"]
    by_name = {Path(r["locator"]).name: r for r in kept.values()}
    # transcripts cleaned, languages detected, everything 16 kHz mono FLAC in the artifacts folder
    for lang in ("en", "de"):
        for i in range(4):
            r = by_name[f"speech_{lang}_{i:02d}.wav"]
            assert r["transcript"] == planted[f"speech_{lang}_{i:02d}.wav"]["transcript"]
            assert r["language"] == lang
            assert set(r["buckets"]) == {"understanding", "generation"}
    for r in kept.values():
        m = r["media"][0]
        assert Path(m["uri"]).parent.parent == out / "artifacts"
        assert (m["format"], m["sample_rate"], m["channels"]) == ("flac", 16000, 1)
        with av.open(m["uri"]) as f:
            assert f.streams.audio[0].sample_rate == 16000
    lecture = [r for n, r in by_name.items() if n.startswith("lecture_long.flac#seg")]
    assert len(lecture) == len(planted["lecture_long.flac"]["bursts"])
    assert all(r["transcript"] is None and r["buckets"] == [] for r in lecture)  # unassigned, kept
    timed = sorted((r for n, r in by_name.items() if n.startswith("interview_timed.wav#seg")), key=lambda r: r["locator"])
    assert all(r["transcript"] and r["language"] == "en" and "understanding" in r["buckets"] for r in timed)
    assert json.loads(by_name["stereo_44k.wav"]["meta"])["transcode"][0]["original_sample_rate"] == 44100

    # hours: every kept second, from the final files of the run
    final = sorted((out / "_work").glob("seg-*"))[-1]
    hours = media_hours(sorted(final.glob("*.parquet")))
    seconds = sum(r["media"][0]["duration_s"] for r in kept.values())
    assert abs(hours["total"]["audio"] * 3600 - seconds) < 0.01
    assert set(hours["by_language"]) == {"en", "de", "unknown"}  # untranscribed segments: unknown
    assert hours["by_source"] == {"audio": hours["total"]}
