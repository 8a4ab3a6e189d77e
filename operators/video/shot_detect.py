"""Pass 1 of ``video_shots`` (see ``operators.video.shots``): find the shot boundaries of a video
from tiny decoded frames, then plan the pieces to write.

Every frame is decoded (PyAV, threaded), scaled to a tiny RGB picture and compared with the
previous one, by mean absolute pixel difference (``pixel``) or by the distance between 64-bin
colour histograms (``histogram``); a score at or above ``threshold`` (and, by default, at least
``adaptive_ratio`` times the median score of the frames just before) starts a new shot. Shots
shorter than ``min_clip_s`` are planned as not kept; shots longer than ``max_clip_s`` are cut into
the fewest equal pieces of at most ``max_clip_s``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from operators.base import SkipSample
from operators.video.decode import stream_fps, stream_origin
from operators.video.shot_params import VideoShotsParams
from schemas.enums import ReasonCode

__all__ = ["Piece", "Shots", "detect_cuts", "plan_pieces"]


def _features(rgb: np.ndarray, method: str) -> np.ndarray:
    if method == "pixel":
        return rgb.astype(np.int16)
    q = (rgb >> 6).astype(np.int32)
    idx = (q[..., 0] << 4) | (q[..., 1] << 2) | q[..., 2]
    return np.bincount(idx.ravel(), minlength=64) / idx.size


def _distance(a: np.ndarray, b: np.ndarray, method: str) -> float:
    if method == "pixel":
        return float(np.abs(a - b).mean() / 255.0)
    return float(0.5 * np.abs(a - b).sum())


@dataclass
class Shots:
    cuts: list[float]  # times (s from the stream start) where a new shot starts
    start: float  # time of the first frame
    end: float  # time after the last frame
    fps: float
    frames: int


def detect_cuts(container: Any, vs: Any, params: VideoShotsParams) -> Shots:
    """Decode the video once at tiny size; return the shot boundaries (pass 1)."""
    vs.codec_context.thread_type = "AUTO"
    origin, fps = stream_origin(vs), stream_fps(vs) or 25.0
    size = {"width": params.analysis_width, "height": params.analysis_height, "format": "rgb24"}
    prev = None
    recent: deque[float] = deque(maxlen=params.adaptive_window)
    cuts: list[float] = []
    first_t = last_t = None
    n = 0
    for frame in container.decode(vs):
        t = frame.time - origin if frame.time is not None else n / fps
        feat = _features(frame.to_ndarray(**size), params.method)
        if prev is not None:
            score = _distance(prev, feat, params.method)
            if score >= params.threshold and (
                params.adaptive_ratio is None or len(recent) < 2 or score >= params.adaptive_ratio * median(recent)
            ):
                cuts.append(t)
            recent.append(score)
        prev, last_t = feat, t
        first_t = t if first_t is None else first_t
        n += 1
    if first_t is None or last_t is None:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "no decodable video frame")
    return Shots(cuts=cuts, start=first_t, end=last_t + 1.0 / fps, fps=fps, frames=n)


@dataclass
class Piece:
    index: int  # position among all pieces of the video (the clip number in file names)
    shot: int
    start: float
    end: float
    keep: bool  # False: shorter than min_clip_s, not written

    @property
    def seconds(self) -> float:
        return self.end - self.start


def plan_pieces(shots: Shots, min_clip_s: float, max_clip_s: float | None) -> list[Piece]:
    """Shots -> pieces: short shots marked not kept, long shots cut into equal parts <= max_clip_s."""
    bounds = [shots.start, *shots.cuts, shots.end]
    pieces: list[Piece] = []
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        length = b - a
        n = max(1, math.ceil(length / max_clip_s - 1e-9)) if max_clip_s and length > max_clip_s + 1e-9 else 1
        for j in range(n):
            start, end = a + length * j / n, a + length * (j + 1) / n
            keep = end - start >= min_clip_s - 1e-6
            pieces.append(Piece(len(pieces), s, round(start, 6), round(end, 6), keep))
    return pieces
