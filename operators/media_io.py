"""Open media by reference: a local path, an fsspec URL, or a member of a tar (by offset)."""

from __future__ import annotations

import hashlib
import io
import os
from typing import IO, Any

__all__ = ["MediaMissing", "MediaUnavailable", "open_media", "read_media_bytes", "sha256_media", "uri_of"]

_CHUNK = 1 << 20


class MediaUnavailable(OSError):
    """The referenced media does not exist or cannot be opened."""


class MediaMissing(MediaUnavailable):
    """The referenced media file does not exist (a path that was never written)."""


class _Slice(io.RawIOBase):
    """A read-only window [offset, offset+length) of a seekable file (a tar member's data)."""

    def __init__(self, f: IO[bytes], offset: int, length: int) -> None:
        self._f, self._start, self._len, self._pos = f, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._len}[whence]
        self._pos = max(0, min(self._len, base + pos))
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._len - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def uri_of(media: dict[str, Any]) -> str:
    """Human-readable reference: ``path`` or ``path#member``."""
    return f"{media['uri']}#{media['member']}" if media.get("member") else media["uri"]


def open_media(media: dict[str, Any]) -> IO[bytes]:
    """A seekable binary file object for a media reference. Raises MediaUnavailable."""
    uri = media.get("uri")
    if not uri:
        raise MediaUnavailable("media has no uri")
    try:
        if _is_local(uri):
            path = uri[len("file://") :] if uri.startswith("file://") else uri
            if not os.path.exists(path):
                raise MediaMissing(f"no such file: {path}")
            f: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller
        else:
            import fsspec

            f = fsspec.open(uri, "rb").open()
    except MediaUnavailable:
        raise
    except OSError as e:
        raise MediaUnavailable(f"cannot open {uri}: {e}") from e
    if media.get("member"):
        offset, length = media.get("offset"), media.get("length")
        if offset is None or length is None:
            f.close()
            raise MediaUnavailable(f"tar member {media['member']} has no offset/length")
        return io.BufferedReader(_Slice(f, int(offset), int(length)))
    return f


def read_media_bytes(media: dict[str, Any]) -> bytes:
    with open_media(media) as f:
        return f.read()


def sha256_media(media: dict[str, Any]) -> tuple[str, int]:
    """Stream the media bytes through sha256 (bounded memory). Returns (hex digest, size)."""
    h = hashlib.sha256()
    size = 0
    with open_media(media) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
