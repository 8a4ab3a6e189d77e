"""Extension tables owned by the schema: which file extension is which modality, and how a
media item is named inside a WebDataset shard. Readers, the mixer and `curate stats` all read
these, so a format added here is recognised everywhere at once."""

from __future__ import annotations

from schemas.enums import Modality

__all__ = [
    "AUDIO_EXTS",
    "DEFAULT_MEMBER_EXT",
    "IMAGE_EXTS",
    "MEDIA_EXTS",
    "MEMBER_EXT",
    "MEMBER_PREFIX",
    "VIDEO_EXTS",
    "modality_of_ext",
]

IMAGE_EXTS = frozenset({"jpg", "jpeg", "jpe", "jfif", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "ico", "ppm", "pgm", "tga", "svg"})
VIDEO_EXTS = frozenset({"mp4", "m4v", "webm", "mkv", "avi", "mov", "mpg", "mpeg", "ts", "mts", "m2ts", "wmv", "flv", "3gp", "ogv"})
AUDIO_EXTS = frozenset(
    {"wav", "flac", "mp3", "ogg", "oga", "m4a", "opus", "aif", "aiff", "aifc", "au", "snd", "aac", "wma", "amr", "wv", "caf", "ac3", "mka", "spx"}
)
#: extension (lower case, no dot) -> modality
MEDIA_EXTS: dict[str, str] = {
    **dict.fromkeys(IMAGE_EXTS, Modality.IMAGE.value),
    **dict.fromkeys(VIDEO_EXTS, Modality.VIDEO.value),
    **dict.fromkeys(AUDIO_EXTS, Modality.AUDIO.value),
}

#: probed container / codec format -> the extension of its member in a shard
MEMBER_EXT: dict[str, str] = {
    "jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tiff", "svg": "svg",
    "mp4": "mp4", "mov": "mov", "webm": "webm", "matroska": "mkv", "mkv": "mkv", "avi": "avi",
    "wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg", "m4a": "m4a", "opus": "opus",
}  # fmt: skip
#: modality -> member name prefix in a shard (``img.jpg``, ``img_1.png``, ``vid.mp4``)
MEMBER_PREFIX: dict[str, str] = {"image": "img", "video": "vid", "audio": "aud"}
#: modality -> member extension when neither the format nor the file name says one
DEFAULT_MEMBER_EXT: dict[str, str] = {"image": "jpg", "video": "mp4", "audio": "wav"}


def modality_of_ext(ext: str, table: dict[str, str] | None = None) -> str | None:
    """``'JPG'`` / ``'.jpg'`` -> ``'image'``; None when the extension is not media."""
    return (table or MEDIA_EXTS).get(ext.lower().lstrip("."))
