"""Sampled video frames, decoding only what the samples need, shared by the video operators of one worker.

"Decode once": ``video_frames`` (thumbnails) and ``video_quality`` (motion, black frames) both ask
for frames at the same sample times (``plan_times`` with the same defaults), so the second asks this
per-process LRU cache and decodes nothing. Ray Data fuses consecutive row-local stages into one task,
so both operators run in the same worker process, one after the other, on the same block.
``dedup_video`` signs other instants (every ``step_s`` from the start) in the map step of a global
operator, another task: it shares this decoder (``decode_at``), not the frames.

``sample_frames(media, times, max_side)`` keeps, for each target time, the first frame presented at
or after half a frame before it (RGB and luma, scaled to fit ``max_side``) plus the luma of its
pair frame, the first frame at least ``PAIR_GAP_S`` (0.1 s) later (for motion). ``decode_at``
reaches them with ``_Reader``: it seeks when the next target is far ahead, reads forward otherwise,
and decodes neither the GOPs (or ends of GOPs) that hold no target nor, before a target, the frames
no other frame refers to (B-frames), so the frames are exactly those of a full decode for a part
of its cost: a 2-hour video costs a few GOPs per sample, and dense samples (every 0.25 s) cost the
reference frames up to each. FFmpeg decodes on one thread (``DECODE_THREADS``: Ray gives a task
one CPU) and frames are scaled by one reused scaler on one thread.

The cache is keyed by (uri, member, offset, rounded times, pair gap); an entry decoded at a larger ``max_side``
(or at native size) serves any smaller request by downscaling. It holds at most
``NMM_FRAME_CACHE_MB`` (default 256) MiB per process and evicts least recently used entries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.base import FATAL_ERRORS, SkipSample
from operators.errors import media_errors, media_failure
from operators.media_io import MediaUnavailable, open_media, uri_of
from schemas.enums import ReasonCode

__all__ = [
    "STATS",
    "FrameSample",
    "clear_cache",
    "dump_meta",
    "fit_size",
    "load_meta",
    "luma",
    "open_av",
    "plan_times",
    "sample_frames",
    "video_items",
]

log = logging.getLogger(__name__)

#: counters for tests and benchmarks: frames decoded, seeks, cache hits and misses (this process)
STATS: Counter[str] = Counter()

#: never seek for a target closer than this to the last decoded frame (decoding forward is cheaper)
MIN_SEEK_GAP_S = 1.0
#: a sample's pair frame (for motion) is the first frame at least this much later: motion is then
#: measured over the same time span whatever the frame rate (and compression noise does not scale with it)
PAIR_GAP_S = 0.1
#: FFmpeg decoder threads per process. A Ray task is given one CPU, and FFmpeg's own threads would
#: take more (frame threads also decode ahead, past the frames a sample needs, and start over at
#: every seek). ``NMM_VIDEO_THREADS=0`` lets FFmpeg choose (a thread per core).
DECODE_THREADS = int(os.environ.get("NMM_VIDEO_THREADS") or 1)
#: read forward while the next frame needed is at most this far ahead (or twice the longest GOP
#: seen, when more); seek beyond. Reading forward demuxes the packets but decodes only the GOPs
#: that hold a needed frame, so it never costs more than a seek decodes.
SEEK_AHEAD_S = 4.0
#: containers whose packets carry exact presentation times and keyframe flags (PyAV format names)
_EXACT_PTS = frozenset({"mov", "mp4", "matroska", "webm"})
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def video_items(row: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index, media) of the row's readable video items."""
    return [(i, m) for i, m in enumerate(row.get("media") or []) if m.get("modality") == "video" and not m.get("error")]


def load_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The row's ``meta`` JSON as a dict (a non-object value is kept under "meta")."""
    meta = row.get("meta")
    if isinstance(meta, dict):
        return dict(meta)
    try:
        value = json.loads(meta) if meta else {}
    except ValueError:
        value = {"meta": meta}
    return value if isinstance(value, dict) else {"meta": value}


def dump_meta(meta: dict[str, Any]) -> str | None:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str) if meta else None


