"""video_frames: keyframes at the right times, by seeking, written as media items; the frame cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

import operators.video.decode as frames
from curate.demo import synth
from curate.demo.media import Segment, segment_video
from curate.ingest import finalize_record
from operators.base import OperatorError, StageContext
from operators.confine import Confinement
from operators.registry import OPERATORS
from operators.video.frames import VideoFrames
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 40, 220), (240, 240, 240)]


def video_row(path: Path | str, i: int = 0, **media: Any) -> dict[str, Any]:
    rec = new_record(
        source="t",
        locator=str(path),
        layout="video-text",
        modalities=["video", "text"],
        caption="c",
        media=[new_media("video", str(path), **media)],
    )
    return finalize_record(rec, unit="u", ordinal=0, row=i, reader="t", confinement=Confinement([str(Path(path).resolve().parent)]))


def run(rows: list[dict[str, Any]], art: Path | None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    op = VideoFrames(params or {}, StageContext("video_frames", artifacts_dir=str(art) if art else None))
    return from_table(op(to_table(rows)))


@pytest.fixture(autouse=True)
def fresh_cache():
    frames.clear_cache()
    frames.STATS.clear()
    yield
    frames.clear_cache()


@pytest.fixture()
def colours(tmp_path: Path) -> Path:
    """4 s: one second each of red, green, blue, white."""
    segment_video(tmp_path / "c.mp4", [Segment("solid", 1.0, color=c) for c in COLOURS], fps=12, width=96, height=64)
    return tmp_path / "c.mp4"


def test_registered_and_params() -> None:
    assert OPERATORS["video_frames"] is VideoFrames
    assert VideoFrames.writes["num_keyframes"]
    with pytest.raises(ValidationError):
        VideoFrames({"num_frames": None, "every_s": None})
    with pytest.raises(ValidationError):
        VideoFrames({"max_side": 4})


def test_plan_times() -> None:
    assert frames.plan_times(4.0, num=4) == [0.5, 1.5, 2.5, 3.5]
    assert frames.plan_times(10.0, every_s=2.5) == [1.25, 3.75, 6.25, 8.75]
    assert frames.plan_times(10.0, every_s=1.0, max_frames=4) == [1.25, 3.75, 6.25, 8.75]
    assert frames.plan_times(1.0, every_s=5.0) == [0.5]


def test_n_thumbnails_at_the_right_times(tmp_path: Path, colours: Path) -> None:
    [row] = run([video_row(colours)], tmp_path / "art", {"num_frames": 4, "max_side": 48})
    assert row["status"] == Status.KEPT
    assert row["layout"] == "video-text" and row["modalities"] == ["video", "text"]
    video, *keys = row["media"]
    assert video["modality"] == "video" and len(keys) == 4
    listed = json.loads(row["meta"])["keyframes"]
    assert [k["media_index"] for k in listed] == [1, 2, 3, 4]
    assert [k["t_s"] for k in listed] == pytest.approx([0.5, 1.5, 2.5, 3.5], abs=1 / 12)
    for item, colour in zip(keys, COLOURS, strict=True):
        assert (item["role"], item["modality"], item["format"]) == ("keyframe", "image", "jpeg")
        assert (item["width"], item["height"]) == (48, 32)
        path = Path(item["uri"])
        assert path.parent == tmp_path / "art" / row["id"][:2]
        assert item["bytes"] == path.stat().st_size
        with Image.open(path) as im:
            assert im.size == (48, 32)
            # the frame at its time, not a neighbour: each second has its own colour
            assert np.abs(np.asarray(im.convert("RGB"), float).reshape(-1, 3).mean(0) - colour).max() < 20
    assert row["scores"]["num_keyframes"] == 4.0


def test_every_k_seconds(tmp_path: Path) -> None:
    synth.make_video(tmp_path / "v.mp4", seconds=10.0, fps=10, width=64, height=48)
    [row] = run([video_row(tmp_path / "v.mp4")], tmp_path / "art", {"every_s": 2.5})
    times = [k["t_s"] for k in json.loads(row["meta"])["keyframes"]]
    assert times == pytest.approx([1.25, 3.75, 6.25, 8.75], abs=0.1)


def test_long_video_is_sampled_by_seeking(tmp_path: Path) -> None:
    """120 s at 10 fps = 1200 frames, a keyframe every 10: 5 samples decode a few GOPs only."""
    segment_video(tmp_path / "long.mp4", [Segment("moving", 120.0, seed=1)], fps=10, width=64, height=48, gop=10)
    [row] = run([video_row(tmp_path / "long.mp4")], tmp_path / "art", {"num_frames": 5})
    assert row["scores"]["num_keyframes"] == 5.0
    times = [k["t_s"] for k in json.loads(row["meta"])["keyframes"]]
    assert times == pytest.approx([12, 36, 60, 84, 108], abs=0.1)
    # each sample: at most one GOP to reach the target, plus the pair frame 0.1 s later
    assert frames.STATS["decoded"] <= 5 * (10 + 2)
    assert frames.STATS["seeks"] >= 4


def test_rerun_replaces_keyframes(tmp_path: Path, colours: Path) -> None:
    [once] = run([video_row(colours)], tmp_path / "art", {"num_frames": 3})
    [twice] = run([once], tmp_path / "art", {"num_frames": 3})
    assert [m["uri"] for m in twice["media"]] == [m["uri"] for m in once["media"]]
    assert len(twice["media"]) == 4
    assert sorted(p.name for p in (tmp_path / "art").rglob("*") if p.is_file()) == [
        f"{once['id']}_v0_{j:03d}.jpg" for j in range(3)
    ]


def test_uses_probed_duration_and_decodes_once(tmp_path: Path, colours: Path) -> None:
    row = video_row(colours, duration_s=4.0)
    run([row], tmp_path / "art")
    decoded = frames.STATS["decoded"]
    # same times, a smaller size: served from the cache
    sample = frames.sample_frames(row["media"][0], frames.plan_times(4.0, num=8), max_side=32)
    assert frames.STATS["decoded"] == decoded and frames.STATS["hits"] == 1
    assert sample.rgb_at(32).shape == (8, 21, 32, 3)


def test_broken_video_quarantined_and_other_rows_untouched(tmp_path: Path) -> None:
    bad = synth.make_corrupt(tmp_path / "bad.mp4", "garbage")
    img = synth.make_image(tmp_path / "a.png", 16, 16)
    rows = [
        video_row(bad),
        new_record(source="t", locator="i", layout="image", media=[new_media("image", str(img))], id="img0"),
    ]
    out = run(rows, tmp_path / "art")
    assert (out[0]["status"], out[0]["status_reason"]) == (Status.QUARANTINED, ReasonCode.CORRUPT_MEDIA)
    assert (out[1]["status"], out[1]["scores"], len(out[1]["media"])) == (Status.KEPT, {}, 1)


def test_needs_an_artifacts_folder(tmp_path: Path, colours: Path) -> None:
    with pytest.raises(OperatorError, match="artifacts"):
        run([video_row(colours)], None)


# ----------------------------------------------------------------------------- the decoder


def full_decode(path: Path) -> list[tuple[float, np.ndarray]]:
    """Every frame of the first video stream, (seconds from its start, RGB), by a plain decode."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        origin = frames.stream_origin(vs)
        return [(f.time - origin, f.to_ndarray(format="rgb24")) for f in c.decode(vs)]


