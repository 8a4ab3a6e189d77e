"""Folder readers: one record per media file, with its ``.txt`` / ``.json`` sidecars.

``media_folder`` takes images, videos and audio by extension; ``image_folder``, ``video_folder``
and ``audio_folder`` take one modality and quarantine files of another (UNSUPPORTED_FORMAT).

Sidecars share the media file's stem (``cat.jpg`` + ``cat.txt`` / ``cat.json``):
- ``.txt``: the caption (image, video) or the transcript (audio);
- ``.json``: a JSON object whose caption/text/alt_text/transcript/language/license/instruction/
  response keys map to fields; everything else goes to ``meta``. When ``.txt`` and ``.json`` both
  give a field, the ``.txt`` wins and the JSON value is kept in ``meta`` under ``sidecar_<key>``.
- A sidecar that cannot be read or parsed does NOT quarantine the media: the record is emitted
  and the error is kept in ``meta["sidecar_errors"]`` (the media itself is fine; a later filter
  can drop rows without captions).
- A sidecar with no media file of the same stem beside it is quarantined (ORPHAN_SIDECAR);
  a file with any other extension is quarantined (UNSUPPORTED_FORMAT).

Payload: ``{"items": [{"path", "modality", "sidecars"} | {"path", "quarantine", "detail"}]}``,
at most ``units_per_file`` items per unit. Locator: the file's absolute path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from operators.base import Params, Reader, Unit
from operators.ingest._common import (
    MEDIA_EXTS,
    chunked,
    has_text,
    layout_of,
    list_files,
    load_json_sidecar,
    modalities_of,
    split_fields,
)
from operators.registry import register_reader
from schemas.enums import Modality, ReasonCode
from schemas.record import new_media

__all__ = ["AudioFolderReader", "FolderParams", "ImageFolderReader", "MediaFolderReader", "VideoFolderReader"]

log = logging.getLogger(__name__)

SIDECAR_EXTS = (".txt", ".json")


class FolderParams(Params):
    recursive: bool = Field(True, description="walk sub-folders too (hidden files and folders are always skipped)")
    extensions: dict[str, Literal["image", "video", "audio"]] = Field(
        default_factory=dict,
        description="extra or overriding extension -> modality mappings, e.g. {jxl: image, ts: video}",
    )


@register_reader
class MediaFolderReader(Reader[FolderParams]):
    """Images, videos and audio files in a folder tree, with optional sidecar captions."""

    name: ClassVar[str] = "media_folder"
    produces: ClassVar[tuple[str, ...]] = ("image", "video", "audio", "text")
    #: modalities this reader accepts; media of other modalities are quarantined
    accepts: ClassVar[tuple[str, ...]] = ("image", "video", "audio")

    def _ext_table(self) -> dict[str, str]:
        extra = {k.lower().lstrip("."): v for k, v in self.params.extensions.items()}
        return {**MEDIA_EXTS, **extra}

    def plan(self) -> Iterator[Unit]:
        files = list_files(self.path, recursive=self.params.recursive)
        walked = os.path.isdir(self.path)
        table = self._ext_table()
        groups: dict[tuple[str, str], list[str]] = {}
        for f in files:
            d, base = os.path.split(f)
            groups.setdefault((d, os.path.splitext(base)[0]), []).append(f)
        items: list[dict[str, Any]] = []
        for (d, stem), members in groups.items():
            items.extend(self._plan_group(d, stem, members, table, walked))
        items.sort(key=lambda it: it["path"])
        for chunk in chunked(items, self.units_per_file):
            yield self.unit({"items": chunk})

    def _plan_group(
        self, folder: str, stem: str, members: list[str], table: dict[str, str], walked: bool
    ) -> list[dict[str, Any]]:
        def ext(p: str) -> str:
            return os.path.splitext(p)[1].lower()

        sidecars = [m for m in members if ext(m) in SIDECAR_EXTS]
        media = [m for m in members if ext(m).lstrip(".") in table and ext(m) not in SIDECAR_EXTS]
        other = [m for m in members if m not in sidecars and m not in media]
        if media and not walked:  # a file or glob: look for sidecars that were not listed
            for sfx in SIDECAR_EXTS:
                cand = os.path.join(folder, stem + sfx)
                if cand not in sidecars and os.path.isfile(cand):
                    sidecars.append(cand)
        out: list[dict[str, Any]] = []
        for m in media:
            mod = table[ext(m).lstrip(".")]
            if mod in self.accepts:
                out.append({"path": m, "modality": mod, "sidecars": sorted(sidecars)})
            else:
                note = f" (its sidecars {[os.path.basename(s) for s in sidecars]} go with it)" if sidecars else ""
                detail = f"{mod} file in a source read by '{self.name}'{note}"
                out.append({"path": m, "quarantine": ReasonCode.UNSUPPORTED_FORMAT.value, "detail": detail})
        if not media:
            for s in sidecars:
                detail = f"no media file with stem '{stem}' beside it"
                out.append({"path": s, "quarantine": ReasonCode.ORPHAN_SIDECAR.value, "detail": detail})
        for o in other:
            detail = f"extension '{ext(o) or '(none)'}' is not a supported {'/'.join(self.accepts)} format"
            out.append({"path": o, "quarantine": ReasonCode.UNSUPPORTED_FORMAT.value, "detail": detail})
        return out

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for item in payload["items"]:
            if "quarantine" in item:
                yield self.broken(item["path"], item["quarantine"], item["detail"])
            else:
                yield self.isolated(item["path"], lambda it=item: self._media_record(it["path"], it["modality"], it["sidecars"]))

    def _media_record(self, path: str, modality: str, sidecars: list[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        errors: list[str] = []
        txt_key = "transcript" if modality == Modality.AUDIO.value else "caption"
        # .txt first: its text wins over the same field from a .json sidecar
        for sc in sorted(sidecars, key=lambda p: not p.lower().endswith(".txt")):
            name = os.path.basename(sc)
            try:
                raw = self.confinement.read_sidecar(sc)  # SkipSample: outside the roots, not a file, too big
                if sc.lower().endswith(".txt"):
                    text = raw.decode("utf-8").strip()
                    if text:
                        fields[txt_key] = text
                    continue
                data = load_json_sidecar(raw)
            except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                log.debug("bad sidecar %s", sc, exc_info=True)
                errors.append(f"{name}: {type(e).__name__}: {e}")
                continue
            mapped, rest = split_fields(data)
            meta.update(rest)
            for k, v in mapped.items():
                if not v.strip():
                    continue
                if k in fields and fields[k] != v:
                    meta[f"sidecar_{k}"] = v
                else:
                    fields.setdefault(k, v)
        if errors:
            meta["sidecar_errors"] = errors
        license = fields.pop("license", None)
        media = [new_media(modality, path, role="input")]
        text = has_text(fields)
        rec = self.record(
            path,
            media=media,
            modalities=modalities_of(media, text),
            layout=layout_of(media, text),
            meta=meta or None,
            **fields,
        )
        if license:
            rec["license"] = license
        return rec


@register_reader
class ImageFolderReader(MediaFolderReader):
    """Images only; videos and audio in the folder are quarantined (UNSUPPORTED_FORMAT)."""

    name: ClassVar[str] = "image_folder"
    produces: ClassVar[tuple[str, ...]] = ("image", "text")
    accepts: ClassVar[tuple[str, ...]] = ("image",)


@register_reader
class VideoFolderReader(MediaFolderReader):
    """Videos only; images and audio in the folder are quarantined (UNSUPPORTED_FORMAT)."""

    name: ClassVar[str] = "video_folder"
    produces: ClassVar[tuple[str, ...]] = ("video", "text")
    accepts: ClassVar[tuple[str, ...]] = ("video",)


@register_reader
class AudioFolderReader(MediaFolderReader):
    """Audio only; images and videos in the folder are quarantined (UNSUPPORTED_FORMAT)."""

    name: ClassVar[str] = "audio_folder"
    produces: ClassVar[tuple[str, ...]] = ("audio", "text")
    accepts: ClassVar[tuple[str, ...]] = ("audio",)
