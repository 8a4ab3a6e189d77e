"""``dedup_video``: near-duplicate videos by a keyframe-hash signature.

Signature: the pHash (64 bits) of frames sampled every ``step_s`` seconds from the start (at most
``max_frames``; a longer video spreads them evenly over its length: 96 frames every 0.25 s cover
24 s by default), measured from the stream's start. Frames come from the video operators'
decoder (``operators.video.decode.decode_at``: one thread; it reads forward or seeks, and
decodes neither the GOPs that hold no instant nor, before an instant, the frames no other frame
refers to, so the frames are those of a full decode at about the cost of its reference frames),
and are scaled to 64x64 before hashing, so resizing does not change them and re-encoding changes
a few bits.

Alignment: a trimmed copy (the first second cut) samples different instants, so frames are
compared as SETS with a tolerance, not position by position: a frame of one video matches when
some frame of the other is within ``frame_threshold`` bits. A trim by a whole number of steps
lines the samples up exactly; any other trim leaves them up to step_s / 2 apart, which pHash
tolerates unless the picture moves fast (benchmarks/bench_dedup_quality.py measures trims of
1, 0.5 and 0.25 s on clips that pan a third of the frame per second: with a 0.5 s step the
0.25 s trim is missed entirely, with the default 0.25 s step every trim is found, for 1.8x the
signing time on those small clips; decoding, the same for both, dominates on real footage).
Past ``max_frames * step_s`` the spread step grows with the length, and trims of long,
fast-moving videos can be missed; averaging frames over each step was tried and did not help.
The score is the fraction of the shorter video's frames that match (``min_match``); the shorter
must also last at least ``min_duration_ratio`` of the longer, so a short clip is not a duplicate
of a long compilation that quotes it.

Candidates: each frame hash is cut into ``frame_bands`` bands (by pigeonhole a frame within
frame_bands-1 bits of another shares a band); the (band index, value) keys of all frames,
deduplicated and capped at ``max_keys`` by a consistent bottom-k sample, are the row's LSH keys.
Near-constant frames (fewer than 5 or more than 59 bits set: black, white, flat colour) give no
keys, so the many videos that fade from black do not all become candidates of each other.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from operators.base import FATAL_ERRORS
from operators.dedup.image_phash import band_keys
from operators.dedup.near import NearDupOperator, NearDupParams, Signatures, first_media
from operators.errors import SkipSample, media_failure
from operators.registry import register_operator
from schemas.hashing import popcount64
from schemas.record import from_table

__all__ = ["VideoDedup", "VideoDedupParams", "video_frame_hashes"]

_SIDE = 64


class VideoDedupParams(NearDupParams):
    step_s: float = Field(0.25, gt=0, description="seconds between sampled frames (a trimmed copy is off by up to half of it)")
    max_frames: int = Field(96, ge=2, le=256, description="most frames sampled per video (spread evenly past that)")
    frame_threshold: int = Field(10, ge=0, le=64, description="largest pHash distance (of 64 bits) of two matching frames")
    min_match: float = Field(0.8, gt=0, le=1, description="smallest fraction of the shorter video's frames that must match")
    min_duration_ratio: float = Field(0.5, ge=0, le=1, description="shorter duration / longer duration must reach this")
    frame_bands: int = Field(2, ge=1, le=16, description="LSH bands per frame hash (a frame pair within frame_bands-1 bits shares one)")


def _times(duration: float | None, step: float, max_frames: int) -> np.ndarray:
    if not duration or duration <= 0:
        return np.arange(max_frames) * step  # unknown length: sample until the stream ends
    n = max(1, math.ceil(duration / step - 1e-9))  # instants 0, step, 2 step, ... before the end
    if n <= max_frames:
        return np.arange(n) * step
    return np.linspace(0, duration, max_frames, endpoint=False)


def video_frame_hashes(media: dict[str, Any], step_s: float = 1.0, max_frames: int = 32) -> tuple[np.ndarray, np.ndarray, float]:
    """(pHash per sampled frame as uint64, its time in seconds from the stream start, duration).

    Frames come from the video operators' decoder (``operators.video.decode.decode_at``): one
    thread, only the GOPs that hold a sampled instant, no unreferenced frame before one, a seek
    where the next instant is far ahead; each is the first frame presented at or after half a
    frame before its instant, scaled to 64x64 RGB by one reused scaler."""
    import imagehash
    from PIL import Image

    from operators.video.decode import (
        configure_decoder,
        decode_at,
        frame_converter,
        open_av,
        stream_duration,
        video_stream,
    )

    with open_av(media) as c:
        vs = video_stream(c, media)
        configure_decoder(vs)
        duration = media.get("duration_s") or stream_duration(c, vs)
        to_rgb = frame_converter(_SIDE, _SIDE)

        def phash(frame: Any) -> np.uint64:
            bits = np.asarray(imagehash.phash(Image.fromarray(to_rgb(frame))).hash, dtype=bool).reshape(-1)
            return np.packbits(bits).view(">u8")[0].astype(np.uint64)

        times, hashes, _, _ = decode_at(c, vs, _times(duration, step_s, max_frames).tolist(), phash, stop_at_end=True)
    if not hashes:
        raise ValueError("no decodable video frame")
    return np.array(hashes, dtype=np.uint64), np.array(times), float(duration or times[-1])


@register_operator
class VideoDedup(NearDupOperator[VideoDedupParams]):
    """Near-duplicate videos: pHashes of frames sampled by seeking, matched as sets with a tolerance."""

    name = "dedup_video"
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("imagehash", "imagehash>=4.3"), ("av", "av>=12"), ("scipy", "scipy>=1.10"))
    writes = {"video_dup_group_size": "size of the row's near-duplicate video group (1 = unique)"}
    group_key = "video_dup_group_size"
    default_layouts = ("video", "video-text")
    modality = "video"
    higher_is_closer = True
    score_name = "matched frames"

    def thresholds(self) -> dict[str, Any]:
        p = self.params
        return {
            "frame_threshold": p.frame_threshold,
            "min_match": p.min_match,
            "min_duration_ratio": p.min_duration_ratio,
            "step_s": p.step_s,
            "max_frames": p.max_frames,
            "frame_bands": p.frame_bands,
        }

    def signatures(self, live: pa.Table) -> Signatures:
        p = self.params
        n = live.num_rows
        frames = np.zeros((n, p.max_frames), dtype=np.uint64)
        counts = np.zeros(n, dtype=np.int32)
        durations = np.zeros(n)
        keys: list[np.ndarray] = []
        errors: list[SkipSample | None] = [None] * n
        for i, row in enumerate(from_table(live.select(["media"]))):
            try:
                h, _, dur = video_frame_hashes(first_media(row, "video"), p.step_s, p.max_frames)
            except FATAL_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - quarantined with the reason
                errors[i] = media_failure(e)
                keys.append(np.zeros(0, np.uint64))
                continue
            frames[i, : len(h)] = h
            counts[i] = len(h)
            durations[i] = dur
            bits = popcount64(h)
            useful = h[(bits >= 5) & (bits <= 59)]
            keys.append(band_keys(useful[:, None], p.frame_bands, 64).reshape(-1) if len(useful) else np.zeros(0, np.uint64))
        cols = {
            "frames": pa.FixedSizeListArray.from_arrays(pa.array(frames.view(np.int64).reshape(-1), pa.int64()), p.max_frames),
            "frame_count": pa.array(counts, pa.int32()),
            "duration": pa.array(durations, pa.float64()),
        }
        return Signatures(keys=keys, columns=cols, errors=errors)

    def verifier(self, summary: pa.Table):
        p = self.params
        col = summary["frames"].combine_chunks()
        frames = col.values.to_numpy().view(np.uint64).reshape(len(col), -1)
        count = summary["frame_count"].to_numpy()
        dur = summary["duration"].to_numpy()
        valid = np.arange(frames.shape[1])[None, :] < count[:, None]

        def verify(left: np.ndarray, right: np.ndarray):
            fx, fy = frames[left], frames[right]
            d = np.bitwise_count(fx[:, :, None] ^ fy[:, None, :]).astype(np.int16)
            vx, vy = valid[left], valid[right]
            d = np.where(vx[:, :, None] & vy[:, None, :], d, 99)
            mx = ((d.min(axis=2) <= p.frame_threshold) & vx).sum(axis=1)
            my = ((d.min(axis=1) <= p.frame_threshold) & vy).sum(axis=1)
            cx, cy = count[left], count[right]
            shorter_x = cx <= cy
            score = np.where(shorter_x, mx / np.maximum(cx, 1), my / np.maximum(cy, 1))
            ratio = np.minimum(dur[left], dur[right]) / np.maximum(np.maximum(dur[left], dur[right]), 1e-9)
            ok = (score >= p.min_match) & (ratio >= p.min_duration_ratio)
            detail = [
                f"{int(m)}/{int(c)} frames within {p.frame_threshold} bits, duration ratio {r:.2f}"
                for m, c, r in zip(np.where(shorter_x, mx, my), np.minimum(cx, cy), ratio, strict=True)
            ]
            return ok, score, detail

        return verify
