"""Pass 2 of ``video_shots`` (see ``operators.video.shots``): write the planned pieces of a video
as transcoded clips, in one decode pass from the first written piece on.

Each piece is re-encoded (stream copy cannot cut between keyframes) into the format that
``transcode`` sets, at a constant frame rate (each output frame shows the source frame on screen
at its time), with the audio track re-encoded unless ``drop_audio``. A clip is written through a
temporary name and ``os.replace`` (a rerun overwrites the same files).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from operators.base import SkipSample
from operators.video.decode import MIN_SEEK_GAP_S, stream_origin, video_stream
from operators.video.shot_detect import Piece
from operators.video.shot_params import TranscodeParams
from schemas.enums import ReasonCode

__all__ = ["ClipRouter", "write_clips"]

#: encoders that take a constant-quality ``crf`` option / an x264-style ``preset``
_CRF_CODECS = {"libx264", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"}
_PRESET_CODECS = {"libx264", "libx265"}


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


class ClipRouter:
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
                media: dict[str, Any]) -> tuple[dict[int, int], ClipRouter]:  # fmt: skip
    """Pass 2: write every piece in ``pieces`` (all kept) to ``paths``; returns frames per piece."""
    vs = video_stream(container, media)
    vs.codec_context.thread_type = "AUTO"
    as_ = None if drop_audio or not container.streams.audio else container.streams.audio[0]
    origin = stream_origin(vs)
    router = ClipRouter(pieces, paths, tp, vs, as_, origin)
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
