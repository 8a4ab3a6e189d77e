"""``image_transform``: resize and re-encode images into the shard format, as new files.

Each image item (roles in ``skip_roles`` excepted) is decoded (JPEGs through ``Image.draft`` when
they shrink a lot), turned upright by its EXIF orientation, resized by ``mode``:

- ``max_side``: the longer side becomes at most ``size``;
- ``min_side``: the shorter side becomes at most ``size``;
- ``tier``: the shorter side becomes the largest value of ``tiers`` it reaches (images below the
  first tier keep their size unless ``upscale``);

(``upscale: true`` also enlarges images below the target), and encoded as ``format`` (jpeg, webp or
png; JPEG flattens transparency onto white) to ``<artifacts>/<id[:2]>/<row id>_m<I>.<ext>`` through
a temporary name, so a rerun overwrites the same file. With ``reencode: if_needed`` an image already
in the target format and size keeps its file.

The media item then points at the new file (``uri``, ``format``, ``width``, ``height``, ``bytes``,
``sha256`` updated; ``member``/``offset``/``length`` cleared); its ``role`` is unchanged. The
original reference is kept in the row's ``meta["original_media"]``: a list of
``{media_index, uri, member, offset, length, sha256, format, width, height}``. The row's
``content_hash`` and ``id`` stay those of the source (they identify the sample; dedup has used them).
Probe's size scores (min_side, max_side, pixels, aspect_ratio) are recomputed over the row's visual
items, and ``transform_scale`` records the resize factor.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from operators.base import FATAL_ERRORS, OperatorError, Params, RowOperator, SkipSample
from operators.errors import media_failure
from operators.media_io import MediaUnavailable, open_image, open_media, uri_of
from operators.registry import register_operator
from operators.video.decode import dump_meta, load_meta

__all__ = ["ImageTransform", "ImageTransformParams", "target_size"]

_EXT = {"jpeg": "jpg", "webp": "webp", "png": "png"}
_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}


class ImageTransformParams(Params):
    mode: Literal["max_side", "min_side", "tier"] = Field(
        "max_side", description="max_side / min_side: bound that side by size; tier: snap the shorter side to a tier"
    )
    size: int | None = Field(1024, ge=8, description="target side in pixels for max_side and min_side")
    tiers: list[int] = Field(default_factory=lambda: [256, 512, 1024], min_length=1, description="tiers for mode tier")
    upscale: bool = Field(False, description="also enlarge images smaller than the target")
    format: Literal["jpeg", "webp", "png"] = Field("jpeg", description="output encoding")
    quality: int = Field(90, ge=1, le=100, description="JPEG / WebP quality")
    reencode: Literal["always", "if_needed"] = Field(
        "if_needed", description="if_needed: keep the file when it is already in the target format and size"
    )
    skip_roles: list[str] = Field(default_factory=lambda: ["keyframe"], description="media roles left as they are")

    @model_validator(mode="after")
    def _check(self) -> ImageTransformParams:
        if self.mode != "tier" and self.size is None:
            raise ValueError(f"mode {self.mode} needs size")
        if any(t <= 0 for t in self.tiers) or self.tiers != sorted(set(self.tiers)):
            raise ValueError("tiers must be positive and strictly increasing")
        return self


def target_size(width: int, height: int, p: ImageTransformParams) -> tuple[int, int]:
    """The output (width, height) for an upright ``width`` x ``height`` image."""
    if p.mode == "tier":
        reached = [t for t in p.tiers if min(width, height) >= t]
        target = reached[-1] if reached else (p.tiers[0] if p.upscale else min(width, height))
        scale = target / min(width, height)
    else:
        side = max(width, height) if p.mode == "max_side" else min(width, height)
        scale = p.size / side  # type: ignore[operator]
    if scale > 1 and not p.upscale:
        scale = 1.0
    if scale == 1.0:
        return width, height
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if p.mode == "tier":  # the shorter side is exactly the tier
        if width <= height:
            w = round(target)
        else:
            h = round(target)
    return w, h


def _sha256(path: Path) -> tuple[str, int]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


@register_operator
class ImageTransform(RowOperator[ImageTransformParams]):
    """Resize and re-encode images for shards; media items point at the new files."""

    name: ClassVar[str] = "image_transform"
    default_batch_size: ClassVar[int] = 32
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("PIL", "pillow>=10"),)
    writes: ClassVar[dict[str, str]] = {
        "transform_scale": "output / input side length of the resize (1.0: size kept); smallest over images",
        "min_side": "recomputed after the resize (see probe)",
        "max_side": "recomputed after the resize (see probe)",
        "pixels": "recomputed after the resize (see probe)",
        "aspect_ratio": "recomputed after the resize (see probe)",
    }

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        targets = [
            (i, m) for i, m in enumerate(row.get("media") or [])
            if m.get("modality") == "image" and not m.get("error") and m.get("role") not in p.skip_roles
        ]  # fmt: skip
        if not targets:
            return
        if not self.artifacts_dir:
            raise OperatorError("image_transform needs an artifacts folder (the engine sets OUT/artifacts/<stage>)")
        originals, scales = [], []
        for i, media in targets:
            before = {
                k: media.get(k) for k in ("uri", "member", "offset", "length", "sha256", "format", "width", "height")
            }
            scale = self._transform(row, i, media)
            if scale is not None:
                originals.append({"media_index": i, **before})
                scales.append(scale)
        if originals:
            meta = load_meta(row)
            kept = [
                o
                for o in meta.get("original_media", [])
                if o["media_index"] not in {x["media_index"] for x in originals}
            ]
            meta["original_media"] = sorted(kept + originals, key=lambda o: o["media_index"])
            row["meta"] = dump_meta(meta)
        scores = dict(row.get("scores") or {})
        scores["transform_scale"] = min(scales) if scales else 1.0
        sized = [(m["width"], m["height"]) for m in row["media"]
                 if m.get("modality") in ("image", "video") and m.get("width") and m.get("height")
                 and m.get("role") not in p.skip_roles]  # fmt: skip
        if sized:
            scores.update(
                min_side=float(min(min(s) for s in sized)),
                max_side=float(max(max(s) for s in sized)),
                pixels=float(min(w * h for w, h in sized)),
                aspect_ratio=max((w / h for w, h in sized), key=lambda r: abs(math.log(r))),
            )
        row["scores"] = scores

    def _transform(self, row: dict[str, Any], index: int, media: dict[str, Any]) -> float | None:
        """Write the new file and update ``media``; None when the file is kept as it is."""
        from PIL import Image, ImageOps

        p = self.params
        try:
            f = open_media(media)
        except MediaUnavailable as e:
            raise media_failure(e) from e
        path = Path(self.artifacts_dir) / (row["id"] or "noid")[:2] / f"{row['id']}_m{index}.{_EXT[p.format]}"  # type: ignore[arg-type]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with f, open_image(f) as im:
                fmt = (im.format or "").lower()
                orientation = im.getexif().get(0x0112, 1)
                w0, h0 = im.size
                upright = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
                size = target_size(*upright, p)
                if p.reencode == "if_needed" and fmt == p.format and size == upright and orientation in (1, None):
                    return None
                scale = size[0] / upright[0]
                if fmt == "jpeg" and scale <= 0.5:
                    draft = (size[0], size[1]) if upright == (w0, h0) else (size[1], size[0])
                    im.draft("RGB", draft)
                im = ImageOps.exif_transpose(im)
                im = self._mode_for(im, p.format)
                if im.size != size:
                    im = im.resize(size, Image.Resampling.LANCZOS)
                path.parent.mkdir(parents=True, exist_ok=True)
                opts: dict[str, Any] = {"quality": p.quality} if p.format in ("jpeg", "webp") else {"optimize": False}
                im.save(tmp, format=_PIL_FORMAT[p.format], **opts)
                os.replace(tmp, path)
        except (SkipSample, *FATAL_ERRORS):
            tmp.unlink(missing_ok=True)
            raise
        except Exception as e:  # noqa: BLE001 - a decoder error means the bytes are not a usable image
            tmp.unlink(missing_ok=True)
            raise media_failure(e, uri_of(media)) from e
        digest, nbytes = _sha256(path)
        media.update(
            uri=str(path), member=None, offset=None, length=None, format=p.format,
            width=size[0], height=size[1], bytes=nbytes, sha256=digest,
        )  # fmt: skip
        return scale

    @staticmethod
    def _mode_for(im: Any, fmt: str) -> Any:
        from PIL import Image

        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if fmt == "jpeg":
            if has_alpha:
                rgba = im.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return im if im.mode in ("RGB", "L") else im.convert("RGB")
        if has_alpha:
            return im if im.mode == "RGBA" else im.convert("RGBA")
        return im if im.mode in ("RGB", "L") else im.convert("RGB")
