"""Reads stay inside the corpus: every media and sidecar reference of a source must resolve,
after symlinks, under one of the source's roots, and a URL must use a scheme the source allows.

The roots of a source are the folder it names (a file or glob source: the folder holding it), plus
what its reader adds (``media_root`` of manifests, ``site_root`` of HTML pages), plus the source's
``allow_roots``. Its schemes are its ``allow_schemes`` (default: none, local files only), matched
case-insensitively; an fsspec chain (``simplecache::s3://...``, ``zip://a::b``) needs every
protocol of the chain. ``file://`` URLs are local paths and are confined like any other.

A reference that breaks these rules is never opened: its row is quarantined (``outside_root``,
``scheme_not_allowed``; inside an interleaved document only that media item is marked).
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterable

from operators.errors import SkipSample
from schemas.enums import ReasonCode

__all__ = ["SIDECAR_MAX_BYTES", "Confinement", "schemes_of", "source_root"]

#: a sidecar (caption .txt, metadata .json) larger than this is not read
SIDECAR_MAX_BYTES = 16 << 20

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")


def schemes_of(uri: str) -> list[str]:
    """The lowercased protocols a URI needs ([] for a local path or a ``file://`` URL: what
    ``operators.media_io.open_media`` opens as a local file, "::" in a file name included)."""
    if "://" not in uri or uri[:7].lower() == "file://":
        return []
    parts = uri.split("::")
    out: list[str] = []
    for i, part in enumerate(parts):
        m = _SCHEME.match(part)
        if m:
            out.append(m.group(1).lower())
        elif len(parts) > 1 and i < len(parts) - 1 and _PROTOCOL.match(part):
            out.append(part.lower())  # a bare protocol name that wraps the next part (simplecache::)
        elif len(parts) > 1:
            out.append("file")  # a local path inside a chain (zip://member::/path)
    return out


def source_root(path: str) -> str:
    """The folder a source path names: itself, the folder holding a file, or a glob's fixed prefix."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        return path
    if glob.has_magic(path):
        fixed = []
        for part in path.split(os.sep):
            if glob.has_magic(part):
                break
            fixed.append(part)
        return os.sep.join(fixed) or os.sep
    return os.path.dirname(path)


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri[:7].lower() == "file://" else uri


class Confinement:
    """The roots and URL schemes one source may read from."""

    def __init__(self, roots: Iterable[str], schemes: Iterable[str] = ()) -> None:
        self.roots = tuple(sorted({os.path.realpath(os.path.expanduser(r)) for r in roots if r and "://" not in r}))
        self.schemes = frozenset(s.lower().rstrip(":/") for s in schemes)

    def __repr__(self) -> str:
        return f"Confinement(roots={list(self.roots)}, schemes={sorted(self.schemes)})"

    def inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def check(self, uri: str) -> SkipSample | None:
        """Why ``uri`` must not be read (a SkipSample to quarantine with), or None when it may be."""
        schemes = schemes_of(uri)
        if schemes:
            refused = [s for s in schemes if s not in self.schemes]
            if not refused:
                return None
            reason = ReasonCode.REMOTE_MEDIA if refused in (["http"], ["https"]) else ReasonCode.SCHEME_NOT_ALLOWED
            allowed = ", ".join(sorted(self.schemes)) or "none"
            return SkipSample(
                reason,
                f"{uri}: scheme {', '.join(refused)} is not allowed for this source "
                f"(allow_schemes: {allowed}; add it to the source's allow_schemes to read it)",
            )
        return self.check_path(_local_path(uri))

    def check_path(self, path: str) -> SkipSample | None:
        """Why the local ``path`` must not be read, or None (a missing file is for the opener to report)."""
        real = os.path.realpath(path)
        if not self.inside(real):
            where = f"{path} -> {real}" if real != os.path.abspath(path) else path
            return SkipSample(
                ReasonCode.OUTSIDE_ROOT,
                f"{where} is outside the source's roots ({', '.join(self.roots)}); add its folder to the source's allow_roots to read it",
            )
        return None

    def read_sidecar(self, path: str, limit: int = SIDECAR_MAX_BYTES) -> bytes:
        """The bytes of a sidecar file, confined, regular and at most ``limit`` bytes (SkipSample
        otherwise; OSError when it cannot be read)."""
        refused = self.check_path(path)
        if refused is not None:
            raise refused
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SkipSample(ReasonCode.UNREADABLE, f"{path}: not a regular file")
        if st.st_size > limit:
            raise SkipSample(ReasonCode.UNREADABLE, f"{path}: sidecar of {st.st_size} bytes (more than {limit})")
        with open(path, "rb") as f:
            return f.read(limit + 1)[:limit]
