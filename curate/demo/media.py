"""Generated videos whose content is known: shot boundaries at known times, static, black, corrupt.

``segment_video`` encodes a video made of segments (solid colour, static noise, moving noise, near
black) that change abruptly at frame-exact times, so a shot detector can be checked against the
truth; ``make_video_corpus`` writes the small video corpus the video pipeline
(``examples/pipelines/video.yaml``) runs on.

Everything is deterministic given its arguments (single-threaded encoders).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

from curate.demo import synth

__all__ = ["Segment", "make_video_corpus", "segment_video"]

#: file name of the JSON that ``make_video_corpus`` writes beside ``videos/``
PLANTED_VIDEO_NAME = "PLANTED.json"


@dataclass(frozen=True)
class Segment:
    """One stretch of a generated video.

    kind: ``solid`` (one colour), ``noise`` (a still picture of smooth colour noise), ``moving``
    (that picture panning by ``pan_px`` pixels a frame, with a white square crossing it), ``black``
    (near-black, with a small dim square moving so the frames are not identical).
    """

    kind: Literal["solid", "noise", "moving", "black"]
    seconds: float
    color: tuple[int, int, int] = (0, 0, 0)
    seed: int = 0
    #: frequency of this segment's audio tone (Hz)
    tone_hz: float = 220.0
    #: this segment's tone amplitude, as a fraction of ``segment_video``'s ``amplitude``
    volume: float = 1.0
    #: ``moving``: pixels the picture pans per frame (the square moves twice as fast)
    pan_px: int = 1


def _segment_frames(seg: Segment, fps: int, width: int, height: int):
    n = round(seg.seconds * fps)
    if seg.kind == "solid":
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = seg.color
        for _ in range(n):
            yield frame
        return
    if seg.kind == "black":
        side = max(2, min(width, height) // 8)
        for i in range(n):
            frame = np.full((height, width, 3), 4, np.uint8)
            x = (i * 2) % max(1, width - side)
            frame[height // 2 : height // 2 + side, x : x + side] = 40
            yield frame
        return
    base = np.asarray(synth._rgb_noise(np.random.default_rng(seg.seed), width, height))
    side = max(2, min(width, height) // 6)
    for i in range(n):
        if seg.kind == "noise":
            yield base
            continue
        # a slow pan (pan_px per frame) with a white square crossing the picture
        frame = np.roll(base, shift=i * seg.pan_px, axis=1).copy()
        x = (i * 2 * seg.pan_px) % max(1, width - side)
        y = (height - side) // 2
        frame[y : y + side, x : x + side] = 255
        yield frame


def segment_video(
    path: str | Path,
    segments: list[Segment],
    *,
    fps: int = 12,
    width: int = 64,
    height: int = 48,
    audio: bool = False,
    sample_rate: int = 16000,
    amplitude: float = 0.3,
    gop: int | None = None,
    codec: str | None = None,
) -> list[float]:
    """Encode ``segments`` back to back into an mp4; return the times (s) where segments 2.. start.

    Each segment has ``round(seconds * fps)`` frames, so the boundaries are exact frame times.
    ``audio`` adds a mono AAC track: a sine of ``amplitude * volume`` at each segment's ``tone_hz``.
    ``gop``: keyframe interval in frames (None: the encoder's default, 250 for x264).
    """
    if width % 2 or height % 2:
        raise ValueError(f"video width and height must be even (yuv420p), got {width}x{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or synth.video_codec()
    boundaries: list[float] = []
    total = 0
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps, options={"x264-params": "mbtree=0"} if codec == "libx264" else {})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        if gop:
            vs.codec_context.gop_size = gop
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=sample_rate)
            aus.layout = "mono"
        for k, seg in enumerate(segments):
            if k:
                boundaries.append(total / fps)
            for arr in _segment_frames(seg, fps, width, height):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                frame.pts = total
                total += 1
                out.mux(vs.encode(frame))
        out.mux(vs.encode())
        if aus is not None:
            tones = []
            for seg in segments:
                n = round(seg.seconds * fps) * sample_rate // fps
                t = np.arange(n) / sample_rate
                tones.append(amplitude * seg.volume * np.sin(2 * np.pi * seg.tone_hz * t))
            synth._encode_audio(out, aus, np.concatenate(tones).astype(np.float32)[None, :], sample_rate)
    return boundaries


# name -> (segments, audio, caption)
_CORPUS: dict[str, tuple[list[Segment], bool, str]] = {
    "three_shots": (
        [
            Segment("moving", 2.0, seed=1, tone_hz=220),
            Segment("moving", 3.0, seed=2, tone_hz=330),
            Segment("moving", 1.5, seed=3, tone_hz=440),
        ],
        True,
        "A street scene cut between three camera angles.",
    ),
    "long_shot": (
        [Segment("moving", 9.0, seed=4)],
        False,
        "One long tracking shot along a beach.",
    ),
    "flash": (
        [Segment("moving", 2.0, seed=5), Segment("solid", 0.25, color=(255, 255, 255)), Segment("moving", 2.5, seed=6)],
        True,
        "Two shots of a concert separated by a camera flash.",
    ),
    "static": (
        [Segment("noise", 3.0, seed=7)],
        False,
        "A still frame of a painting.",
    ),
    "mostly_black": (
        [Segment("black", 3.0)],
        False,
        "A dark room with the lights off.",
    ),
}


def make_video_corpus(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the video demo corpus under ``root/videos`` (with ``.txt`` caption sidecars).

    - ``three_shots.mp4``: 3 shots (2.0 s, 3.0 s, 1.5 s) with an audio track;
    - ``three_shots_copy.mp4``: a byte copy of it (its clips are exact duplicates);
    - ``long_shot.mp4``: one 9 s shot (cut by ``max_clip_s``);
    - ``flash.mp4``: 2.0 s, a 0.25 s white flash, 2.5 s (the flash is shorter than ``min_clip_s``);
    - ``static.mp4``: 3 s of one still picture (motion_score ~ 0);
    - ``mostly_black.mp4``: 3 s of near-black frames (black_frame_ratio ~ 1);
    - ``corrupt.mp4``: random bytes (quarantined by probe).

    ``root/PLANTED.json`` records the true boundaries. Returns name -> path of every video.
    ``seed`` shifts the noise patterns (the shot structure stays the same).
    """
    root = Path(root)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    planted: dict[str, dict] = {}
    for name, (segments, audio, caption) in _CORPUS.items():
        segs = [dataclasses.replace(s, seed=s.seed + seed) for s in segments]
        path = videos / f"{name}.mp4"
        bounds = segment_video(path, segs, fps=12, width=96, height=64, audio=audio, gop=12)
        (videos / f"{name}.txt").write_text(caption + "\n")
        paths[name] = path
        planted[name] = {
            "boundaries_s": bounds,
            "seconds": sum(round(s.seconds * 12) for s in segs) / 12,
            "segments": [asdict(s) for s in segs],
            "audio": audio,
        }
    paths["three_shots_copy"] = synth.copy_file(paths["three_shots"], videos / "three_shots_copy.mp4")
    (videos / "three_shots_copy.txt").write_text(_CORPUS["three_shots"][2] + "\n")
    planted["three_shots_copy"] = {**planted["three_shots"], "copy_of": "three_shots"}
    paths["corrupt"] = synth.make_corrupt(videos / "corrupt.mp4", "garbage", seed=seed)
    planted["corrupt"] = {"corrupt": True}
    (root / PLANTED_VIDEO_NAME).write_text(json.dumps(planted, indent=2, sort_keys=True))
    return paths