def plan_times(
    duration: float, *, num: int | None = 8, every_s: float | None = None, max_frames: int = 64
) -> list[float]:
    """Sample times in seconds: ``num`` evenly spaced (centres of ``num`` equal parts), or one every
    ``every_s`` seconds (centres of ``every_s``-long windows); at most ``max_frames``, spread over the
    whole video when that caps them."""
    if duration <= 0:
        return [0.0]
    if every_s:
        wanted = max(1, math.floor(duration / every_s + 1e-9))
        n = min(max_frames, wanted)
        # capped (or a video shorter than every_s): spread the frames over the whole video
        step = every_s if n == wanted and wanted * every_s <= duration + 1e-9 else duration / n
    else:
        n = max(1, min(max_frames, num or 1))
        step = duration / n
    return [round((j + 0.5) * step, 6) for j in range(n)]


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) scaled to fit ``max_side`` (never upscaled), each side at least 1."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (0..255, uint8) of an (..., 3) RGB uint8 array."""
    return np.clip(np.rint(rgb.astype(np.float32) @ _LUMA), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def open_av(media: dict[str, Any], **kwargs: Any) -> Iterator[Any]:
    """An open PyAV input container for a media reference; broken inputs raise SkipSample
    (missing_file, unreadable, corrupt_media) so the row is quarantined with a reason."""
    import av

    try:
        f = open_media(media)
    except MediaUnavailable as e:
        raise media_failure(e) from e
    with f:
        with media_errors(uri_of(media)):  # a file FFmpeg cannot open is not usable media
            container = av.open(f, mode="r", metadata_errors="ignore", **kwargs)
        with container:
            yield container


def video_stream(container: Any, media: dict[str, Any]) -> Any:
    if not container.streams.video:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: no video stream")
    return container.streams.video[0]


def stream_origin(vs: Any) -> float:
    """Presentation time (s) of the stream's start: sample times are relative to it."""
    if vs.start_time is not None and vs.time_base:
        return float(vs.start_time * vs.time_base)
    return 0.0


def stream_fps(vs: Any) -> float | None:
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    return float(rate) if rate else None


def stream_duration(container: Any, vs: Any) -> float | None:
    if vs.duration and vs.time_base:
        return float(vs.duration * vs.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


# ----------------------------------------------------------------------------- the sample


@dataclass
class FrameSample:
    """Frames at sample times: RGB and luma, plus the luma of each one's pair frame (for motion)."""

    times: np.ndarray  # (n,) actual times (s from the stream start) of the frames taken
    rgb: np.ndarray  # (n, h, w, 3) uint8
    luma: np.ndarray  # (n, h, w) uint8
    next_luma: np.ndarray  # (n, h, w) uint8 luma of each pair frame; zeros where there is none
    next_dt: np.ndarray  # (n,) seconds from each frame to its pair frame; nan where there is none
    max_side: int | None  # the bound they were decoded at (None: native size)
    native: bool  # True when the frames were not downscaled: they serve any larger max_side too
    source_size: tuple[int, int]  # (width, height) of the video

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + self.luma.nbytes + self.next_luma.nbytes

    def serves(self, max_side: int | None) -> bool:
        if self.native:
            return True
        return max_side is not None and self.max_side is not None and self.max_side >= max_side

    def _resize(self, arrays: np.ndarray, max_side: int | None) -> np.ndarray:
        from PIL import Image

        h, w = arrays.shape[1:3]
        size = fit_size(w, h, max_side)
        if size == (w, h):
            return arrays
        return np.stack([np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BILINEAR)) for a in arrays])

    def rgb_at(self, max_side: int | None) -> np.ndarray:
        return self._resize(self.rgb, max_side)

    def luma_at(self, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(luma, next_luma) scaled to fit ``max_side`` the same way (so equal frames stay equal)."""
        return self._resize(self.luma, max_side), self._resize(self.next_luma, max_side)


class _LRU:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple, FrameSample] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple, max_side: int | None) -> FrameSample | None:
        entry = self.items.get(key)
        if entry is None or not entry.serves(max_side):
            return None
        self.items.move_to_end(key)
        return entry

    def put(self, key: tuple, entry: FrameSample) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        if entry.nbytes > self.max_bytes:
            return
        self.items[key] = entry
        self.bytes += entry.nbytes
        while self.bytes > self.max_bytes and self.items:
            _, gone = self.items.popitem(last=False)
            self.bytes -= gone.nbytes

    def clear(self) -> None:
        self.items.clear()
        self.bytes = 0


_CACHE = _LRU(int(float(os.environ.get("NMM_FRAME_CACHE_MB", "256")) * 1024 * 1024))


def clear_cache() -> None:
    _CACHE.clear()


def _key(media: dict[str, Any], times: list[float]) -> tuple:
    return (media.get("uri"), media.get("member"), media.get("offset"), tuple(round(t, 3) for t in times))


# ----------------------------------------------------------------------------- decoding what is needed


def configure_decoder(vs: Any, threads: int | None = None) -> None:
    """Decoder threads of a video stream (before its first packet): ``DECODE_THREADS`` by default."""
    n = DECODE_THREADS if threads is None else threads
    ctx = vs.codec_context
    if n > 0:
        ctx.thread_count = n
    ctx.thread_type = "SLICE" if n == 1 else "AUTO"


class _Reader:
    """Frames of one video stream in presentation order, decoding only those the caller may take.

    The caller sets ``need_from`` (seconds from the stream start) before asking for the next frame:
    it will ignore every frame presented earlier. Then

    - packets presented before ``need_from`` are held back, not decoded: when a packet presented
      at or after it comes, they are decoded first (in order); when a keyframe presented before it
      comes, they are dropped (the decoder is drained of what it holds and flushed, as by a seek),
      so a GOP, or the end of one, with no frame needed is demuxed but never decoded;
    - of the packets held back and then decoded, frames that no other frame refers to (B-frames,
      mostly) are skipped (``skip_frame = NONREF`` for packets presented before ``need_from``);
    - when ``need_from`` is far ahead (``SEEK_AHEAD_S``, or twice the longest GOP seen when more), it
      seeks to the keyframe before it instead of reading there.

    From ``need_from`` on it returns exactly the frames a full decode returns; earlier ones may be
    missing. Holding back and skipping trust the container's presentation times and keyframe
    flags, so they are used only where those are exact (MP4/MOV, Matroska/WebM: ``_EXACT_PTS``);
    elsewhere (AVI marks P-frames as keyframes, for one) every packet after a seek is decoded.
    A keyframe presented at or after ``need_from`` never drops what is held (with open GOPs the
    frames just before it may refer to them). ``push_back`` returns a frame to the stream.
    """

    def __init__(self, container: Any, vs: Any, origin: float, frame_dt: float) -> None:
        self.container, self.vs, self.origin, self.frame_dt = container, vs, origin, frame_dt
        self.ctx = vs.codec_context
        tb = vs.time_base
        self._num, self._den = (tb.numerator, tb.denominator) if tb else (0, 1)
        self.need_from = -math.inf
        self.pos = 0.0  # latest presentation time demuxed (or sought to)
        self.max_gop = 0.0  # longest keyframe interval seen
        self.last_t = -math.inf
        self.last: tuple[float, Any] | None = None  # the last frame returned: what there is past the end
        self._packets: Iterator[Any] | None = None
        self._frames: deque[Any] = deque()
        self._held: list[Any] = []  # packets presented before need_from, not sent to the decoder yet
        self._gap = False  # packets were dropped since the decoder's last one: drain and flush it first
        self._last_key: float | None = None
        self._skip = "DEFAULT"
        self._back: tuple[float, Any] | None = None
        self.eof = False
        self.exact = bool(self._num) and not _EXACT_PTS.isdisjoint((container.format.name or "").split(","))

    @property
    def started(self) -> bool:
        return self._packets is not None

    def seek(self, t: float) -> None:
        """Go to the keyframe at or before ``t`` (the decoder is flushed)."""
        t = max(0.0, t)
        tb = self._num / self._den
        offset = int(math.floor((self.origin + t) / tb)) if tb else int(t * 1_000_000)
        self.container.seek(offset, stream=self.vs, backward=True, any_frame=False)
        STATS["seeks"] += 1
        self._packets = self.container.demux(self.vs)
        self._frames.clear()
        self._held, self._gap, self._back, self._last_key, self.eof = [], False, None, None, False
        self.pos = t

    def _seconds(self, pts: int | None) -> float | None:
        """Seconds from the stream start, computed as PyAV's ``Frame.time`` is."""
        return float(pts) * self._num / self._den - self.origin if pts is not None and self._num else None

    def _send(self, packet: Any, *, every_frame: bool = False) -> None:
        if self._gap:  # what the decoder holds is returned, then it starts afresh (as after a seek)
            self._frames.extend(self.vs.decode(None))
            self.ctx.flush_buffers()
            self._gap = False
        t = self._seconds(packet.pts) if self.exact and packet.size and not every_frame else None
        skip = "NONREF" if t is not None and t < self.need_from - 1e-6 else "DEFAULT"
        if skip != self._skip:
            self.ctx.skip_frame = self._skip = skip
        self._frames.extend(self.vs.decode(packet))

    def _release(self, *, every_frame: bool = False) -> None:
        held, self._held = self._held, []
        for packet in held:
            self._send(packet, every_frame=every_frame)

    def _pump(self) -> None:
        """Demux one packet; decode it, hold it back or drop what is held."""
        if self._packets is None:
            self._packets = self.container.demux(self.vs)
        if self.need_from - self.pos > max(SEEK_AHEAD_S, 2 * self.max_gop):
            self.seek(self.need_from)
        packet = next(self._packets, None)
        if packet is None or packet.size == 0:  # the end: what is held, then what the decoder holds
            self._release(every_frame=True)  # every frame: the last one stands for targets past the end
            if packet is not None:
                self._send(packet)  # PyAV's empty end packet drains the decoder
            else:
                self._frames.extend(self.vs.decode(None))
            self.eof = True
            return
        t = self._seconds(packet.pts)
        if t is not None and t > self.pos:
            self.pos = t
        if not self.exact or t is None:
            self._release()
            self._send(packet)
            return
        before = t < self.need_from - 1e-6
        if packet.is_keyframe:
            if self._last_key is not None and t > self._last_key:
                self.max_gop = max(self.max_gop, t - self._last_key)
            self._last_key = t
            if before and self._held:  # what is held leads to no frame needed: dropped
                STATS["packets_dropped"] += len(self._held)
                self._held, self._gap = [], True
        if before:
            self._held.append(packet)
            return
        self._release()
        self._send(packet)

    def next(self) -> tuple[float, Any] | None:
        if self._back is not None:
            item, self._back = self._back, None
            return item
        while not self._frames:
            if self.eof:
                return None
            self._pump()
        frame = self._frames.popleft()
        STATS["decoded"] += 1
        t = self._seconds(frame.pts)
        t = t if t is not None else self.last_t + self.frame_dt
        self.last_t = t
        self.last = (t, frame)
        return t, frame

    def push_back(self, item: tuple[float, Any]) -> None:
        self._back = item


def frame_converter(width: int, height: int, fmt: str = "rgb24") -> Any:
    """frame -> (height, width[, 3]) uint8 array, with one scaler kept for all frames and one thread
    (PyAV's default makes a scaler per frame with a thread per core)."""
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()

    def convert(frame: Any) -> np.ndarray:
        return scaler.reformat(frame, width=width, height=height, format=fmt, threads=1).to_ndarray()

    return convert


def decode_at(
    container: Any,
    vs: Any,
    times: list[float],
    convert: Any,
    pair_gap_s: float | None = None,
    *,
    stop_at_end: bool = False,
) -> tuple[list, list, list, list]:
    """For each target time (sorted, seconds from the stream start): the first frame presented at
    or after half a frame before it, as (time, convert(frame)), and when ``pair_gap_s`` is set its
    pair frame, the first one at least ``pair_gap_s`` later, as (seconds after it, convert(pair))
    (nan and None where there is none). Past the end the last frame stands for a target, or, with
    ``stop_at_end``, the lists stop there. Raises SkipSample when the stream has no decodable frame."""
    fps = stream_fps(vs) or 25.0
    frame_dt = 1.0 / fps
    cur = _Reader(container, vs, stream_origin(vs), frame_dt)
    pos = -math.inf
    taken_t, taken, next_dt, nexts = [], [], [], []
    for target in times:
        need = target - frame_dt / 2
        if cur.started and target < pos - frame_dt / 2:  # already read past it: go back
            cur.seek(need)
        cur.need_from = need
        chosen = None
        while (item := cur.next()) is not None:
            if item[0] >= need:
                chosen = item
                break
        if chosen is None:  # past the end: the last frame there is
            if stop_at_end:
                break
            chosen = cur.last
            if chosen is None:
                raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"no decodable frame near {target:.3f}s")
        pos = chosen[0]
        taken_t.append(chosen[0])
        taken.append(convert(chosen[1]))
        if pair_gap_s is None:
            continue
        # the pair frame for motion: the first one at least pair_gap_s after the chosen frame
        cur.need_from = chosen[0] + pair_gap_s - frame_dt / 2
        after = cur.next()
        while after is not None and after[0] < cur.need_from:
            after = cur.next()
        if after is not None:
            cur.push_back(after)
            pos = after[0]
        if after is not None and after[0] > chosen[0]:
            next_dt.append(after[0] - chosen[0])
            nexts.append(convert(after[1]))
        else:
            next_dt.append(math.nan)
            nexts.append(None)
    return taken_t, taken, next_dt, nexts