def reference_pick(all_frames: list[tuple[float, np.ndarray]], t: float, fps: float, gap: float) -> tuple[int, int | None]:
    """Indices of the first frame at or after half a frame before ``t`` (the last one past the end)
    and of its pair frame, the first one at least ``gap`` later (None at the end)."""
    k = next((i for i, (ft, _) in enumerate(all_frames) if ft >= t - 0.5 / fps), len(all_frames) - 1)
    base = all_frames[k][0]
    pair = next((i for i in range(k + 1, len(all_frames)) if all_frames[i][0] >= base + gap - 0.5 / fps), None)
    return k, pair


@pytest.fixture(scope="module")
def gop_clips(tmp_path_factory) -> dict[str, Path]:
    """6 s at 12 fps with B-frames and a keyframe every second (MP4, Matroska), and the same in an
    AVI (MPEG-4 part 2), whose packets' keyframe flags the decoder does not trust."""
    d = tmp_path_factory.mktemp("gop")
    segs = [Segment("moving", 3.0, seed=1, pan_px=3), Segment("moving", 3.0, seed=2, pan_px=2)]
    out = {}
    for name, codec in (("clip.mp4", None), ("clip.mkv", None), ("clip.avi", "mpeg4")):
        segment_video(d / name, segs, fps=12, width=96, height=64, gop=12, codec=codec)
        out[name] = d / name
    return out


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.avi"])
@pytest.mark.parametrize(
    "times",
    [
        frames.plan_times(6.0, every_s=0.25, max_frames=64),  # dense: read forward
        frames.plan_times(6.0, num=3),  # sparse: GOPs with no sample are not decoded
        [5.99, 0.0, 3.0, 0.05, 2.95, 1.01, 6.5],  # unsorted, close, on keyframes, past the end
    ],
    ids=["dense", "sparse", "odd"],
)
def test_decoded_frames_are_those_of_a_full_decode(gop_clips, name: str, times: list[float]) -> None:
    """Skipping GOPs, unreferenced frames and seeking change nothing: every sample and pair frame is
    the one a plain decode of every frame picks."""
    path = gop_clips[name]
    every = full_decode(path)
    sample = frames.sample_frames({"uri": str(path)}, times, max_side=None)
    for i, t in enumerate(times):
        k, pair = reference_pick(every, t, 12.0, frames.PAIR_GAP_S)
        assert sample.times[i] == pytest.approx(every[k][0]), (i, t)
        assert np.array_equal(sample.rgb[i], every[k][1]), (i, t)
        if pair is None:
            assert np.isnan(sample.next_dt[i])
        else:
            assert sample.next_dt[i] == pytest.approx(every[pair][0] - every[k][0])
            assert np.array_equal(sample.next_luma[i], frames.luma(every[pair][1])), (i, t)


def test_decodes_only_what_the_samples_need(gop_clips) -> None:
    path = {"uri": str(gop_clips["clip.mp4"])}
    total = len(full_decode(gop_clips["clip.mp4"]))
    frames.sample_frames(path, frames.plan_times(6.0, every_s=0.5), max_side=32)
    assert frames.STATS["decoded"] < total  # B-frames before a sample are not decoded
    frames.STATS.clear()
    frames.sample_frames(path, frames.plan_times(6.0, num=2), max_side=32)
    # a sample at 1.5 s and one at 4.5 s: the GOPs of seconds 0, 2, 3 and 5 are demuxed, not decoded
    assert frames.STATS["packets_dropped"] >= 3 * 12 - 2 and frames.STATS["decoded"] <= 2 * 12


def test_one_decoder_thread_per_worker(gop_clips) -> None:
    import av

    with av.open(str(gop_clips["clip.mp4"])) as c:
        vs = c.streams.video[0]
        frames.configure_decoder(vs)
        assert frames.DECODE_THREADS == 1 and vs.codec_context.thread_count == 1
