"""What the CLIP model is fed: the images of a row (image items, keyframes, or the middle frame of a
video) as jobs, each with the text it is compared with, and their pixels decoded for the model.

Decoding: JPEGs are decoded with Pillow's draft mode straight to the smallest scale whose short
side still covers the model's input size (a 4000px photo costs a 1/8-scale decode), other
formats are reduced right after decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from operators.media_io import open_image, open_media
from schemas.enums import Layout
from schemas.text import pairing_text

__all__ = ["KEYFRAME_ROLE", "ImageJob", "decode_image", "image_jobs", "is_document", "middle_frame"]

KEYFRAME_ROLE = "keyframe"


def decode_image(media: dict[str, Any], min_side: int) -> Any:
    """Decode an image to RGB at the smallest cheap scale whose short side is >= ``min_side``."""
    from PIL import ImageOps

    with open_media(media) as f, open_image(f) as im:
        if im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im.load()
        factor = min(im.size) // (2 * min_side)
        if factor >= 2:
            im = im.reduce(factor)
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def middle_frame(media: dict[str, Any], min_side: int) -> Any:
    """The frame in the middle of a video, decoded with PyAV (seek to the keyframe before it)."""
    import av

    with open_media(media) as f, av.open(f) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        duration = media.get("duration_s")
        if not duration and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        if not duration and container.duration:
            duration = container.duration / 1_000_000
        target = (duration or 0.0) / 2
        if target > 0 and stream.time_base:
            container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        last = None
        for i, frame in enumerate(container.decode(stream)):
            last = frame
            t = frame.time if frame.time is not None else 0.0
            if t >= target - 1e-6 or i >= 600:
                break
        if last is None:
            raise ValueError("no decodable video frame")
        img = last.to_image()
    factor = min(img.size) // (2 * min_side)
    return img.reduce(factor) if factor >= 2 else img


@dataclass
class ImageJob:
    """One image to embed: a row, a media item, and how to get its pixels."""

    row: int
    media_index: int
    media: dict[str, Any]
    kind: str  #: image | keyframe | video (the middle frame is decoded)
    text: str | None = None  #: the text this image is compared with (clip_score)


def _interleaved_texts(row: dict[str, Any]) -> dict[int, str]:
    """media_index -> the nearest text segment of an interleaved document (on a tie, the one
    after the image: captions usually follow their image)."""
    segs = row.get("interleaved") or []
    texts = [(i, s["text"]) for i, s in enumerate(segs) if s and s.get("kind") == "text" and (s.get("text") or "").strip()]
    out: dict[int, str] = {}
    if not texts:
        return out
    for i, s in enumerate(segs):
        if s and s.get("kind") == "media" and s.get("media_index") is not None:
            best = min(texts, key=lambda t: (abs(t[0] - i), t[0] < i))
            out[int(s["media_index"])] = best[1].strip()
    return out


def is_document(row: dict[str, Any]) -> bool:
    return row.get("layout") == Layout.INTERLEAVED.value or bool(row.get("interleaved"))


def image_jobs(row: dict[str, Any], index: int, *, text_fields: Iterable[str] | None, limit: int) -> list[ImageJob]:
    """The images of a row: image items (keyframes included), else the middle frame of each video
    when the row has no keyframes. With ``text_fields``, each job carries its text (documents: the
    nearest text segment; other rows: the row's text)."""
    media = row.get("media") or []
    has_keyframes = any(m.get("role") == KEYFRAME_ROLE for m in media)
    doc = is_document(row)
    near = _interleaved_texts(row) if (doc and text_fields is not None) else {}
    text = pairing_text(row, text_fields) if text_fields is not None else None
    jobs = []
    for i, m in enumerate(media):
        if m.get("error"):
            continue
        if m.get("modality") == "image":
            kind = KEYFRAME_ROLE if m.get("role") == KEYFRAME_ROLE else "image"
        elif m.get("modality") == "video" and not has_keyframes:
            kind = "video"
        else:
            continue
        t = (near.get(i) or (text if not near else None)) if doc else text
        jobs.append(ImageJob(index, i, m, kind, t))
    return jobs[:limit]
