"""Open media by reference: a local path, an fsspec URL, or a member of a tar (by offset)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tempfile
from typing import IO, Any

__all__ = [
    "MediaMissing", "MediaUnavailable", "is_svg", "open_image", "open_media", "read_media_bytes", "sha256_media", "uri_of",
]  # fmt: skip

_CHUNK = 1 << 20
SVG_MAX_SIDE = 4096  # an SVG is rasterised at its own size, longest side capped here
_SVG_TAG = re.compile(rb"<svg\b[^>]*>", re.IGNORECASE | re.DOTALL)
# the root element is <svg>: after a BOM, XML declaration, comments, processing instructions, a doctype
_SVG_ROOT = re.compile(rb"^(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>)*<svg\b", re.IGNORECASE | re.DOTALL)
_UNIT_PX = {b"": 1.0, b"px": 1.0, b"pt": 4 / 3, b"pc": 16.0, b"in": 96.0, b"cm": 96 / 2.54, b"mm": 96 / 25.4, b"em": 16.0, b"ex": 8.0}


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
    return "://" not in uri or uri[:7].lower() == "file://"


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
            path = uri[len("file://") :] if uri[:7].lower() == "file://" else uri
            if not os.path.exists(path):
                raise MediaMissing(f"no such file: {path}")
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):  # a FIFO, device or folder: reading it could hang or never end
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
                raise MediaUnavailable(f"{path}: not a regular file ({kind})")
            f: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller
        else:
            import fsspec

            f = fsspec.open(uri, "rb").open()
    except MediaUnavailable:
        raise
    except ImportError as e:  # fsspec knows the scheme but its filesystem package is not installed
        raise MediaUnavailable(f"cannot open {uri}: {e}") from e
    except (OSError, ValueError) as e:
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
        try:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        except OSError as e:  # a read that fails half way: the file is there but unreadable
            raise MediaUnavailable(f"cannot read {uri_of(media)}: {e}") from e
    return h.hexdigest(), size


def is_svg(head: bytes) -> bool:
    """An SVG document, by its first bytes: the root element is <svg>."""
    return _SVG_ROOT.match(head) is not None


def _svg_length(tag: bytes, name: bytes) -> float | None:
    m = re.search(rb"\s" + name + rb"\s*=\s*[\"']\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*[\"']", tag, re.IGNORECASE)
    if not m or m.group(2).lower() not in _UNIT_PX:
        return None  # absent, or a percentage: the viewBox decides
    try:
        return float(m.group(1)) * _UNIT_PX[m.group(2).lower()]
    except ValueError:
        return None


def _states_a_size(data: bytes) -> bool:
    m = _SVG_TAG.search(data[:8192])
    return bool(m and re.search(rb"\s(width|height|style)\s*=", m.group(0), re.IGNORECASE))


def svg_size(data: bytes) -> tuple[float, float] | None:
    """Intrinsic size in px of an SVG (width/height attributes, else the viewBox), if it states one."""
    m = _SVG_TAG.search(data[:8192])
    if not m:
        return None
    tag = m.group(0)
    w, h = _svg_length(tag, b"width"), _svg_length(tag, b"height")
    box = re.search(rb"viewBox\s*=\s*[\"']([^\"']+)[\"']", tag, re.IGNORECASE)
    if box and (w is None or h is None):
        try:
            _, _, bw, bh = (float(x) for x in box.group(1).replace(b",", b" ").split())
        except ValueError:
            bw = bh = 0.0
        if bw > 0 and bh > 0:
            if w is None and h is None:
                w, h = bw, bh
            elif w is None:
                w = h * bw / bh  # type: ignore[operator]
            else:
                h = w * bh / bw
    return (w, h) if w and h else None


def _svg_fonts() -> dict[str, Any]:
    """Text in SVGs is drawn with the DejaVu fonts that matplotlib (a dependency) ships, and only
    those: the same pixels on every worker, whatever fonts a machine has (often none)."""
    import matplotlib

    ttf = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    sans, serif, mono = "DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono"
    return {
        "skip_system_fonts": True, "font_dirs": [ttf], "font_family": sans, "sans_serif_family": sans,
        "serif_family": serif, "monospace_family": mono, "cursive_family": serif, "fantasy_family": sans,
    }  # fmt: skip


#: href / xlink:href values that point outside the document (a file, a URL): never followed
_EXTERNAL_HREF = re.compile(rb"""((?:xlink:)?href\s*=\s*)(["'])(?!\s*(?:#|data:))[^"']*\2""", re.IGNORECASE)


def svg_without_external_refs(data: bytes) -> bytes:
    """The SVG with every reference to another file or URL emptied (``<image href="/etc/x.png">``,
    relative or ``file:`` hrefs): the rasteriser then draws only what the document itself holds
    (fragments ``#id`` and ``data:`` URIs stay)."""
    return _EXTERNAL_HREF.sub(rb'\1\2\2', data)


def _rasterise_svg(data: bytes, max_side: int) -> Any:
    from PIL import Image

    try:
        import resvg_py
    except ImportError as e:  # a dependency of the package; only a broken install lacks it
        raise OSError("SVG image: rasterising it needs resvg-py (pip install resvg-py)") from e
    data = svg_without_external_refs(data)
    size = svg_size(data)
    scale: dict[str, int] = {}
    if size is not None and max(size) > max_side:
        scale = {"width": max_side} if size[0] >= size[1] else {"height": max_side}
    elif size is None and _states_a_size(data):  # a size we cannot read is rendered capped, never as stated
        scale = {"width": max_side}
    try:
        with tempfile.TemporaryDirectory(prefix="svg-") as empty:  # relative references resolve into nothing
            png = resvg_py.svg_to_bytes(
                svg_string=data.decode("utf-8", errors="replace"), background="white", dpi=96, resources_dir=empty,
                **scale, **_svg_fonts(),
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - resvg reports malformed markup as ValueError or RuntimeError
        raise OSError(f"cannot render SVG: {e}") from e
    im = Image.open(io.BytesIO(bytes(png)))
    im.format = "SVG"  # what the file is; the pixels are its rendering
    return im


def open_image(f: IO[bytes], *, max_svg_side: int = SVG_MAX_SIDE) -> Any:
    """A PIL image from a seekable binary file. Raster formats open lazily with Pillow; an SVG is
    rasterised (resvg) on white at its intrinsic size, longest side capped, and reports
    ``format == "SVG"``."""
    from PIL import Image

    head = f.read(8192)
    f.seek(0)
    if is_svg(head):
        return _rasterise_svg(f.read(64 << 20), max_svg_side)
    return Image.open(f)
