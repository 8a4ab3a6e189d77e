"""``video_shots``: cut videos into shots and write each shot as a new, transcoded clip.

Two streaming passes over the file, never holding more than one frame:

1. detect: decode every frame (PyAV, threaded), scale it to a tiny RGB picture (64x36 by default)
   and compare it with the previous one, by mean absolute pixel difference (``pixel``) or by the
   distance between 64-bin colour histograms (``histogram``); a score at or above ``threshold``
   (and, by default, at least ``adaptive_ratio`` times the median score of the frames just before,
   so fast motion is not taken for a cut) starts a new shot at that frame's time.
2. plan and write: shots shorter than ``min_clip_s`` are not written (they become dropped child
   rows, reason ``below_min``, so the ledger shows them); shots longer than ``max_clip_s`` are cut
   into the fewest equal pieces of at most ``max_clip_s``. Each piece is re-encoded (stream copy
   cannot cut between keyframes) into the standard training format that ``transcode`` sets, at a
   constant frame rate (each output frame shows the source frame on screen at its time), with the
   audio track re-encoded (AAC) unless ``drop_audio``. Pieces are written in one decode pass from
   the first written piece on, to ``<artifacts>/<id[:2]>/<parent id>_clip<NNN>.<container>`` through
   a temporary name and ``os.replace`` (a rerun overwrites the same files).

Each written piece becomes a child row (``derive(row, suffix="clipNNN")``): its media is the clip
(with its sha256, so exact dedup sees equal clips as duplicates), it keeps the parent's caption and
scores, with the clip's own duration/size/fps numbers and ``clip_start_s``/``clip_end_s``; meta
``clip`` records index, shot, times and the parent's media reference. The parent ends ``split``.
A video that is one shot needing no cut is kept as it is (unless ``always_write``); a whole video
shorter than ``min_clip_s`` is dropped. Rows without exactly one readable video are untouched.
Encoding uses ``transcode.threads`` threads (default 1: Ray runs one task per core anyway) and, for
libx264, no macroblock-tree rate control (``transcode.reproducible``): the same input then gives the
same clip bytes on any machine, so clips of duplicate videos are exact duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import median
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from operators.base import ExpandOperator, OperatorError, Params, SkipSample, mark
from operators.errors import media_errors
from operators.media_io import uri_of
from operators.registry import register_operator
from operators.video.decode import (
    MIN_SEEK_GAP_S,
    dump_meta,
    load_meta,
    open_av,
    stream_fps,
    stream_origin,
    video_items,
    video_stream,
)
from schemas.enums import ReasonCode, Status
from schemas.record import derive

__all__ = ["TranscodeParams", "VideoShots", "VideoShotsParams", "detect_cuts", "plan_pieces"]

log = logging.getLogger(__name__)

#: encoders that take a constant-quality ``crf`` option / an x264-style ``preset``
_CRF_CODECS = {"libx264", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"}
_PRESET_CODECS = {"libx264", "libx265"}


class TranscodeParams(Params):
    """The training format clips are written in."""

    codec: str = Field("libx264", description="FFmpeg video encoder (libx264, libx265, libvpx-vp9, mpeg4...)")
    container: str = Field("mp4", description="container format and file suffix (mp4, mov, mkv, webm)")
    width: int | None = Field(None, ge=2, description="output width; with height: exact size, alone: keeps the aspect")
    height: int | None = Field(None, ge=2, description="output height; with width: exact size, alone: keeps the aspect")
    max_side: int | None = Field(None, ge=2, description="scale down so the longer side is at most this (never up)")
    fps: float | None = Field(
        None, gt=0, description="constant output frame rate; None keeps the source's average rate"
    )
    crf: int | None = Field(23, ge=0, le=63, description="constant quality for x264/x265/vpx/av1 (lower is better)")
    bitrate_kbps: int | None = Field(None, gt=0, description="target video bitrate; used instead of crf when set")
    preset: str | None = Field("veryfast", description="x264/x265 speed preset")
    pix_fmt: str = Field("yuv420p", description="output pixel format")
    keyint_s: float | None = Field(2.0, gt=0, description="keyframe interval in seconds (None: the encoder's default)")
    threads: int = Field(
        1, ge=0, description="encoder threads (0: FFmpeg decides; a fixed count gives the same bytes everywhere)"
    )
    reproducible: bool = Field(
        True,
        description="libx264: turn macroblock-tree rate control off (it is not bit-reproducible), so equal inputs "
        "give equal bytes and exact dedup sees equal clips; costs a few percent of bitrate",
    )
    faststart: bool = Field(True, description="mp4/mov: put the index first so readers can stream the clip")
    audio_codec: str = Field("aac", description="FFmpeg audio encoder for the kept audio track")
    audio_bitrate_kbps: int = Field(128, gt=0, description="audio bitrate")
    audio_sample_rate: int | None = Field(None, gt=0, description="output sample rate; None keeps the source's")
    audio_channels: Literal[1, 2] | None = Field(None, description="1 or 2; None keeps the source's (at most 2)")


class VideoShotsParams(Params):
    method: Literal["pixel", "histogram"] = Field(
        "pixel",
        description="pixel: mean absolute RGB difference of consecutive tiny frames (0..1); histogram: half the L1 "
        "distance of their 4x4x4-bin colour histograms (0..1, blind to motion, misses cuts between similar colours)",
    )
    threshold: float = Field(
        0.12, gt=0, le=1, description="a frame whose score vs the previous frame is >= this starts a shot"
    )
    adaptive_ratio: float | None = Field(
        2.5,
        ge=1,
        description="also require the score to be >= this times the median score of the previous adaptive_window "
        "frames, so fast motion is not taken for cuts; None: the threshold alone decides",
    )
    adaptive_window: int = Field(8, ge=2, le=240, description="frames in the median the adaptive rule compares with")
    analysis_width: int = Field(64, ge=8, le=640, description="width of the frames the detector compares")
    analysis_height: int = Field(36, ge=8, le=640, description="height of the frames the detector compares")
    min_clip_s: float = Field(1.0, ge=0, description="shots shorter than this are not written (dropped child rows)")
    max_clip_s: float | None = Field(
        30.0, gt=0, description="longer shots are cut into the fewest equal pieces of at most this; None: no cut"
    )
    always_write: bool = Field(False, description="write a clip even when the video is one shot needing no cut")
    drop_audio: bool = Field(False, description="write clips without audio (else the audio track is re-encoded)")
    transcode: TranscodeParams = Field(default_factory=TranscodeParams, description="the clips' format")

    @model_validator(mode="after")
    def _check(self) -> VideoShotsParams:
        if self.max_clip_s is not None and self.max_clip_s < self.min_clip_s:
            raise ValueError(f"max_clip_s {self.max_clip_s} < min_clip_s {self.min_clip_s}")
        return self


# ----------------------------------------------------------------------------- pass 1: detect


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


# ----------------------------------------------------------------------------- pass 2: write


def _output_size(width: int, height: int, tp: TranscodeParams) -> tuple[int, int]:
    if tp.width and tp.height:
        w, h = tp.width, tp.height
    elif tp.width:
        w, h = tp.width, height * tp.width / width
    elif tp.height:
        w, h = width * tp.height / height, tp.height
    elif tp.max_side and max(width, height) > tp.max_side:
        scale = tp.max_side / max(width, height)
        w, h = width * scale, height * scale
    else:
        w, h = width, height
    return max(2, round(w / 2) * 2), max(2, round(h / 2) * 2)


@dataclass
class _AudioIn:
    rate: int
    channels: int


class _ClipWriter:
    """One output clip: encodes the frames and audio samples routed to [start, end)."""

    def __init__(self, piece: Piece, path: Path, tp: TranscodeParams, size: tuple[int, int], fps: Fraction,
                 audio: _AudioIn | None) -> None:  # fmt: skip
        import av

        self.piece, self.path, self.tp, self.size, self.fps = piece, path, tp, size, fps
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "+faststart"} if tp.faststart and tp.container in ("mp4", "mov") else {}
        self.out = av.open(str(self.tmp), "w", format=tp.container, options=options)
        codec_opts: dict[str, str] = {}
        if tp.crf is not None and not tp.bitrate_kbps and tp.codec in _CRF_CODECS:
            codec_opts["crf"] = str(tp.crf)
        if tp.preset and tp.codec in _PRESET_CODECS:
            codec_opts["preset"] = tp.preset
        if tp.reproducible and tp.codec == "libx264":
            codec_opts["x264-params"] = "mbtree=0"  # x264's macroblock-tree rate control is not bit-reproducible
        self.vs = self.out.add_stream(tp.codec, rate=fps, options=codec_opts)
        self.vs.width, self.vs.height = size
        self.vs.pix_fmt = tp.pix_fmt
        ctx = self.vs.codec_context
        ctx.thread_count = tp.threads
        if tp.bitrate_kbps:
            ctx.bit_rate = tp.bitrate_kbps * 1000
        if tp.keyint_s:
            ctx.gop_size = max(1, round(tp.keyint_s * float(fps)))
        self.total = max(1, round(piece.seconds * float(fps)))
        self.k = 0
        self._src: Any = None
        self._conv: Any = None
        self.audio_done = audio is None
        self.as_ = None
        if audio is not None:
            rate = tp.audio_sample_rate or audio.rate
            self.channels = tp.audio_channels or min(2, audio.channels)
            self.as_ = self.out.add_stream(tp.audio_codec, rate=rate)
            self.as_.layout = "mono" if self.channels == 1 else "stereo"
            self.as_.codec_context.bit_rate = tp.audio_bitrate_kbps * 1000
            self.as_.codec_context.open()  # fixes frame_size
            self.frame_size = self.as_.codec_context.frame_size or 1024
            self.resampler = av.AudioResampler(
                format=self.as_.codec_context.format.name, layout=self.as_.layout.name, rate=rate
            )
            self.fifo = av.AudioFifo()
            self.a_rate = rate
            self.a_pts = 0
            self.a_started = False

    @property
    def video_done(self) -> bool:
        return self.k >= self.total

    def push_video(self, frame: Any, until: float) -> None:
        """Encode ``frame`` for every output frame time in [.., until) of this clip."""
        w, h = self.size
        while self.k < self.total and self.piece.start + self.k / self.fps < until - 1e-6:
            if self._src is not frame:
                self._conv = frame.reformat(width=w, height=h, format=self.tp.pix_fmt)
                self._src = frame
            self._conv.pts = self.k
            self._conv.time_base = 1 / self.fps
            self.out.mux(self.vs.encode(self._conv))
            self.k += 1

    def push_audio(self, samples: np.ndarray, t: float, rate: int, layout: str) -> None:
        """Encode float planar ``samples`` (channels, n) that start at time ``t``."""
        import av

        if not self.a_started:
            self.a_started = True
            pad = round((t - self.piece.start) * rate)
            if pad > 0:  # the audio starts late: keep it in sync with silence
                samples = np.concatenate([np.zeros((samples.shape[0], pad), np.float32), samples], axis=1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for f in self.resampler.resample(frame):
            self.fifo.write(f)
        self._drain(partial=False)

    def _drain(self, partial: bool) -> None:
        while self.fifo.samples >= (1 if partial else self.frame_size):
            f = self.fifo.read(self.frame_size, partial=partial)
            if f is None:
                break
            f.pts, f.time_base = self.a_pts, Fraction(1, self.a_rate)
            self.a_pts += f.samples
            self.out.mux(self.as_.encode(f))

    def close(self) -> int:
        """Flush the encoders, close the file and move it into place. Returns the frames written."""
        self.out.mux(self.vs.encode(None))
        if self.as_ is not None:
            for f in self.resampler.resample(None):
                self.fifo.write(f)
            self._drain(partial=True)
            self.out.mux(self.as_.encode(None))
        self.out.close()
        os.replace(self.tmp, self.path)
        return self.k

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the temp file is removed below
            self.out.close()
        self.tmp.unlink(missing_ok=True)


class _ClipRouter:
    """Pass 2: one decode from the first written piece on; frames and audio go to their clips."""

    def __init__(self, pieces: list[Piece], paths: dict[int, Path], tp: TranscodeParams, vs: Any, as_: Any,
                 origin: float) -> None:  # fmt: skip
        self.pieces, self.paths, self.tp, self.origin = pieces, paths, tp, origin
        ctx = vs.codec_context
        self.size = _output_size(ctx.width, ctx.height, tp)
        src_rate = vs.average_rate or vs.guessed_rate
        self.fps = Fraction(tp.fps).limit_denominator(1001) if tp.fps else Fraction(src_rate or 25)
        self.audio_in = _AudioIn(as_.sample_rate, as_.channels) if as_ is not None else None
        self.writers: dict[int, _ClipWriter] = {}
        self.closed: dict[int, int] = {}
        self.prev: Any = None
        self.to_fltp: Any = None
        self.v_lo = self.a_lo = 0  # first piece whose video / audio is not complete

    def _writer(self, p: Piece) -> _ClipWriter | None:
        if p.index in self.closed:
            return None
        w = self.writers.get(p.index)
        if w is None:
            w = self.writers[p.index] = _ClipWriter(p, self.paths[p.index], self.tp, self.size, self.fps, self.audio_in)
        return w

    def on_video(self, frame: Any) -> None:
        t = frame.time - self.origin if frame.time is not None else None
        if self.prev is not None and t is not None:
            self._emit(self.prev, t)
        self.prev = frame

    def _finished(self, p: Piece, what: str) -> bool:
        if p.index in self.closed:
            return True
        w = self.writers.get(p.index)
        return w is not None and (w.video_done if what == "video" else w.audio_done)

    def _emit(self, frame: Any, until: float) -> None:
        i = self.v_lo
        while i < len(self.pieces) and self.pieces[i].start < until:
            w = self._writer(self.pieces[i])
            if w is not None and not w.video_done:
                w.push_video(frame, until)
            i += 1
        while self.v_lo < len(self.pieces) and self._finished(self.pieces[self.v_lo], "video"):
            self.v_lo += 1
        self._close_finished()

    def on_audio(self, frame: Any) -> None:
        import av

        if frame.time is None:
            return
        if self.to_fltp is None:
            self.to_fltp = av.AudioResampler(format="fltp")  # same rate and layout: sample counts are kept
        t = frame.time - self.origin
        for f in self.to_fltp.resample(frame):
            self._route_audio(f, t)
            t += f.samples / f.sample_rate

    def _route_audio(self, f: Any, t: float) -> None:
        """Send the samples of ``f`` (starting at ``t``) that fall in each piece to its clip."""
        arr = f.to_ndarray()
        rate, n = f.sample_rate, arr.shape[1]
        i = self.a_lo
        while i < len(self.pieces) and self.pieces[i].start < t + n / rate:
            p = self.pieces[i]
            i += 1
            i0 = max(0, round((p.start - t) * rate))
            i1 = min(n, round((p.end - t) * rate))
            w = self._writer(p)
            if w is None:
                continue
            if i1 > i0 and not w.audio_done:
                w.push_audio(arr[:, i0:i1], t + i0 / rate, rate, f.layout.name)
            if p.end <= t + n / rate + 1e-9:
                w.audio_done = True
        while self.a_lo < len(self.pieces) and self._finished(self.pieces[self.a_lo], "audio"):
            self.a_lo += 1
        self._close_finished()

    def _close_finished(self) -> None:
        for i, w in list(self.writers.items()):
            if w.video_done and w.audio_done:
                self.closed[i] = w.close()
                del self.writers[i]

    def finish(self) -> None:
        if self.prev is not None:
            self._emit(self.prev, math.inf)
        for i, w in list(self.writers.items()):
            self.closed[i] = w.close()
            del self.writers[i]

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        self.writers.clear()

    @property
    def done(self) -> bool:
        return len(self.closed) == len(self.pieces)


def write_clips(container: Any, pieces: list[Piece], paths: dict[int, Path], tp: TranscodeParams, drop_audio: bool,
                media: dict[str, Any]) -> tuple[dict[int, int], _ClipRouter]:  # fmt: skip
    """Pass 2: write every piece in ``pieces`` (all kept) to ``paths``; returns frames per piece."""
    vs = video_stream(container, media)
    vs.codec_context.thread_type = "AUTO"
    as_ = None if drop_audio or not container.streams.audio else container.streams.audio[0]
    origin = stream_origin(vs)
    router = _ClipRouter(pieces, paths, tp, vs, as_, origin)
    if pieces[0].start > MIN_SEEK_GAP_S:
        container.seek(int(math.floor((origin + pieces[0].start) / float(vs.time_base))), stream=vs, backward=True)
    streams = [vs] if as_ is None else [vs, as_]
    try:
        for packet in container.demux(*streams):
            is_video = packet.stream.type == "video"
            for frame in packet.decode():
                (router.on_video if is_video else router.on_audio)(frame)
            if router.done:
                break
        router.finish()
    except BaseException:
        router.abort()
        raise
    missing = [p.index for p in pieces if p.index not in router.closed]
    if missing:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"clips {missing} got no frames")
    return router.closed, router


# ----------------------------------------------------------------------------- the operator


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@register_operator
class VideoShots(ExpandOperator[VideoShotsParams]):
    """Cut videos into shots (content change) and write each as a transcoded clip row."""

    name: ClassVar[str] = "video_shots"
    default_batch_size: ClassVar[int] = 8
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"),)
    writes: ClassVar[dict[str, str]] = {
        "num_shots": "shots detected in the source video (before min/max rules); on the parent and every clip",
        "clip_start_s": "where the clip starts in the source video, seconds (0 for a video kept whole)",
        "clip_end_s": "where the clip ends in the source video, seconds (the duration for a video kept whole)",
        "duration_s": "clips: the clip's duration (replaces probe's number for the parent)",
        "fps": "clips: the clip's frame rate",
        "min_side": "clips: shortest side of the clip in pixels",
        "max_side": "clips: longest side of the clip in pixels",
        "pixels": "clips: width * height of the clip",
        "aspect_ratio": "clips: width / height of the clip",
        "bytes": "clips: size of the clip file",
        "has_audio": "clips: 1.0 when the clip has an audio track",
    }

    def validate_setup(self) -> None:
        import av

        tp: TranscodeParams = self.params.transcode  # type: ignore[attr-defined]
        for name in (tp.codec, *(() if self.params.drop_audio else (tp.audio_codec,))):  # type: ignore[attr-defined]
            try:
                av.codec.Codec(name, "w")
            except Exception as e:  # noqa: BLE001
                raise OperatorError(f"video_shots: this FFmpeg build has no encoder '{name}' ({e})") from None
        if tp.container not in av.formats_available:
            raise OperatorError(f"video_shots: unknown container format '{tp.container}'")

    def _clip_path(self, row: dict[str, Any], index: int) -> Path:
        if not self.artifacts_dir:
            raise OperatorError("video_shots needs an artifacts folder (the engine sets OUT/artifacts/<stage>)")
        rid = row["id"] or "noid"
        return Path(self.artifacts_dir) / rid[:2] / f"{rid}_clip{index:03d}.{self.params.transcode.container}"

    def expand(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        p = self.params
        videos = video_items(row)
        if len(videos) != 1:
            return None
        vi, media = videos[0]
        with open_av(media) as container:
            vs = video_stream(container, media)
            with media_errors(uri_of(media)):
                shots = detect_cuts(container, vs, p)
        pieces = plan_pieces(shots, p.min_clip_s, p.max_clip_s)
        scores = dict(row.get("scores") or {})
        scores["num_shots"] = float(len(shots.cuts) + 1)
        if len(pieces) == 1 and not p.always_write:
            scores.update(clip_start_s=0.0, clip_end_s=round(shots.end - shots.start, 6))
            row["scores"] = scores
            if not pieces[0].keep:
                self.drop(row, ReasonCode.BELOW_MIN, f"video {pieces[0].seconds:.3f}s < min_clip_s {p.min_clip_s:g}")
            return None
        kept = [pc for pc in pieces if pc.keep]
        paths = {pc.index: self._clip_path(row, pc.index) for pc in kept}
        frames: dict[int, int] = {}
        router = None
        if kept:
            with open_av(media) as container, media_errors(uri_of(media)):
                try:
                    frames, router = write_clips(container, kept, paths, p.transcode, p.drop_audio, media)
                except BaseException:
                    self._remove(paths)  # no half-written clips
                    raise
        children = []
        for pc in pieces:
            child_scores = {
                **scores,
                "clip_start_s": round(pc.start - shots.start, 6),
                "clip_end_s": round(pc.end - shots.start, 6),
                "duration_s": round(pc.seconds, 6),
            }
            meta = load_meta(row)
            meta["clip"] = {
                "index": pc.index,
                "shot": pc.shot,
                "start_s": round(pc.start - shots.start, 6),
                "end_s": round(pc.end - shots.start, 6),
                "source": uri_of(media),
            }
            if pc.keep:
                assert router is not None
                clip = self._clip_media(media, paths[pc.index], frames[pc.index], router)
                child_scores.update(self._clip_scores(clip))
                new_media = [clip if i == vi else m for i, m in enumerate(row["media"]) if m.get("role") != "keyframe"]
            else:
                new_media = row["media"]
            child = derive(
                row, suffix=f"clip{pc.index:03d}", media=new_media, scores=child_scores,
                meta=dump_meta(meta),
            )  # fmt: skip
            if not pc.keep:
                detail = f"clip {pc.seconds:.3f}s < min_clip_s {p.min_clip_s:g}"
                mark(child, Status.DROPPED, self.stage, ReasonCode.BELOW_MIN, detail)
            children.append(child)
        return children

    @staticmethod
    def _remove(paths: dict[int, Path]) -> None:
        for path in paths.values():
            path.unlink(missing_ok=True)

    def _clip_media(self, media: dict[str, Any], path: Path, frames: int, router: _ClipRouter) -> dict[str, Any]:
        import av

        tp: TranscodeParams = self.params.transcode  # type: ignore[attr-defined]
        clip = dict(media)
        has_audio = router.audio_in is not None
        w, h = router.size
        clip.update(
            uri=str(path),
            member=None,
            offset=None,
            length=None,
            bytes=path.stat().st_size,
            sha256=_sha256_file(path),
            format=tp.container,
            width=w,
            height=h,
            fps=float(router.fps),
            num_frames=frames,
            duration_s=round(frames / float(router.fps), 6),
            codec=av.codec.Codec(tp.codec, "w").canonical_name,
            has_audio=has_audio,
            audio_codec=av.codec.Codec(tp.audio_codec, "w").canonical_name if has_audio else None,
            sample_rate=(tp.audio_sample_rate or router.audio_in.rate) if router.audio_in else None,
            channels=(tp.audio_channels or min(2, router.audio_in.channels)) if router.audio_in else None,
            error=None,
        )
        return clip

    @staticmethod
    def _clip_scores(clip: dict[str, Any]) -> dict[str, float]:
        w, h = clip["width"], clip["height"]
        return {
            "duration_s": float(clip["duration_s"]),
            "fps": float(clip["fps"]),
            "min_side": float(min(w, h)),
            "max_side": float(max(w, h)),
            "pixels": float(w * h),
            "aspect_ratio": w / h,
            "bytes": float(clip["bytes"]),
            "has_audio": 1.0 if clip["has_audio"] else 0.0,
        }
