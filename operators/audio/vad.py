"""``audio_segment``: cut long recordings into utterance-length segments by voice activity.

Two streaming passes over the first audio item of a row, so memory is O(duration / 30 ms):

1. **Detect.** The audio is decoded to 16 kHz mono and cut into 30 ms frames. ``method: webrtc``
   (default) asks the WebRTC VAD (``webrtcvad-wheels``, a GMM speech model in C: robust to
   stationary noise, tiny, no model download, ~100x real time per core) whether each frame is
   speech; ``aggressiveness`` 0-3 trades recall for precision. ``method: energy`` needs no
   dependency: a frame is speech when its level is ``energy_margin_db`` above the recording's
   noise floor (the 10th percentile of frame levels) and above ``silence_db``; it is exact on
   clean or synthetic audio but fooled by loud non-speech (music, hum): use it for such data or
   where the WebRTC wheel is unavailable. With both, a frame below ``silence_db`` is never speech
   (this also removes the WebRTC VAD's false alarms while it adapts during the first ~100 ms).
2. **Segment.** Speech runs closer than ``merge_gap_s`` become one utterance; a run longer than
   ``max_s`` is cut at its quietest frame between ``max_s / 2`` and ``max_s`` (never leaving a
   piece shorter than ``min_s``); utterances shorter than ``min_s`` are dropped (clicks, breaths);
   each segment is padded by ``padding_s`` on both sides, without overlapping its neighbours.
3. **Write.** A second decoding pass (at ``sample_rate`` / ``channels``, default: the source's)
   streams each segment into its own FLAC/WAV file in the artifacts folder
   (``<row id>-seg<NNN>.flac``, temporary name then rename).

Each segment becomes a child row (``derive(row, suffix="segNNN")``): its media is the new file
(with its own sha256, so exact dedup treats segments as distinct), ``scores`` carry
``segment_start_s`` / ``segment_end_s`` (seconds in the parent), ``segment_index``, the child's
``duration_s`` and ``speech_ratio``, probe's ``text_chars`` / ``text_words`` recounted on the
child's own text, and, with ``rescore: true``, the ``audio_quality`` numbers measured on the
segment itself (otherwise the parent's values, which describe the whole recording, are
inherited; ``rescore`` uses audio_quality's default thresholds). ``meta["segment"]`` repeats the span and the parent's audio uri. The parent is
marked ``split`` by the engine (it stays in the ledger, in OUT/rejected).

Transcripts. A user expects every (segment, transcript) pair to be *aligned*: a segment must never
carry text it does not contain. So:

- A **timed** transcript (``meta["transcript_segments"]`` or Whisper-style ``meta["segments"]``:
  a list of ``{start, end, text}``) is distributed: a child gets the pieces whose midpoint falls in
  its span, joined by spaces, and its own ``meta["transcript_segments"]`` in child time.
- An **untimed** transcript stays on the parent only (``untimed_transcript: parent``, default):
  children get no transcript (layout ``audio``) and ``meta["transcript_note"]`` says where it is.
  With ``untimed_transcript: keep_whole`` a transcribed recording is not split at all, so the ASR
  pair survives (filter on ``duration_s`` to bound its length).

Rows kept whole (``expand`` returns None): recordings no longer than ``max_s`` (``keep_short``;
with ``keep_short: false`` only those with exactly one segment), transcribed recordings under
``keep_whole``, and recordings with no speech at all (``num_segments`` = 0, ``speech_ratio`` = 0:
a filter decides, e.g. ``{field: num_segments, min: 1}``). Kept rows get ``num_segments`` and
``speech_ratio`` too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from operators.audio.quality import AudioStats, audio_item
from operators.audio.transcode import (
    FORMATS,
    AudioDecoder,
    AudioWriter,
    load_meta,
    output_folder,
    store_meta,
    written_media,
)
from operators.base import ExpandOperator, Params, SkipSample
from operators.media_io import uri_of
from operators.probe import text_stats
from operators.registry import register_operator
from schemas.enums import Layout, Modality, ReasonCode
from schemas.record import derive

__all__ = ["AudioSegment", "AudioSegmentParams", "Span", "detect_speech", "plan_segments"]

log = logging.getLogger(__name__)

VAD_RATE = 16000
FRAME_S = 0.03
_FRAME = round(VAD_RATE * FRAME_S)
#: text that describes the whole recording: a segment does not inherit it
_WHOLE_RECORDING_FIELDS = ("caption", "alt_text", "instruction", "response", "text", "conversation", "interleaved")


@dataclass
class Span:
    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


class AudioSegmentParams(Params):
    method: Literal["webrtc", "energy"] = Field(
        "webrtc", description="voice activity detector: webrtc (WebRTC GMM VAD) or energy (level above the noise floor)"
    )
    aggressiveness: int = Field(2, ge=0, le=3, description="webrtc: 0 keeps most speech, 3 rejects most non-speech")
    energy_margin_db: float = Field(12.0, gt=0, description="energy: a frame is speech this many dB above the noise floor")
    silence_db: float = Field(-50.0, le=0, description="frames below this level (dBFS) are never speech (both methods)")
    min_s: float = Field(1.0, ge=0, description="segments shorter than this (before padding) are dropped")
    max_s: float = Field(20.0, gt=0, description="longer speech is cut at its quietest frame into pieces of at most this")
    merge_gap_s: float = Field(0.5, ge=0, description="speech runs separated by less than this are one segment")
    padding_s: float = Field(0.2, ge=0, description="seconds of context added before and after each segment")
    keep_short: bool = Field(
        True, description="keep recordings no longer than max_s whole; false: only those with exactly one segment"
    )
    untimed_transcript: Literal["parent", "keep_whole"] = Field(
        "parent",
        description="a transcript without timings: parent (children get none; it stays on the split parent) "
        "or keep_whole (do not split transcribed recordings)",
    )
    format: Literal["flac", "wav"] = Field("flac", description="segment file format")
    sample_rate: int | None = Field(None, ge=8000, le=192000, description="segment sample rate; null keeps the source's")
    channels: int | None = Field(None, ge=1, le=8, description="segment channels; null keeps the source's")
    rescore: bool = Field(True, description="measure audio_quality scores on each segment (else inherit the parent's)")
    from_video: bool = Field(False, description="segment a video's audio stream when the row has no audio item")
    output_dir: str | None = Field(None, description="write files here instead of the run's OUT/artifacts/<stage> folder")

    @model_validator(mode="after")
    def _lengths(self) -> AudioSegmentParams:
        if self.max_s < 2 * self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least 2 * min_s ({self.min_s}) so long speech can be cut")
        return self


# ----------------------------------------------------------------------------- pass 1: detection


def detect_speech(media: dict[str, Any], p: AudioSegmentParams) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-30 ms-frame speech flags and levels (dBFS) of ``media``, and its duration in seconds."""
    vad = None
    if p.method == "webrtc":
        import webrtcvad

        vad = webrtcvad.Vad(p.aggressiveness)
    flags: list[bool] = []
    levels: list[np.ndarray] = []
    rest = np.zeros(0, np.float32)
    with AudioDecoder(media, sample_rate=VAD_RATE, channels=1) as dec:
        for chunk in dec:
            buf = np.concatenate([rest, chunk[0]]) if rest.size else chunk[0]
            full = buf.size // _FRAME * _FRAME
            frames = buf[:full].reshape(-1, _FRAME)
            rest = buf[full:].copy()
            if not full:
                continue
            power = (frames.astype(np.float64) ** 2).mean(axis=1)
            levels.append(10 * np.log10(np.maximum(power, 1e-10)))
            if vad is not None:
                pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2")
                flags.extend(vad.is_speech(f.tobytes(), VAD_RATE) for f in pcm)
        duration = dec.samples / VAD_RATE
    if dec.samples == 0:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: no decodable audio samples")
    level = np.concatenate(levels) if levels else np.zeros(0)
    if vad is None:
        floor = float(np.percentile(level, 10)) if level.size else 0.0
        speech = level > floor + p.energy_margin_db
    else:
        speech = np.asarray(flags, dtype=bool)
    speech &= level > p.silence_db
    return speech, level, duration


