"""``probe``: read the real metadata of every media item of a record, cheaply.

Images are read by header with Pillow (and, by default, decoded at reduced scale to catch
corrupt files); video and audio are read with PyAV from container/stream metadata, decoding at
most the first frame, and the end check reads only the last second before the stated end (video:
demuxed, one picture decoded), so a two-hour file costs about what a two-second one does.

The operator fills each media dict's metadata fields (format, width, height, duration_s, fps,
num_frames, codec, has_audio, audio_codec, sample_rate, channels, bytes) and writes row-level
numbers into ``row["scores"]`` for filters ("score now, threshold later").

Before a header is trusted, the bytes are checked (operators/integrity.py): a zero-byte file is
``empty_file``; content whose sniffed type carries another modality than the name says (a PNG
named ``.mp4``, an HTML error page named ``.jpg``) is ``wrong_type``, naming what it is; and, for
the modalities in ``check_end`` (all by default), a file whose end is missing is ``truncated``: its
own structure declares more bytes than it holds (MP4 boxes, WAV/AVI/WebP chunks, the Matroska
segment, the last Ogg page, PNG's IEND, JPEG's end marker, GIF's trailer), or, for video and
audio, the data read from a seek near the stated end stops more than ``end_tolerance_s`` before
the duration the header states (FLAC and PCM: any cut last packet). Durations that token and hour
counts use are then real: a faststart MP4 cut in half is no longer kept with its full duration.

A broken media item quarantines its row (reason ``missing_file``, ``unreadable``,
``empty_file``, ``wrong_type``, ``truncated``, ``unsupported_format`` or ``corrupt_media``), except
in layouts that tolerate a missing piece (interleaved documents by default): there the item gets an
``error`` and the record is kept with ``media_errors`` counted.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from typing import IO, Any, ClassVar, Literal

from pydantic import Field

from operators.base import Params, RowOperator, SkipSample
from operators.errors import FATAL_ERRORS, media_errors
from operators.integrity import SNIFF_BYTES, FileType, Truncation, file_end, sniff, stream_end
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
    check_type: bool = Field(
        True,
        description="sniff each file's type from its first bytes: content of another modality than its name says "
        "(a PNG named .mp4, an HTML page named .jpg) is quarantined as wrong_type, naming what it is",
    )
    check_end: list[Literal["image", "video", "audio"]] = Field(
        default_factory=lambda: ["image", "video", "audio"],
        description="modalities whose end is checked: the file's own structure (MP4 boxes, WAV/AVI/WebP chunks, "
        "Matroska segment, Ogg pages, PNG IEND, JPEG end marker, GIF trailer) must fit in the file, and video and "
        "audio are read from a seek near the duration the header states to the real end of their data; a file "
        "whose end is missing is quarantined as truncated, with the stated and the real end in the detail",
    )
    end_tolerance_s: float = Field(
        0.25,
        ge=0,
        description="how much earlier than the stated duration (and than two frames or packets) the data of a video "
        "or audio stream may end before the file counts as truncated; FLAC and PCM with a cut last packet always do",
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


def _truncated(cut: Truncation, stream: str = "") -> SkipSample:
    said = f"the header says {cut.declared_s:.3f}s, the data holds {cut.data_s:.3f}s; " if cut.declared_s else ""
    return SkipSample(ReasonCode.TRUNCATED, f"{stream or said}{cut.describe()}")


def _pillow_truncated(e: BaseException) -> bool:
    return isinstance(e, OSError | SyntaxError | ValueError) and "truncated" in str(e).lower()


def _probe_image(media: dict[str, Any], f: IO[bytes], check: str, cut: Truncation | None) -> None:
    try:
        with open_image(f) as im:
            media["format"] = (im.format or "").lower() or None
            width, height = im.size
            media["width"], media["height"] = width, height
            if cut is not None:  # before EXIF: Pillow reads a PNG's or WebP's EXIF by loading the pixels
                raise _truncated(cut)
            if im.getexif().get(0x0112, 1) in _ROTATED:
                media["width"], media["height"] = height, width
            if check == "decode":
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, width // _JPEG_DRAFT_SCALE), max(1, height // _JPEG_DRAFT_SCALE)))
                im.load()
    except (SkipSample, *FATAL_ERRORS):
        raise
    except Exception as e:
        if cut is not None:
            raise _truncated(cut) from e
        if _pillow_truncated(e):  # formats without an end check here (BMP, TIFF...): the decoder ran out of data
            raise SkipSample(ReasonCode.TRUNCATED, f"the pixel data stops before the image is complete ({e})") from e
        raise


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


def _codec_name(stream: Any) -> str:
    if stream.codec_context is None:  # FFmpeg knows the container but has no decoder for the stream
        raise SkipSample(
            ReasonCode.UNSUPPORTED_FORMAT, f"no decoder for the {stream.type} stream's codec in this FFmpeg"
        )
    return stream.codec_context.name


def _only_other_streams(container: Any, wanted: str) -> SkipSample:
    other = "audio" if wanted == "video" else "video"
    streams = getattr(container.streams, other)
    if streams:
        codec = streams[0].codec_context.name if streams[0].codec_context is not None else "unknown codec"
        return SkipSample(ReasonCode.WRONG_TYPE, f"content is {other} only ({codec}), no {wanted} stream")
    return SkipSample(ReasonCode.CORRUPT_MEDIA, f"no {wanted} stream")


def _probe_video(media: dict[str, Any], container: Any, check: str) -> Any:
    if not container.streams.video:
        raise _only_other_streams(container, "video")
    vs = container.streams.video[0]
    codec = _codec_name(vs)
    ctx = vs.codec_context
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    fps = float(rate) if rate else None
    duration = _stream_duration(vs, container)
    frames = vs.frames or (round(duration * fps) if duration and fps else None)
    audio = container.streams.audio[0] if container.streams.audio else None
    audio_ctx = audio.codec_context if audio is not None else None
    media.update(
        format=_container_format(container, media),
        codec=codec,
        width=ctx.width or None,
        height=ctx.height or None,
        fps=fps,
        duration_s=duration,
        num_frames=frames,
        has_audio=audio is not None,
        audio_codec=audio_ctx.name if audio_ctx is not None else None,
        sample_rate=audio_ctx.sample_rate if audio_ctx is not None else None,
        channels=audio_ctx.channels if audio_ctx is not None else None,
    )
    if not media["width"] or not media["height"]:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "video stream has no frame size")
    if check == "first_frame":
        _decode_first_frame(container, vs)
    return vs


def _probe_audio(media: dict[str, Any], container: Any, check: str) -> Any:
    if not container.streams.audio:
        raise _only_other_streams(container, "audio")
    st = container.streams.audio[0]
    codec = _codec_name(st)
    media.update(
        format=_container_format(container, media),
        codec=codec,
        duration_s=_stream_duration(st, container),
        sample_rate=st.codec_context.sample_rate or None,
        channels=st.codec_context.channels or None,
    )
    if not media["sample_rate"]:
        raise SkipSample(ReasonCode.CORRUPT_MEDIA, "audio stream has no sample rate")
    if check == "first_frame":
        _decode_first_frame(container, st)
    return st


def _probe_av(media: dict[str, Any], f: IO[bytes], check: str, cut: Truncation | None, params: ProbeParams) -> None:
    import av

    try:
        container = av.open(f, mode="r", metadata_errors="ignore")
    except FATAL_ERRORS:
        raise
    except Exception as e:
        if cut is not None:  # a container whose index was never written (an MP4 cut before its moov box)
            raise SkipSample(
                ReasonCode.TRUNCATED, f"{cut.describe()}; cannot be opened: {type(e).__name__}: {e}"
            ) from e
        raise
    with container:
        try:
            if media["modality"] == "video":
                stream = _probe_video(media, container, check)
            else:
                stream = _probe_audio(media, container, check)
        except FATAL_ERRORS:
            raise
        except Exception as e:
            if cut is not None and not (isinstance(e, SkipSample) and e.reason == ReasonCode.WRONG_TYPE):
                raise _truncated(cut) from e
            raise
        if media["modality"] not in params.check_end:
            return
        try:
            end = stream_end(container, stream, media.get("duration_s"), tolerance_s=params.end_tolerance_s)
        except FATAL_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - a check that fails itself judges nothing: the header stands
            log.debug("probe: %s: end check failed: %s: %s", uri_of(media), type(e).__name__, e)
            end = None
        if cut is not None:
            raise _truncated(cut, f"{end.describe()}; " if end is not None and not cut.declared_s else "")
        if end is not None and end.truncated:
            raise SkipSample(ReasonCode.TRUNCATED, end.describe())
        if end is not None and not end.decodes:
            raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"near the end: {end.describe()}")


def _suffix(media: dict[str, Any]) -> str:
    return os.path.splitext(media.get("member") or media.get("uri") or "")[1].lower()


def _check_type(media: dict[str, Any], kind: FileType | None) -> None:
    """Content of another modality than the media item (its name's) is a wrong type, said by what it is."""
    modality = media["modality"]
    if kind is None or modality in kind.modalities:
        return
    name = _suffix(media)
    said = f"the name ({name}) says {modality}" if name else f"it is listed as {modality}"
    raise SkipSample(ReasonCode.WRONG_TYPE, f"content is {kind.describe()}, but {said}")


def probe_media(media: dict[str, Any], params: ProbeParams) -> None:
    """Fill ``media``'s metadata fields in place. Raises SkipSample (with the reason) when the item is unusable."""
    modality = media.get("modality")
    if modality not in ("image", "video", "audio"):
        raise SkipSample(ReasonCode.UNSUPPORTED_FORMAT, f"unknown modality {modality!r}")
    with media_errors(), open_media(media) as f:
        size = _size_of(f)
        if media.get("bytes") is None:
            media["bytes"] = size
        if size == 0:
            raise SkipSample(ReasonCode.EMPTY_FILE, "the file is empty (0 bytes)")
        kind = sniff(f.read(SNIFF_BYTES))
        f.seek(0)
        if params.check_type:
            _check_type(media, kind)
        cut = file_end(f, kind, size) if modality in params.check_end else None
        if modality == "image":
            _probe_image(media, f, params.image_check, cut)
        else:
            _probe_av(media, f, params.video_check if modality == "video" else params.audio_check, cut, params)


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
