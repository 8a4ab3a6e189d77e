"""``probe``: read the real metadata of every media item of a record, cheaply.

Images are read by header with Pillow (and, by default, decoded at reduced scale to catch
truncated files); video and audio are read with PyAV from container/stream metadata, and at most
the first frame is decoded, so a two-hour file costs the same as a two-second one.

The operator fills each media dict's metadata fields (format, width, height, duration_s, fps,
num_frames, codec, has_audio, audio_codec, sample_rate, channels, bytes) and writes row-level
numbers into ``row["scores"]`` for filters ("score now, threshold later").

A broken media item quarantines its row (reason ``missing_file``, ``unreadable`` or
``corrupt_media``), except in layouts that tolerate a missing piece (interleaved documents by
default): there the item gets an ``error`` and the record is kept with ``media_errors`` counted.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from typing import IO, Any, ClassVar, Literal

from pydantic import Field

from operators.base import Params, RowOperator, SkipSample
from operators.errors import media_errors
from operators.media_io import open_image, open_media, uri_of
from operators.registry import register_operator
from schemas.enums import Layout, ReasonCode
from schemas.record import TEXT_FIELDS, set_media_error

__all__ = ["Probe", "ProbeParams", "probe_media", "text_stats"]

log = logging.getLogger(__name__)

#: EXIF orientations that rotate by 90 degrees (the displayed image has width and height swapped)
_ROTATED = {5, 6, 7, 8}
_JPEG_DRAFT_SCALE = 8


class ProbeParams(Params):
    image_check: Literal["header", "decode"] = Field(
        "decode",
        description="header: read the image header only; decode: also decode the pixels (JPEG at 1/8 scale) "
        "to catch truncated or corrupt files",
    )
    video_check: Literal["header", "first_frame"] = Field(
        "first_frame", description="header: container and stream metadata only; first_frame: also decode one frame"
    )
    audio_check: Literal["header", "first_frame"] = Field(
        "first_frame", description="header: container and stream metadata only; first_frame: also decode one frame"
    )
    keep_partial_layouts: list[str] = Field(
        default_factory=lambda: [Layout.INTERLEAVED.value],
        description="layouts whose records are kept when one media item is broken (the item gets `error`, "
        "the record counts `media_errors`); any other layout quarantines the record",
    )


# ----------------------------------------------------------------------------- per-media probes


def _size_of(f: IO[bytes]) -> int:
    pos = f.tell()
    size = f.seek(0, os.SEEK_END)
    f.seek(pos)
    return size


def _probe_image(media: dict[str, Any], f: IO[bytes], check: str) -> None:

    with open_image(f) as im:
        media["format"] = (im.format or "").lower() or None
        width, height = im.size
        if check == "decode":
            if im.format == "JPEG":
                im.draft("RGB", (max(1, width // _JPEG_DRAFT_SCALE), max(1, height // _JPEG_DRAFT_SCALE)))
            im.load()
        orientation = im.getexif().get(0x0112, 1)
    if orientation in _ROTATED:
        width, height = height, width
    media["width"], media["height"] = width, height


def _container_format(container: Any, media: dict[str, Any]) -> str:
    """FFmpeg names demuxers by family ("mov,mp4,m4a,..."): prefer the name the file's suffix gives."""
    names = container.format.name.split(",")
    suffix = os.path.splitext(media.get("member") or media["uri"])[1].lstrip(".").lower()
    return suffix if suffix in names else names[0]


def _stream_duration(stream: Any, container: Any) -> float | None:
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _decode_first_frame(container: Any, stream: Any) -> None:
    """Decode frames of ``stream`` until one comes out; never reads further."""
    stream.codec_context.thread_count = 1
    for _ in container.decode(stream):
        return
    raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"no decodable {stream.type} frame")


def _probe_video(media: dict[str, Any], container: Any, check: str) -> None:
    if not container.streams.video:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "no video stream")
    vs = container.streams.video[0]
    ctx = vs.codec_context
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    fps = float(rate) if rate else None
    duration = _stream_duration(vs, container)
    frames = vs.frames or (round(duration * fps) if duration and fps else None)
    audio = container.streams.audio[0] if container.streams.audio else None
    media.update(
        format=_container_format(container, media),
        codec=ctx.name,
        width=ctx.width or None,
        height=ctx.height or None,
        fps=fps,
        duration_s=duration,
        num_frames=frames,
        has_audio=audio is not None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        sample_rate=audio.sample_rate if audio is not None else None,
        channels=audio.channels if audio is not None else None,
    )
    if not media["width"] or not media["height"]:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "video stream has no frame size")
    if check == "first_frame":
        _decode_first_frame(container, vs)


def _probe_audio(media: dict[str, Any], container: Any, check: str) -> None:
    if not container.streams.audio:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "no audio stream")
    st = container.streams.audio[0]
    media.update(
        format=_container_format(container, media),
        codec=st.codec_context.name,
        duration_s=_stream_duration(st, container),
        sample_rate=st.sample_rate or None,
        channels=st.channels or None,
    )
    if not media["sample_rate"]:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "audio stream has no sample rate")
    if check == "first_frame":
        _decode_first_frame(container, st)


def _probe_av(media: dict[str, Any], f: IO[bytes], check: str) -> None:
    import av

    with av.open(f, mode="r", metadata_errors="ignore") as container:
        if media["modality"] == "video":
            _probe_video(media, container, check)
        else:
            _probe_audio(media, container, check)


