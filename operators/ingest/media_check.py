"""Where a manifest's media paths resolve: a cheap existence check per record, a count per unit,
and a guess at the ``media_root`` that would make them resolve.

Manifests give media paths relative to their own folder by default (or to ``media_root``), but
real corpora often give them relative to a corpus root above or beside the manifest. The readers
stat every local media path they resolve (inside the source's roots only; URLs and paths outside
the roots are left to the ingest step, which refuses them) and record, per record, in
``scores``:

- ``media_referenced``: local media items the row references;
- ``media_missing``: those of them that do not exist.

A summary can add these up per source (input rows only: derived rows copy their parent's
scores). A unit where most media are missing logs one warning with ``suggest_media_root``'s
guess. Nothing here opens a file: ``os.path.exists`` only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from operators.confine import Confinement
from operators.ingest._common import is_url

__all__ = ["MEDIA_MISSING", "MEDIA_REFERENCED", "MediaTally", "suggest_media_root"]

log = logging.getLogger(__name__)

MEDIA_REFERENCED = "media_referenced"
MEDIA_MISSING = "media_missing"
#: missing paths kept per unit to guess a media_root from
_SAMPLES = 8
#: folders above the manifest's folder tried by ``suggest_media_root``
_UP = 3
#: sub-folders of the manifest's folder (and of each folder above) tried by ``suggest_media_root``
_SUBFOLDERS = 32


class MediaTally:
    """Counts the local media of one unit's records and how many of them are missing."""

    def __init__(self, confinement: Confinement) -> None:
        self.confinement = confinement
        self.referenced = 0
        self.missing = 0
        self.samples: list[str] = []

    def check(self, rec: dict[str, Any]) -> None:
        """Stat the record's local media; add ``media_referenced`` / ``media_missing`` to its scores."""
        referenced = missing = 0
        for m in rec.get("media") or []:
            uri = m.get("uri") or ""
            if not uri or m.get("member") or m.get("error") or is_url(uri):
                continue
            try:
                if self.confinement.check_path(uri) is not None:
                    continue  # never looked at: the ingest step refuses it (outside_root)
                exists = os.path.exists(uri)
            except (OSError, ValueError):  # a NUL in the name, a loop of links: the ingest step says what
                continue
            referenced += 1
            if not exists:
                missing += 1
                if len(self.samples) < _SAMPLES:
                    self.samples.append(uri)
        if referenced:
            rec["scores"] = {
                **(rec.get("scores") or {}),
                MEDIA_REFERENCED: float(referenced),
                MEDIA_MISSING: float(missing),
            }
        self.referenced += referenced
        self.missing += missing

    def warn(self, source: str, where: str, manifest: str, root: str, *, configured: bool) -> str | None:
        """Log (and return) a warning when most of the unit's media are missing."""
        if not self.missing or self.missing * 2 < self.referenced:
            return None
        msg = (
            f"source '{source}': {self.missing} of {self.referenced} media referenced by {where} are missing "
            f"(resolved against {root}, e.g. {self.samples[0]})"
        )
        guess = suggest_media_root(os.path.dirname(manifest), root, self.samples)
        if guess is not None:
            msg += f"; they exist under {os.path.normpath(os.path.join(os.path.dirname(manifest), guess))}: set sources.{source}.params.media_root: {guess}"
        elif not configured:
            msg += f"; set sources.{source}.params.media_root to the folder they are relative to?"
        log.warning("%s", msg)
        return msg


def _candidates(folder: str) -> list[str]:
    """Folders to try as media roots: the manifest's folder's ancestors (up to ``_UP``) and the
    visible sub-folders of each of them, nearest first."""
    out: list[str] = []
    here = folder
    for _ in range(_UP + 1):
        out.append(here)
        try:
            subs = sorted(e.name for e in os.scandir(here) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            subs = []
        out += [os.path.join(here, s) for s in subs[:_SUBFOLDERS]]
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return out


def suggest_media_root(manifest_dir: str, root: str, missing: list[str]) -> str | None:
    """A ``media_root`` (relative to the manifest's folder) under which every one of the
    ``missing`` paths (resolved against ``root``) exists, or None.

    Only paths that resolved under ``root`` and stay below it are tried (no ``..``); candidates
    are ``root``'s folder, its ancestors and their sub-folders. Stats, never opens.
    """
    rels = []
    for path in missing:
        rel = os.path.relpath(path, root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            continue
        rels.append(rel)
    if not rels:
        return None
    root = os.path.normpath(root)
    for cand in _candidates(root):
        if os.path.normpath(cand) == root:
            continue
        if all(os.path.exists(os.path.join(cand, r)) for r in rels):
            return os.path.relpath(cand, manifest_dir)
    return None
