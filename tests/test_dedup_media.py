"""Near-duplicate video and audio dedup on tiny real media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.demo.synth import make_audio
from curate.demo.synth_variants import make_music, make_scene_video, transcode_audio, transcode_video
from curate.global_phase import run_in_process
from operators.dedup.audio import AudioDedup, decode_mono, landmarks, offset_votes
from operators.dedup.video import VideoDedup, video_frame_hashes
from schemas.record import from_table, new_media, new_record, to_table


def resolve(op, rows):
    return {r["locator"]: r for r in from_table(run_in_process(op, to_table(rows)).table)}


def media_row(path: Path, modality: str, seq: int) -> dict:
    return new_record(
        source="s", locator=path.name, id=path.stem, layout=modality, media=[new_media(modality, str(path))], seq=seq
    )


# ----------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    for s in range(2):
        orig = make_scene_video(d / f"v{s}.mp4", seed=s, seconds=4)
        transcode_video(orig, d / f"v{s}_reencoded.mp4", crf=38)
        transcode_video(orig, d / f"v{s}_resized.mp4", width=96, height=72)
        transcode_video(orig, d / f"v{s}_trimmed.mp4", trim_start_s=1.0)
    make_scene_video(d / "w_stranger.mp4", seed=9, seconds=4)
    transcode_video(d / "v0.mp4", d / "x_short_cut.mp4", max_seconds=1.5)  # 1.5 s of v0: too short a part of it
    return d


def test_video_sampling_seeks_to_fixed_instants(clips):
    hashes, times, duration = video_frame_hashes({"uri": str(clips / "v0.mp4")}, step_s=1.0, max_frames=32)
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0] and duration == pytest.approx(4.0)
    _, times, _ = video_frame_hashes({"uri": str(clips / "v0.mp4")}, step_s=0.5, max_frames=4)
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0]  # at most max_frames, spread over the length
    assert len(set(hashes.tolist())) == 4


def test_video_hashes_are_those_of_a_full_decode(clips):
    """The decoder skips GOPs and unreferenced frames it does not need: the hashes are still those
    of the frames a plain decode of every frame finds at each instant (first at or after half a
    frame before it), scaled to 64x64 RGB."""
    import av

    from operators.dedup.image_phash import image_hashes

    path = clips / "v0_trimmed.mp4"
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate)
        every = [(f.time, f) for f in c.decode(vs)]
        want = []
        for t in np.arange(0, every[-1][0] + 0.5 / fps, 0.25):
            k = next(i for i, (ft, _) in enumerate(every) if ft >= t - 0.5 / fps)
            want.append((every[k][0], image_hashes(every[k][1].to_image(width=64, height=64))[0]))
    hashes, times, _ = video_frame_hashes({"uri": str(path)}, step_s=0.25, max_frames=96)
    assert times.tolist() == pytest.approx([t for t, _ in want])
    assert hashes.tolist() == [int(h) for _, h in want]


def test_video_copies_are_duplicates_of_the_original(clips):
    rows = [media_row(clips / n, "video", i) for i, n in enumerate(sorted(p.name for p in clips.glob("*.mp4")))]
    out = resolve(VideoDedup(), rows)
    for s in range(2):
        assert out[f"v{s}.mp4"]["status"] == "kept"
        assert out[f"v{s}.mp4"]["scores"]["video_dup_group_size"] == 4.0
        for kind in ("reencoded", "resized", "trimmed"):
            r = out[f"v{s}_{kind}.mp4"]
            assert (r["status"], r["status_reason"], r["duplicate_of"]) == ("duplicate", "near_duplicate", f"v{s}")
            assert r["status_detail"].startswith(f"near-duplicate of v{s}.mp4: matched frames 1.000")
    assert out["w_stranger.mp4"]["status"] == "kept"
    assert out["x_short_cut.mp4"]["status"] == "kept"  # duration ratio 1.5 / 4 < min_duration_ratio 0.5
    loose = resolve(VideoDedup({"min_duration_ratio": 0.3}), rows)
    assert loose["x_short_cut.mp4"]["duplicate_of"] == "v0"


# ----------------------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("audio")
    for s in range(2):
        orig = make_music(d / f"m{s}.flac", seed=s, seconds=6)
        transcode_audio(orig, d / f"m{s}_mp3.mp3", bit_rate=48000)
        transcode_audio(orig, d / f"m{s}_resampled.flac", sample_rate=16000)
        transcode_audio(orig, d / f"m{s}_aac.m4a", sample_rate=11025, bit_rate=32000)
    make_music(d / "n_other_song.flac", seed=7, seconds=6)
    make_audio(d / "o_speech.wav", seconds=5, kind="speechlike", seed=3)
    make_audio(d / "p_noise.wav", seconds=5, kind="noise", seed=4)
    return d


def test_audio_landmarks_survive_resampling_and_vote_for_one_offset(recordings):
    x = decode_mono({"uri": str(recordings / "m0.flac")}, 300)
    y = decode_mono({"uri": str(recordings / "m0_resampled.flac")}, 300)
    assert len(x) == pytest.approx(6 * 8000, abs=400)
    hx, tx = landmarks(x)
    hy, ty = landmarks(y)
    votes, shift = offset_votes(hx, tx, hy, ty)
    assert votes > 0.5 * len(hx) and shift == 0
    # a copy that starts ~2 s later votes for that offset
    late = landmarks(np.concatenate([np.zeros(64 * 256, np.float32), x]))  # 64 hops of 32 ms
    votes, shift = offset_votes(hx, tx, *late)
    assert votes > 0.5 * len(hx) and shift == 64


def test_audio_reencodes_are_duplicates_and_other_audio_is_not(recordings):
    names = sorted(p.name for p in recordings.iterdir())
    rows = [media_row(recordings / n, "audio", i) for i, n in enumerate(names)]
    run = run_in_process(AudioDedup(), to_table(rows))
    out = {r["locator"]: r for r in from_table(run.table)}
    for s in range(2):
        assert out[f"m{s}.flac"]["status"] == "kept" and out[f"m{s}.flac"]["scores"]["audio_dup_group_size"] == 4.0
        for kind in ("mp3.mp3", "resampled.flac", "aac.m4a"):
            r = out[f"m{s}_{kind}"]
            assert (r["status"], r["duplicate_of"]) == ("duplicate", f"m{s}"), r["status_detail"]
            assert "landmarks agree at offset" in r["status_detail"]
    for n in ("n_other_song.flac", "o_speech.wav", "p_noise.wav"):
        assert out[n]["status"] == "kept"
    assert run.report["stats"]["candidate_pairs"] < len(rows) * (len(rows) - 1) // 2


def test_audio_that_cannot_be_decoded_is_quarantined(recordings, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3 nothing here")
    out = resolve(AudioDedup(), [media_row(recordings / "m0.flac", "audio", 0), media_row(bad, "audio", 1)])
    assert (out["bad.mp3"]["status"], out["bad.mp3"]["status_reason"]) == ("quarantined", "corrupt_media")
    assert out["m0.flac"]["status"] == "kept"


# ----------------------------------------------------------------------------- through the engine


def test_engine_runs_video_and_audio_dedup_on_ray(ray_local, clips, recordings, tmp_path):
    """The same media through `curate run` on local Ray: folders -> probe -> dedup_video -> dedup_audio."""
    import json

    import pyarrow.parquet as pq
    import yaml

    from curate.config import load_pipeline
    from curate.engine import Engine

    pipe = {
        "name": "media-dedup",
        "sources": [
            {"name": "clips", "reader": "video_folder", "path": str(clips)},
            {"name": "songs", "reader": "audio_folder", "path": str(recordings)},
        ],
        "stages": [{"op": "probe"}, {"op": "dedup_video"}, {"op": "dedup_audio"}],
    }
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(pipe))
    out = tmp_path / "out"
    s = Engine(load_pipeline(tmp_path / "pipe.yaml"), out, progress=False).run()
    assert s["balanced"] is True
    assert s["counts"]["input"] == 10 + 11 and s["counts"]["quarantined"] == 0
    assert s["duplicate"] == {"dedup_video": {"near_duplicate": 6}, "dedup_audio": {"near_duplicate": 6}}
    kept = {r["id"]: r for r in pq.read_table(out / "samples").to_pylist()}
    pairs = sorted(
        (Path(r["locator"]).name, Path(kept[r["duplicate_of"]]["locator"]).name)
        for r in pq.read_table(out / "rejected").to_pylist()
        if r["status"] == "duplicate"
    )
    assert pairs == sorted(
        [(f"v{i}_{k}.mp4", f"v{i}.mp4") for i in range(2) for k in ("reencoded", "resized", "trimmed")]
        + [(f"m{i}_{k}", f"m{i}.flac") for i in range(2) for k in ("aac.m4a", "mp3.mp3", "resampled.flac")]
    )
    report = json.loads((out / "artifacts" / "dedup_video" / "dedup.json").read_text())
    assert report["stats"]["duplicates"] == 6 and report["thresholds"]["step_s"] == 0.25
