"""video_shots on generated videos whose shot boundaries are known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from pydantic import ValidationError

from curate.demo import synth
from curate.demo.media import Segment, segment_video
from curate.ingest import finalize_record
from operators.base import StageContext
from operators.confine import Confinement
from operators.registry import OPERATORS
from operators.video.shots import VideoShots
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table

FPS = 12
RED, GREEN, BLUE = (230, 20, 20), (20, 200, 40), (30, 40, 220)


def video_row(path: Path | str, caption: str = "a clip", i: int = 0) -> dict[str, Any]:
    rec = new_record(
        source="t",
        locator=str(path),
        layout="video-text",
        modalities=["video", "text"],
        caption=caption,
        media=[new_media("video", str(path))],
        meta={"origin": "test"},
    )
    return finalize_record(rec, unit="u", ordinal=0, row=i, reader="t", confinement=Confinement([str(Path(path).resolve().parent)]))


def run(rows: list[dict[str, Any]], art: Path, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    op = VideoShots(params or {}, StageContext("video_shots", artifacts_dir=str(art)))
    return from_table(op(to_table(rows)))


def children(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["parent_id"]), key=lambda r: r["scores"]["clip_start_s"])


def kept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in children(rows) if r["status"] == Status.KEPT]


def test_registered_with_documented_scores_and_strict_params() -> None:
    assert OPERATORS["video_shots"] is VideoShots
    for key in ("num_shots", "clip_start_s", "clip_end_s", "duration_s"):
        assert VideoShots.writes[key]
    with pytest.raises(ValidationError):
        VideoShots({"min_clip_s": 5, "max_clip_s": 2})
    with pytest.raises(ValidationError):
        VideoShots({"transcode": {"bogus": 1}})
    with pytest.raises(ValidationError):
        VideoShots({"method": "magic"})


@pytest.mark.parametrize("method", ["pixel", "histogram"])
def test_boundaries_within_one_frame(tmp_path: Path, method: str) -> None:
    segs = [
        Segment("solid", 1.5, color=RED),
        Segment("moving", 2.0, seed=2),
        Segment("solid", 1.25, color=BLUE),
        Segment("moving", 1.5, seed=3),
    ]
    truth = segment_video(tmp_path / "v.mp4", segs, fps=FPS)
    assert truth == [1.5, 3.5, 4.75]
    out = run(
        [video_row(tmp_path / "v.mp4")], tmp_path / "art", {"method": method, "min_clip_s": 0.5, "max_clip_s": None}
    )
    parent = out[0]
    assert parent["status"] == Status.SPLIT and parent["status_reason"] == ReasonCode.SPLIT
    clips = kept(out)
    assert len(clips) == 4
    starts = [c["scores"]["clip_start_s"] for c in clips]
    ends = [c["scores"]["clip_end_s"] for c in clips]
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(6.25)
    for found, true in zip(starts[1:], truth, strict=True):
        assert abs(found - true) <= 1 / FPS + 1e-9
    assert starts[1:] == ends[:-1]
    assert all(c["scores"]["num_shots"] == 4.0 for c in clips)


def test_min_and_max_clip_lengths(tmp_path: Path) -> None:
    segs = [
        Segment("moving", 2.0, seed=1),
        Segment("solid", 0.25, color=(255, 255, 255)),  # a flash, shorter than min_clip_s
        Segment("moving", 5.0, seed=2),  # longer than max_clip_s: cut in 3 equal pieces
    ]
    segment_video(tmp_path / "v.mp4", segs, fps=FPS)
    out = run([video_row(tmp_path / "v.mp4")], tmp_path / "art", {"min_clip_s": 1.0, "max_clip_s": 2.0})
    kids = children(out)
    assert [k["status"] for k in kids] == ["kept", "dropped", "kept", "kept", "kept"]
    flash = kids[1]
    assert (flash["status_operator"], flash["status_reason"]) == ("video_shots", ReasonCode.BELOW_MIN)
    assert flash["scores"]["duration_s"] == pytest.approx(0.25)
    assert flash["media"][0]["uri"] == str(tmp_path / "v.mp4")  # nothing written for it
    for clip in kept(out):
        assert 1.0 <= clip["scores"]["duration_s"] <= 2.0 + 1e-9
    edges = [c["scores"]["clip_start_s"] for c in kept(out)[1:]] + [kept(out)[-1]["scores"]["clip_end_s"]]
    assert edges == pytest.approx([2.25, 2.25 + 5 / 3, 2.25 + 10 / 3, 7.25])
    assert out[0]["status_detail"] == "5 parts"
    assert len(list((tmp_path / "art").rglob("*.mp4"))) == 4


def _frames_rgb(path: str) -> list[np.ndarray]:
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_clips_are_frame_accurate_in_the_requested_format(tmp_path: Path) -> None:
    segs = [
        Segment("solid", 1.0, color=RED, tone_hz=300),
        Segment("solid", 1.5, color=GREEN, tone_hz=500),
        Segment("solid", 1.0, color=BLUE, tone_hz=700),
    ]
    segment_video(tmp_path / "v.mp4", segs, fps=FPS, width=64, height=48, audio=True)
    params = {"min_clip_s": 0.5, "transcode": {"max_side": 32, "fps": 8, "crf": 30, "audio_sample_rate": 22050}}
    clips = kept(run([video_row(tmp_path / "v.mp4", caption="three colours")], tmp_path / "art", params))
    assert len(clips) == 3
    for clip, seg in zip(clips, segs, strict=True):
        m = clip["media"][0]
        with av.open(m["uri"]) as c:
            v = c.streams.video[0]
            a = c.streams.audio[0]
            assert (v.codec_context.name, v.width, v.height, float(v.average_rate)) == ("h264", 32, 24, 8.0)
            assert v.frames == round(seg.seconds * 8)
            assert float(v.duration * v.time_base) == pytest.approx(seg.seconds, abs=1 / 8)
            assert (a.codec_context.name, a.sample_rate) == ("aac", 22050)
            assert float(a.duration * a.time_base) == pytest.approx(seg.seconds, abs=0.1)
        frames = _frames_rgb(m["uri"])
        # every frame, first and last included, shows this shot's colour: no frame of a neighbour
        for f in frames:
            assert np.abs(f.reshape(-1, 3).mean(axis=0) - seg.color).max() < 25
        assert (m["codec"], m["width"], m["height"], m["fps"], m["has_audio"]) == ("h264", 32, 24, 8.0, True)
        assert (m["format"], m["audio_codec"], m["sample_rate"], m["num_frames"]) == ("mp4", "aac", 22050, len(frames))
        assert m["bytes"] == Path(m["uri"]).stat().st_size
        s = clip["scores"]
        assert (s["min_side"], s["max_side"], s["fps"], s["has_audio"]) == (24.0, 32.0, 8.0, 1.0)
        assert s["duration_s"] == pytest.approx(seg.seconds)
        assert clip["caption"] == "three colours"
        assert '"clip"' in clip["meta"] and '"origin": "test"' in clip["meta"]
    assert len({c["media"][0]["sha256"] for c in clips}) == 3
    assert len({c["id"] for c in clips}) == 3


def _tone_level(path: str) -> tuple[float, float]:
    """(dominant frequency, RMS) of a clip's audio."""
    with av.open(path) as c:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].sample_rate
    core = samples[len(samples) // 4 : 3 * len(samples) // 4]
    spectrum = np.abs(np.fft.rfft(core))
    return float(np.fft.rfftfreq(len(core), 1 / rate)[spectrum.argmax()]), float(np.sqrt(np.mean(core**2)))


def test_audio_follows_its_shot_or_is_dropped(tmp_path: Path) -> None:
    segs = [Segment("solid", 1.5, color=RED, tone_hz=300), Segment("moving", 1.5, seed=1, tone_hz=800)]
    segment_video(tmp_path / "v.mp4", segs, fps=FPS, audio=True)
    clips = kept(run([video_row(tmp_path / "v.mp4")], tmp_path / "a1", {"min_clip_s": 0.5}))
    freqs = [_tone_level(c["media"][0]["uri"])[0] for c in clips]
    assert freqs == pytest.approx([300, 800], abs=15)
    assert all(_tone_level(c["media"][0]["uri"])[1] == pytest.approx(0.3 / np.sqrt(2), rel=0.1) for c in clips)

    silent = kept(run([video_row(tmp_path / "v.mp4")], tmp_path / "a2", {"min_clip_s": 0.5, "drop_audio": True}))
    for clip in silent:
        with av.open(clip["media"][0]["uri"]) as c:
            assert not c.streams.audio
        assert clip["media"][0]["has_audio"] is False and clip["scores"]["has_audio"] == 0.0


def test_single_shot_is_kept_whole_unless_always_write(tmp_path: Path) -> None:
    synth.make_video(tmp_path / "one.mp4", seconds=2.0, fps=FPS, moving=False)
    row = video_row(tmp_path / "one.mp4")
    [same] = run([dict(row)], tmp_path / "art")
    assert same["status"] == Status.KEPT and same["parent_id"] is None
    assert same["media"][0]["uri"] == str(tmp_path / "one.mp4")
    assert same["scores"] == {"num_shots": 1.0, "clip_start_s": 0.0, "clip_end_s": pytest.approx(2.0)}
    assert not (tmp_path / "art").exists()

    out = run([dict(row)], tmp_path / "art", {"always_write": True})
    assert [r["status"] for r in out] == ["split", "kept"]
    assert Path(out[1]["media"][0]["uri"]).is_file()

    [short] = run([dict(row)], tmp_path / "art", {"min_clip_s": 3.0, "max_clip_s": None})
    assert (short["status"], short["status_reason"]) == (Status.DROPPED, ReasonCode.BELOW_MIN)


def test_broken_videos_are_quarantined(tmp_path: Path) -> None:
    good = synth.make_video(tmp_path / "good.mp4", seconds=1.0)
    garbage = synth.make_corrupt(tmp_path / "bad.mp4", "garbage")
    cut = synth.make_corrupt(tmp_path / "cut.mp4", "truncated", source=good)
    rows = [video_row(p, i=i) for i, p in enumerate([garbage, cut])]
    # a file that vanished after ingest
    gone = new_record(
        source="t", locator="gone", layout="video", media=[new_media("video", str(tmp_path / "gone.mp4"))]
    )
    rows.append({**gone, "id": "gone0000"})
    out = run(rows, tmp_path / "art")
    assert [(r["status"], r["status_reason"]) for r in out] == [
        ("quarantined", "corrupt_media"),
        ("quarantined", "corrupt_media"),
        ("quarantined", "missing_file"),
    ]
    assert all(r["status_operator"] == "video_shots" for r in out)


def test_rerun_writes_the_same_files_with_the_same_bytes(tmp_path: Path) -> None:
    segs = [Segment("moving", 1.5, seed=1), Segment("moving", 1.5, seed=2)]
    segment_video(tmp_path / "v.mp4", segs, fps=FPS, audio=True)
    row = video_row(tmp_path / "v.mp4")
    first = kept(run([dict(row)], tmp_path / "art", {"min_clip_s": 0.5}))
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "art").rglob("*") if p.is_file())
    assert [p.name for p in files] == [f"{row['id']}_clip000.mp4", f"{row['id']}_clip001.mp4"]
    assert files[0].parent.name == row["id"][:2]
    again = kept(run([dict(row)], tmp_path / "art", {"min_clip_s": 0.5}))
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "art").rglob("*") if p.is_file()) == files
    assert [c["id"] for c in again] == [c["id"] for c in first]
    assert [c["media"][0]["sha256"] for c in again] == [c["media"][0]["sha256"] for c in first]