# ----------------------------------------------------------------------------- segmentation


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame index pairs of the True runs."""
    if not flags.size:
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _cut_long(start: int, end: int, level: np.ndarray, max_f: int, min_f: int) -> list[tuple[int, int]]:
    """Cut the frame range [start, end) into pieces of at most ``max_f`` frames at quiet frames."""
    pieces = []
    while end - start > max_f:
        lo = start + max(min_f, max_f // 2)
        hi = min(start + max_f, end - min_f)
        cut = lo + int(np.argmin(level[lo : hi + 1])) if hi >= lo else start + max_f
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def plan_segments(speech: np.ndarray, level: np.ndarray, duration: float, p: AudioSegmentParams) -> list[Span]:
    """Frame flags -> padded, non-overlapping utterance spans in seconds."""
    gap_f = round(p.merge_gap_s / FRAME_S)
    merged: list[list[int]] = []
    for s, e in _runs(speech):
        if merged and s - merged[-1][1] < gap_f:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    max_f = max(1, int(p.max_s / FRAME_S))
    min_f = round(p.min_s / FRAME_S)
    core: list[tuple[int, int]] = []
    for s, e in merged:
        for a, b in _cut_long(s, e, level, max_f, min_f):
            if b - a >= max(1, min_f):
                core.append((a, b))
    spans = [Span(a * FRAME_S, min(duration, b * FRAME_S)) for a, b in core]
    out: list[Span] = []
    for i, sp in enumerate(spans):
        lo = 0.0 if i == 0 else (spans[i - 1].end + sp.start) / 2
        hi = duration if i == len(spans) - 1 else (sp.end + spans[i + 1].start) / 2
        out.append(Span(max(lo, sp.start - p.padding_s), min(hi, sp.end + p.padding_s)))
    return out


# ----------------------------------------------------------------------------- transcripts


def _timed_pieces(meta: dict[str, Any]) -> list[dict[str, Any]] | None:
    pieces = meta.get("transcript_segments") or meta.get("segments")
    if not isinstance(pieces, list) or not pieces:
        return None
    out = []
    for x in pieces:
        if not isinstance(x, dict) or not isinstance(x.get("text"), str):
            return None
        try:
            out.append({"start": float(x["start"]), "end": float(x["end"]), "text": x["text"]})
        except (KeyError, TypeError, ValueError):
            return None
    return out


# ----------------------------------------------------------------------------- the operator


@register_operator
class AudioSegment(ExpandOperator[AudioSegmentParams]):
    """Split long recordings into utterance-length child rows by voice activity (WebRTC or energy VAD)."""

    name: ClassVar[str] = "audio_segment"
    default_batch_size: ClassVar[int] = 4
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"), ("webrtcvad", "webrtcvad-wheels>=2.0.10"))
    writes: ClassVar[dict[str, str]] = {
        "num_segments": "speech segments found (on the parent, or on a row kept whole)",
        "speech_ratio": "fraction of 30 ms frames detected as speech (of the recording, or of the segment)",
        "segment_start_s": "child: start of the segment in the parent recording, seconds (padding included)",
        "segment_end_s": "child: end of the segment in the parent recording, seconds",
        "segment_index": "child: 0-based position of the segment in the parent",
        "duration_s": "child: seconds of audio in the segment file",
    }

    @classmethod
    def check_requirements(cls) -> None:
        import importlib.util

        from operators.base import OperatorError

        if importlib.util.find_spec("av") is None:
            raise OperatorError("Please install av>=12 to use 'audio_segment' (pip install 'av>=12')")

    def validate_setup(self) -> None:
        if self.params.method == "webrtc":
            import importlib.util

            from operators.base import OperatorError

            if importlib.util.find_spec("webrtcvad") is None:
                raise OperatorError(
                    "Please install webrtcvad-wheels to use 'audio_segment' with method webrtc "
                    "(pip install 'webrtcvad-wheels>=2.0.10'), or set method: energy"
                )

    def expand(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        p = self.params
        media = audio_item(row, p.from_video)
        if media is None:
            return None
        meta = load_meta(row)
        timed = _timed_pieces(meta)
        speech, level, duration = detect_speech(media, p)
        spans = plan_segments(speech, level, duration, p)
        ratio = float(speech.mean()) if speech.size else 0.0
        row["scores"] = {**(row.get("scores") or {}), "num_segments": float(len(spans)), "speech_ratio": ratio}
        if not spans:
            return None
        if duration <= p.max_s and (p.keep_short or len(spans) == 1):
            return None
        if row.get("transcript") and timed is None and p.untimed_transcript == "keep_whole":
            meta["transcript_note"] = "not split: the transcript has no timings (untimed_transcript: keep_whole)"
            store_meta(row, meta)
            return None
        return self._write_children(row, media, meta, timed, spans, speech)

    def _write_children(
        self,
        row: dict[str, Any],
        media: dict[str, Any],
        meta: dict[str, Any],
        timed: list[dict[str, Any]] | None,
        spans: list[Span],
        speech: np.ndarray,
    ) -> list[dict[str, Any]]:
        p = self.params
        folder = output_folder(self, p.output_dir)
        suffix = FORMATS[p.format][1]
        children: list[dict[str, Any]] = []
        with AudioDecoder(media, sample_rate=p.sample_rate, channels=p.channels) as dec:
            rate = dec.sample_rate
            bounds = [(round(s.start * rate), round(s.end * rate)) for s in spans]
            j, pos = 0, 0
            writer: AudioWriter | None = None
            stats: AudioStats | None = None
            try:
                for chunk in dec:
                    end = pos + chunk.shape[1]
                    while j < len(bounds) and bounds[j][0] < end:
                        a, b = max(bounds[j][0], pos), min(bounds[j][1], end)
                        if writer is None:
                            path = folder / f"{row['id']}-seg{j:03d}.{suffix}"
                            writer = AudioWriter(path, fmt=p.format, sample_rate=rate, channels=dec.channels)
                            stats = AudioStats(rate, dec.channels) if p.rescore else None
                        if b > a:
                            piece = chunk[:, a - pos : b - pos]
                            writer.write(piece)
                            if stats is not None:
                                stats.feed(piece)
                        if bounds[j][1] > end:
                            break
                        children.append(self._child(row, meta, timed, spans[j], j, writer, stats, speech, media))
                        writer, stats, j = None, None, j + 1
                    pos = end
                if writer is not None:  # the file ended inside the last segment
                    children.append(self._child(row, meta, timed, spans[j], j, writer, stats, speech, media))
                    writer = None
            finally:
                if writer is not None:
                    writer.abort()
        return children

    def _child(
        self,
        row: dict[str, Any],
        meta: dict[str, Any],
        timed: list[dict[str, Any]] | None,
        span: Span,
        index: int,
        writer: AudioWriter,
        stats: AudioStats | None,
        speech: np.ndarray,
        source: dict[str, Any],
    ) -> dict[str, Any]:
        path = writer.close()
        item = written_media(path, writer, role=source.get("role") or "input")
        start = span.start
        end = start + item["duration_s"]
        child_meta = {k: v for k, v in meta.items() if k not in ("transcript_segments", "segments")}
        child_meta["segment"] = {"index": index, "start_s": round(start, 4), "end_s": round(end, 4),
                                 "parent_uri": uri_of(source)}  # fmt: skip
        transcript: str | None = None
        if timed is not None:
            mine = [x for x in timed if start <= (x["start"] + x["end"]) / 2 < end]
            transcript = " ".join(x["text"].strip() for x in mine if x["text"].strip()) or None
            child_meta["transcript_segments"] = [
                {"start": round(max(0.0, x["start"] - start), 4), "end": round(min(end, x["end"]) - start, 4), "text": x["text"]}
                for x in mine
            ]
        elif row.get("transcript"):
            child_meta["transcript_note"] = (
                f"the parent's transcript has no timings: it stays on the parent row {row['id']} (status split)"
            )
        dropped = [k for k in _WHOLE_RECORDING_FIELDS if row.get(k)]
        if dropped:
            child_meta["parent_text_fields"] = dropped
        lo, hi = int(start / FRAME_S), max(int(start / FRAME_S) + 1, int(np.ceil(end / FRAME_S)))
        window = speech[lo:hi]
        scores = {k: v for k, v in (row.get("scores") or {}).items() if k != "num_segments"}
        if stats is not None:
            scores.update(stats.result())
        scores.update(segment_start_s=start, segment_end_s=end, segment_index=float(index),
                      duration_s=item["duration_s"], speech_ratio=float(window.mean()) if window.size else 0.0)  # fmt: skip
        child = derive(row, suffix=f"seg{index:03d}", media=[item], scores=scores,
                       modalities=[Modality.AUDIO.value, Modality.TEXT.value] if transcript else [Modality.AUDIO.value],
                       layout=Layout.AUDIO_TEXT.value if transcript else Layout.AUDIO.value,
                       **dict.fromkeys(_WHOLE_RECORDING_FIELDS), transcript=transcript)  # fmt: skip
        if "text_chars" in scores:  # probe's text numbers describe the parent's texts: recount
            child["scores"].update(text_stats(child))
        store_meta(child, child_meta)
        return child