def probe_media(media: dict[str, Any], params: ProbeParams) -> None:
    """Fill ``media``'s metadata fields in place. Raises SkipSample (with the reason) when the item is unusable."""
    modality = media.get("modality")
    if modality not in ("image", "video", "audio"):
        raise SkipSample(ReasonCode.UNSUPPORTED_FORMAT, f"unknown modality {modality!r}")
    with media_errors(), open_media(media) as f:
        if media.get("bytes") is None:
            media["bytes"] = _size_of(f)
        if modality == "image":
            _probe_image(media, f, params.image_check)
        else:
            _probe_av(media, f, params.video_check if modality == "video" else params.audio_check)


# ----------------------------------------------------------------------------- row-level numbers


def _texts(row: dict[str, Any]) -> Iterable[str]:
    for name in TEXT_FIELDS:
        if row.get(name):
            yield row[name]
    for turn in row.get("conversation") or []:
        if turn and turn.get("text"):
            yield turn["text"]
    for seg in row.get("interleaved") or []:
        if seg and seg.get("kind") == "text" and seg.get("text"):
            yield seg["text"]
    pref = row.get("preference") or {}
    for key in ("prompt", "chosen", "rejected"):
        if pref.get(key):
            yield pref[key]
    inter = row.get("interaction") or {}
    if inter.get("goal"):
        yield inter["goal"]


def text_stats(row: dict[str, Any]) -> dict[str, float]:
    """Characters and whitespace-separated words over every text the row carries."""
    texts = list(_texts(row))
    return {"text_chars": float(sum(len(t) for t in texts)), "text_words": float(sum(len(t.split()) for t in texts))}


def _visual_scores(visual: list[dict[str, Any]]) -> dict[str, float]:
    sized = [(m["width"], m["height"]) for m in visual if m.get("width") and m.get("height")]
    if not sized:
        return {}
    ratios = [w / h for w, h in sized]
    return {
        "min_side": float(min(min(w, h) for w, h in sized)),
        "max_side": float(max(max(w, h) for w, h in sized)),
        "pixels": float(min(w * h for w, h in sized)),
        "aspect_ratio": max(ratios, key=lambda r: abs(math.log(r))),
    }


def _media_scores(ok: list[dict[str, Any]]) -> dict[str, float]:
    by = {k: [m for m in ok if m["modality"] == k] for k in ("image", "video", "audio")}
    scores = {"num_images": float(len(by["image"])), "num_videos": float(len(by["video"]))}
    scores["num_audio"] = float(len(by["audio"]))
    scores.update(_visual_scores(by["image"] + by["video"]))
    timed = [m["duration_s"] for m in by["video"] + by["audio"] if m.get("duration_s") is not None]
    if timed:
        scores["duration_s"] = float(sum(timed))
    fps = [m["fps"] for m in by["video"] if m.get("fps")]
    if fps:
        scores["fps"] = float(min(fps))
    if by["video"]:
        scores["has_audio"] = 1.0 if any(m.get("has_audio") for m in by["video"]) else 0.0
    rates = [m["sample_rate"] for m in by["audio"] if m.get("sample_rate")]
    if rates:
        scores["sample_rate"] = float(min(rates))
    channels = [m["channels"] for m in by["audio"] if m.get("channels")]
    if channels:
        scores["channels"] = float(max(channels))
    if ok:
        scores["bytes"] = float(sum(m.get("bytes") or 0 for m in ok))
    return scores


# ----------------------------------------------------------------------------- the operator


@register_operator
class Probe(RowOperator[ProbeParams]):
    """Probe every media item of a record (header + optional cheap decode) and write its numbers."""

    name: ClassVar[str] = "probe"
    default_batch_size: ClassVar[int] = 64
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("PIL", "pillow>=10"), ("av", "av>=12"))
    writes: ClassVar[dict[str, str]] = {
        "min_side": "shortest side in pixels of the visual media (images and videos); smallest over items",
        "max_side": "longest side in pixels of the visual media; largest over items",
        "aspect_ratio": "width / height of the visual media; the one furthest from 1 over items",
        "pixels": "width * height of the visual media; smallest over items",
        "duration_s": "seconds of video and audio, summed over items",
        "fps": "frames per second of the video; lowest over video items",
        "sample_rate": "sample rate in Hz of the audio items; lowest over items",
        "channels": "audio channels of the audio items; most over items",
        "num_images": "readable image items",
        "num_videos": "readable video items",
        "num_audio": "readable audio items",
        "has_audio": "1.0 when a video item has an audio track, else 0.0 (rows with video only)",
        "bytes": "total size in bytes of the readable media items",
        "text_chars": "characters over all texts (fields, conversation turns, interleaved text, preference, goal)",
        "text_words": "whitespace-separated words over the same texts",
        "media_errors": "media items that could not be read (kept only in tolerant layouts such as interleaved)",
    }

    def process(self, row: dict[str, Any]) -> None:
        params = self.params
        tolerant = row.get("layout") in params.keep_partial_layouts
        ok: list[dict[str, Any]] = []
        errors = 0
        for media in row.get("media") or []:
            if not media.get("error"):
                try:
                    probe_media(media, params)
                    ok.append(media)
                    continue
                except SkipSample as e:
                    if not tolerant:
                        raise SkipSample(e.reason, f"{uri_of(media)}: {e.detail}") from e
                    set_media_error(media, e.reason, e.detail)
            elif not tolerant:
                reason = media.get("error_reason") or ReasonCode.UNREADABLE
                raise SkipSample(reason, f"{uri_of(media)}: {media['error']}")
            errors += 1
            log.debug("probe: %s: %s", uri_of(media), media["error"])
        scores = dict(row.get("scores") or {})
        scores.update(_media_scores(ok))
        scores.update(text_stats(row))
        scores["media_errors"] = float(errors)
        row["scores"] = scores