def sample_frames(
    media: dict[str, Any],
    times: list[float],
    *,
    max_side: int | None,
    pair_gap_s: float = PAIR_GAP_S,
    threads: int | None = None,
) -> FrameSample:
    """Frames of ``media`` nearest ``times`` (seconds from the start), scaled to fit ``max_side``,
    each with the luma of its pair frame: the first frame at least ``pair_gap_s`` later.

    Served from the per-process cache when an entry for the same times and gap was decoded at least
    as large; otherwise decoded (``decode_at``: only the GOPs that hold a sample, seeking past the
    rest; ``threads`` decoder threads, ``DECODE_THREADS`` by default). Raises SkipSample for
    missing or corrupt media.
    """
    key = (*_key(media, times), round(pair_gap_s, 4))
    hit = _CACHE.get(key, max_side)
    if hit is not None:
        STATS["hits"] += 1
        return hit
    STATS["misses"] += 1
    order = sorted(range(len(times)), key=lambda i: times[i])
    with open_av(media) as container:
        vs = video_stream(container, media)
        ctx = vs.codec_context
        configure_decoder(vs, threads)
        if not ctx.width or not ctx.height:
            raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: video stream has no frame size")
        size = fit_size(ctx.width, ctx.height, max_side)
        try:
            convert = frame_converter(*size)
            t_, rgb_, dt_, next_ = decode_at(container, vs, [times[i] for i in order], convert, pair_gap_s)
        except (SkipSample, *FATAL_ERRORS):
            raise
        except Exception as e:  # noqa: BLE001 - a decoder error means the bytes are not usable
            raise media_failure(e, uri_of(media)) from e
    n = len(times)
    rgb = np.zeros((n, size[1], size[0], 3), np.uint8)
    nxt = np.zeros((n, size[1], size[0]), np.uint8)
    t_out = np.zeros(n)
    dt_out = np.full(n, math.nan)
    for k, i in enumerate(order):
        rgb[i], t_out[i], dt_out[i] = rgb_[k], t_[k], dt_[k]
        if next_[k] is not None:
            nxt[i] = luma(next_[k])
    sample = FrameSample(
        times=t_out,
        rgb=rgb,
        luma=luma(rgb),
        next_luma=nxt,
        next_dt=dt_out,
        max_side=max_side,
        native=size == (ctx.width, ctx.height),
        source_size=(ctx.width, ctx.height),
    )
    _CACHE.put(key, sample)
    return sample


def duration_of(media: dict[str, Any]) -> float:
    """The video's duration: the probed ``duration_s``, else read from the container header."""
    if media.get("duration_s"):
        return float(media["duration_s"])
    with open_av(media) as container:
        vs = video_stream(container, media)
        d = stream_duration(container, vs)
    if not d:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: unknown duration")
    return d
