"""video_quality: motion orders still below moving, black frames, loudness of a known tone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import operators.video.decode as frames
from curate.demo import synth
from curate.demo.media import Segment, segment_video
from curate.ingest import finalize_record
from operators.base import StageContext
from operators.confine import Confinement
from operators.registry import OPERATORS
from operators.video.frames import VideoFrames
from operators.video.quality import VideoQuality
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def video_row(path: Path | str, i: int = 0) -> dict[str, Any]:
    rec = new_record(source="t", locator=str(path), layout="video", media=[new_media("video", str(path))])
    return finalize_record(rec, unit="u", ordinal=0, row=i, reader="t", confinement=Confinement([str(Path(path).resolve().parent)]))


def scores(path: Path, params: dict[str, Any] | None = None) -> dict[str, float]:
    [row] = from_table(VideoQuality(params or {})(to_table([video_row(path)])))
    assert row["status"] == Status.KEPT, row["status_detail"]
    return row["scores"]


@pytest.fixture(autouse=True)
def fresh_cache():
    frames.clear_cache()
    frames.STATS.clear()
    yield
    frames.clear_cache()


def test_registered_with_documented_scores() -> None:
    assert OPERATORS["video_quality"] is VideoQuality
    for key in ("motion_score", "black_frame_ratio", "blank", "static", "has_audio", "audio_loudness_dbfs"):
        assert VideoQuality.writes[key]


def test_still_video_has_less_motion_than_a_moving_one(tmp_path: Path) -> None:
    still = scores(synth.make_video(tmp_path / "still.mp4", seconds=2.0, fps=12, moving=False))
    segment_video(tmp_path / "pan.mp4", [Segment("moving", 2.0)], fps=12)
    pan = scores(tmp_path / "pan.mp4")
    fast = scores(synth.make_video(tmp_path / "fast.mp4", seconds=2.0, fps=12, moving=True))
    assert still["motion_score"] < 5.0 < pan["motion_score"] < fast["motion_score"]
    assert (still["static"], pan["static"], fast["static"]) == (1.0, 0.0, 0.0)
    assert still["black_frame_ratio"] == pan["black_frame_ratio"] == 0.0
    assert still["blank"] == 0.0 and still["has_audio"] == 0.0 and "audio_loudness_dbfs" not in still


def test_motion_does_not_depend_on_the_frame_rate(tmp_path: Path) -> None:
    """Motion is measured over ~0.1 s: the same pan (30 px/s) at 10 and 30 fps scores about the same."""
    segment_video(tmp_path / "a.mp4", [Segment("moving", 2.0, pan_px=3)], fps=10)
    segment_video(tmp_path / "b.mp4", [Segment("moving", 2.0, pan_px=1)], fps=30)
    a, b = scores(tmp_path / "a.mp4")["motion_score"], scores(tmp_path / "b.mp4")["motion_score"]
    assert a == pytest.approx(b, rel=0.2)


def test_black_and_blank_frames(tmp_path: Path) -> None:
    segment_video(tmp_path / "black.mp4", [Segment("black", 2.0)], fps=12)
    black = scores(tmp_path / "black.mp4")
    assert black["black_frame_ratio"] == 1.0
    assert black["blank"] == 0.0  # a dim square still moves in it

    segment_video(tmp_path / "half.mp4", [Segment("black", 2.0), Segment("moving", 2.0)], fps=12)
    assert scores(tmp_path / "half.mp4")["black_frame_ratio"] == 0.5

    segment_video(tmp_path / "flat.mp4", [Segment("solid", 2.0, color=(120, 130, 140))], fps=12)
    flat = scores(tmp_path / "flat.mp4")
    assert (flat["blank"], flat["blank_frame_ratio"], flat["black_frame_ratio"]) == (1.0, 1.0, 0.0)


def test_loudness_of_a_tone_matches_its_rms(tmp_path: Path) -> None:
    amplitude = 0.5
    segment_video(tmp_path / "tone.mp4", [Segment("moving", 3.0, tone_hz=440)], audio=True, amplitude=amplitude)
    s = scores(tmp_path / "tone.mp4")
    assert s["has_audio"] == 1.0
    assert s["audio_loudness_dbfs"] == pytest.approx(20 * math.log10(amplitude / math.sqrt(2)), abs=0.5)


def test_audio_is_read_for_at_most_max_audio_s(tmp_path: Path) -> None:
    segs = [Segment("moving", 2.0, tone_hz=440, volume=1.0), Segment("moving", 2.0, tone_hz=440, volume=0.0)]
    segment_video(tmp_path / "fade.mp4", segs, audio=True, amplitude=0.5)
    loud = 20 * math.log10(0.5 / math.sqrt(2))
    assert scores(tmp_path / "fade.mp4", {"max_audio_s": 1.5})["audio_loudness_dbfs"] == pytest.approx(loud, abs=0.5)
    # the whole track: half of it silent, so 3 dB lower
    whole = scores(tmp_path / "fade.mp4", {"max_audio_s": 60})["audio_loudness_dbfs"]
    assert whole == pytest.approx(loud - 10 * math.log10(2), abs=0.5)

    segment_video(tmp_path / "mute.mp4", [Segment("moving", 1.0, volume=0.0)], audio=True)
    assert scores(tmp_path / "mute.mp4")["audio_loudness_dbfs"] == -100.0


def test_reuses_the_frames_video_frames_decoded(tmp_path: Path) -> None:
    segment_video(tmp_path / "v.mp4", [Segment("moving", 3.0)], fps=12)
    row = video_row(tmp_path / "v.mp4")
    vf = VideoFrames({"num_frames": 6, "max_side": 96}, StageContext("video_frames", artifacts_dir=str(tmp_path / "art")))
    table = vf(to_table([row]))
    decoded = frames.STATS["decoded"]
    [out] = from_table(VideoQuality({"num_samples": 6})(table))
    assert "motion_score" in out["scores"]
    assert frames.STATS["decoded"] == decoded  # decode once
    assert frames.STATS["hits"] == 1


def test_broken_video_is_quarantined(tmp_path: Path) -> None:
    bad = synth.make_corrupt(tmp_path / "bad.mp4", "garbage")
    [row] = from_table(VideoQuality({})(to_table([video_row(bad)])))
    assert (row["status"], row["status_reason"], row["status_operator"]) == (
        Status.QUARANTINED,
        ReasonCode.CORRUPT_MEDIA,
        "video_quality",
    )
