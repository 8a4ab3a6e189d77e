"""``video_quality``: motion, black and blank frames, and audio loudness of each video.

Frames come from the shared frame cache (``operators.video.decode``) at the same sample times as
``video_frames`` by default (``num_samples`` evenly spaced), so when both stages run in one worker
the video is decoded once. Each sample is the frame nearest its time plus its pair frame, the first
frame at least ``motion_gap_s`` later, both as luma (BT.601, 0..255) scaled to fit ``analysis_side``:

- ``motion_score``: mean over samples of mean(|pair - frame|) / (seconds between them), i.e. luma
  levels (0..255) per second at the analysis size, measured over ~``motion_gap_s`` whatever the
  frame rate; a still video scores ~0 (compression noise: 1 to 4), a slow pan tens, fast motion hundreds;
- ``black_frame_ratio``: fraction of sampled frames whose mean luma is below ``black_luma``;
- ``blank_frame_ratio``: fraction of sampled frames whose luma standard deviation is below
  ``blank_std`` (one flat colour, black included); ``blank`` is 1.0 when it reaches ``blank_ratio``;
- ``static``: 1.0 when ``motion_score`` is below ``static_motion``.

The audio track (if any) is decoded for at most ``max_audio_s`` seconds from the start; its RMS
over all channels gives ``audio_loudness_dbfs`` = 20*log10(rms), where a full-scale square wave is
0 dBFS (a full-scale sine is -3.01), floored at ``silence_floor_dbfs``. Rows whose videos have no
audio get ``has_audio`` 0.0 and no loudness (filter with ``missing: pass`` to keep them).
A row with several videos gets the worst value over them (least motion, most black/blank frames) and
the loudest audio.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from operators.base import FATAL_ERRORS, Params, RowOperator, SkipSample
from operators.media_io import uri_of
from operators.registry import register_operator
from operators.video.decode import PAIR_GAP_S, duration_of, open_av, plan_times, sample_frames, video_items
from schemas.enums import ReasonCode

__all__ = ["VideoQuality", "VideoQualityParams", "audio_rms"]


class VideoQualityParams(Params):
    num_samples: int = Field(8, ge=1, le=256, description="sample points per video, evenly spaced (as video_frames)")
    motion_gap_s: float = Field(
        PAIR_GAP_S,
        gt=0,
        le=2,
        description="motion is measured between frames this far apart (keep the default to "
        "share frames with video_frames)",
    )
    analysis_side: int = Field(64, ge=8, le=1024, description="longer side of the luma frames the numbers are taken on")
    black_luma: float = Field(16.0, ge=0, le=255, description="a frame whose mean luma (0..255) is below this is black")
    blank_std: float = Field(3.0, ge=0, description="a frame whose luma standard deviation is below this is blank")
    blank_ratio: float = Field(
        0.9, gt=0, le=1, description="blank is 1.0 when at least this fraction of frames is blank"
    )
    static_motion: float = Field(5.0, ge=0, description="static is 1.0 when motion_score (levels/s) is below this")
    max_audio_s: float = Field(60.0, gt=0, description="decode at most this many seconds of audio from the start")
    silence_floor_dbfs: float = Field(-100.0, le=0, description="loudness of digital silence (and the lowest value)")


def audio_rms(media: dict[str, Any], max_s: float) -> float | None:
    """RMS (full scale = 1.0) of the first ``max_s`` seconds of the first audio track; None if none."""
    import av

    with open_av(media) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1  # one CPU per worker, as for video
        rate = stream.sample_rate or 0
        to_float = av.AudioResampler(format="fltp")  # passes float planar audio (AAC, Opus, ...) through
        limit = int(max_s * rate) if rate else None
        total, sumsq = 0, 0.0
        block: list[np.ndarray] = []  # frames of one channel count, summed together (numpy per block, not per frame)

        def add_block() -> float:
            arr = np.concatenate(block, axis=1).astype(np.float64)
            block.clear()
            return float(np.einsum("ij,ij->", arr, arr)) / max(1, arr.shape[0])

        try:
            for frame in container.decode(stream):
                for f in to_float.resample(frame):
                    arr = f.to_ndarray()
                    if limit is not None:
                        arr = arr[:, : max(0, limit - total)]
                    if block and block[0].shape[0] != arr.shape[0]:
                        sumsq += add_block()
                    block.append(arr)
                    total += arr.shape[1]
                    if len(block) >= 64:
                        sumsq += add_block()
                if limit is not None and total >= limit:
                    break
            if block:
                sumsq += add_block()
        except (SkipSample, *FATAL_ERRORS):
            raise
        except Exception as e:  # noqa: BLE001 - a decoder error means the bytes are not usable
            raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: audio: {type(e).__name__}: {e}") from e
    if total == 0:
        return None
    return math.sqrt(sumsq / total)


@register_operator
class VideoQuality(RowOperator[VideoQualityParams]):
    """Motion, black/blank frames and audio loudness of videos, on sampled low-res frames."""

    name: ClassVar[str] = "video_quality"
    default_batch_size: ClassVar[int] = 16
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"), ("PIL", "pillow>=10"))
    writes: ClassVar[dict[str, str]] = {
        "motion_score": "mean |luma change| between each sampled frame and the frame motion_gap_s later, in luma "
        "levels (0..255) per second at analysis_side; ~0 for a still video; least over videos",
        "black_frame_ratio": "fraction of sampled frames whose mean luma is below black_luma; most over videos",
        "blank_frame_ratio": "fraction of sampled frames whose luma std is below blank_std (flat); most over videos",
        "blank": "1.0 when blank_frame_ratio >= blank_ratio, else 0.0",
        "static": "1.0 when motion_score < static_motion, else 0.0",
        "has_audio": "1.0 when a video has a decodable audio track, else 0.0",
        "audio_loudness_dbfs": "RMS level of the first max_audio_s of audio, 20*log10(rms) with full scale = 1.0, "
        "floored at silence_floor_dbfs; loudest over videos; absent without audio",
    }

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        videos = video_items(row)
        if not videos:
            return
        motion, black, blank, loud = [], [], [], []
        has_audio = False
        for _, media in videos:
            times = plan_times(duration_of(media), num=p.num_samples)
            sample = sample_frames(media, times, max_side=p.analysis_side, pair_gap_s=p.motion_gap_s)
            lum, nxt = sample.luma_at(p.analysis_side)
            lum32 = lum.astype(np.float32)
            means = lum32.mean(axis=(1, 2))
            stds = lum32.std(axis=(1, 2))
            black.append(float((means < p.black_luma).mean()))
            blank.append(float((stds < p.blank_std).mean()))
            ok = np.isfinite(sample.next_dt) & (sample.next_dt > 0)
            if ok.any():
                diffs = np.abs(nxt[ok].astype(np.float32) - lum32[ok]).mean(axis=(1, 2))
                motion.append(float((diffs / sample.next_dt[ok]).mean()))
            rms = audio_rms(media, p.max_audio_s)
            if rms is not None:
                has_audio = True
                loud.append(max(p.silence_floor_dbfs, 20 * math.log10(rms)) if rms > 0 else p.silence_floor_dbfs)
        scores = dict(row.get("scores") or {})
        scores["black_frame_ratio"] = max(black)
        scores["blank_frame_ratio"] = max(blank)
        scores["blank"] = 1.0 if max(blank) >= p.blank_ratio else 0.0
        if motion:
            scores["motion_score"] = min(motion)
            scores["static"] = 1.0 if min(motion) < p.static_motion else 0.0
        scores["has_audio"] = 1.0 if has_audio else 0.0
        if loud:
            scores["audio_loudness_dbfs"] = max(loud)
        row["scores"] = scores