def test_rows_without_one_video_are_untouched(tmp_path: Path) -> None:
    img = synth.make_image(tmp_path / "a.png", 32, 32)
    rows = [
        new_record(source="t", locator="img", layout="image", media=[new_media("image", str(img))], id="i1"),
        new_record(source="t", locator="txt", layout="text", text="hello there", id="t1"),
    ]
    out = run(rows, tmp_path / "art")
    assert [(r["status"], r["scores"]) for r in out] == [("kept", {}), ("kept", {})]
    assert len(out) == 2


def test_clips_after_a_dropped_opening_shot_start_on_their_own_frame(tmp_path: Path) -> None:
    """The first written piece starts late: pass 2 seeks there, and still starts on the right frame."""
    segs = [Segment("solid", 1.5, color=RED, tone_hz=300), Segment("solid", 2.5, color=BLUE, tone_hz=700)]
    segment_video(tmp_path / "v.mp4", segs, fps=FPS, audio=True, gop=FPS)
    out = run([video_row(tmp_path / "v.mp4")], tmp_path / "art", {"min_clip_s": 2.0})
    assert [r["status"] for r in children(out)] == ["dropped", "kept"]
    [clip] = kept(out)
    frames = _frames_rgb(clip["media"][0]["uri"])
    assert len(frames) == round(2.5 * FPS)
    for f in frames:
        assert np.abs(f.reshape(-1, 3).mean(axis=0) - BLUE).max() < 25
    freq, level = _tone_level(clip["media"][0]["uri"])
    assert freq == pytest.approx(700, abs=15) and level == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
