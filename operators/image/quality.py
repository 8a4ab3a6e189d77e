"""``image_quality``: sharpness, entropy, blank, resolution tier and aspect bucket of images.

Each image is decoded once to a grayscale thumbnail whose longer side is at most ``max_side``
(JPEGs through ``Image.draft``, so a 6000-pixel photo is decoded at 1/8 scale, not in full):

- ``sharpness``: variance of the 4-neighbour Laplacian of that thumbnail (0..255 luma); blur lowers it.
  It depends on the thumbnail size, so compare numbers taken with the same ``max_side``;
- ``entropy``: Shannon entropy of the 256-bin grayscale histogram, in bits (0 for one flat colour, 8 at most);
- ``blank``: 1.0 when entropy is below ``blank_entropy`` or the luma standard deviation below ``blank_std``;
- ``resolution_tier``: the largest value of ``tiers`` that the image's shortest side reaches (full
  size, from the header), 0 below the first;
- ``aspect_bucket``: index into ``aspect_ratios`` (width / height, after EXIF rotation) of the ratio
  nearest the image's (nearest in log scale, so 2:1 and 1:2 are as far from 1:1).

Rows with several images get the worst value (least sharp, lowest entropy, blank if any, lowest
tier) and the aspect bucket of the image furthest from square, as ``probe`` does for aspect_ratio.
Items with a role in ``skip_roles`` (video keyframes by default) are not scored.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from operators.base import FATAL_ERRORS, Params, RowOperator, SkipSample
from operators.errors import media_failure
from operators.media_io import MediaUnavailable, open_image, open_media, uri_of
from operators.registry import register_operator

__all__ = ["ImageQuality", "ImageQualityParams", "aspect_bucket", "gray_thumbnail", "resolution_tier"]

#: EXIF orientations that rotate by 90 degrees
_ROTATED = {5, 6, 7, 8}


class ImageQualityParams(Params):
    max_side: int = Field(
        512, ge=16, le=4096, description="longer side of the grayscale thumbnail the numbers are taken on"
    )
    blank_entropy: float = Field(1.0, ge=0, description="blank when the grayscale entropy (bits) is below this")
    blank_std: float = Field(2.0, ge=0, description="blank when the luma standard deviation (0..255) is below this")
    tiers: list[int] = Field(
        default_factory=lambda: [256, 512, 1024], min_length=1, description="resolution tiers (shortest side, pixels)"
    )
    aspect_ratios: list[float] = Field(
        default_factory=lambda: [9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9],
        min_length=1,
        description="aspect buckets as width / height; aspect_bucket is the index of the nearest",
    )
    skip_roles: list[str] = Field(default_factory=lambda: ["keyframe"], description="media roles that are not scored")

    @field_validator("tiers")
    @classmethod
    def _sorted_tiers(cls, v: list[int]) -> list[int]:
        if any(t <= 0 for t in v) or v != sorted(set(v)):
            raise ValueError("tiers must be positive and strictly increasing")
        return v

    @field_validator("aspect_ratios")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(r <= 0 for r in v):
            raise ValueError("aspect ratios must be positive")
        return v


def resolution_tier(min_side: int, tiers: list[int]) -> int:
    """The largest tier that ``min_side`` reaches; 0 below the first."""
    reached = [t for t in tiers if min_side >= t]
    return reached[-1] if reached else 0


def aspect_bucket(width: int, height: int, ratios: list[float]) -> int:
    """Index of the ratio nearest width/height in log scale (the first on a tie)."""
    r = math.log(width / height)
    return min(range(len(ratios)), key=lambda i: abs(math.log(ratios[i]) - r))


def gray_thumbnail(media: dict[str, Any], max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(grayscale thumbnail as uint8, displayed (width, height) at full size). Raises SkipSample."""
    from PIL import Image

    try:
        f = open_media(media)
    except MediaUnavailable as e:
        raise media_failure(e) from e
    try:
        with f, open_image(f) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
            scale = max(width, height) / max_side
            if im.format == "JPEG" and scale >= 2:
                im.draft("L", (max(1, int(width / scale)), max(1, int(height / scale))))
            im = im.convert("L")
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            gray = np.asarray(im, dtype=np.uint8)
    except (SkipSample, *FATAL_ERRORS):
        raise
    except Exception as e:  # noqa: BLE001 - a decoder error means the bytes are not a usable image
        raise media_failure(e, uri_of(media)) from e
    if orientation in _ROTATED:
        width, height = height, width
    return gray, (width, height)


def sharpness(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (interior pixels)."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    g = gray.astype(np.float32)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def entropy(gray: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin histogram."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0


@register_operator
class ImageQuality(RowOperator[ImageQualityParams]):
    """Sharpness, entropy, blank flag, resolution tier and aspect bucket of images."""

    name: ClassVar[str] = "image_quality"
    default_batch_size: ClassVar[int] = 64
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("PIL", "pillow>=10"),)
    writes: ClassVar[dict[str, str]] = {
        "sharpness": "variance of the Laplacian of a grayscale thumbnail (longer side <= max_side); least over images",
        "entropy": "Shannon entropy of the grayscale histogram in bits (0..8); least over images",
        "blank": "1.0 when an image's entropy < blank_entropy or luma std < blank_std, else 0.0",
        "resolution_tier": "largest configured tier the shortest side reaches, 0 below the first; lowest over images",
        "aspect_bucket": "index into aspect_ratios of the nearest ratio (log scale), for the image furthest from square",
    }

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        items = [
            m for m in row.get("media") or []
            if m.get("modality") == "image" and not m.get("error") and m.get("role") not in p.skip_roles
        ]  # fmt: skip
        if not items:
            return
        sharp, ent, blank, tier, shapes = [], [], [], [], []
        for media in items:
            gray, (w, h) = gray_thumbnail(media, p.max_side)
            e = entropy(gray)
            sharp.append(sharpness(gray))
            ent.append(e)
            blank.append(e < p.blank_entropy or float(gray.std()) < p.blank_std)
            tier.append(resolution_tier(min(w, h), p.tiers))
            shapes.append((w, h))
        w, h = max(shapes, key=lambda s: abs(math.log(s[0] / s[1])))
        scores = dict(row.get("scores") or {})
        scores.update(
            sharpness=min(sharp),
            entropy=min(ent),
            blank=1.0 if any(blank) else 0.0,
            resolution_tier=float(min(tier)),
            aspect_bucket=float(aspect_bucket(w, h, p.aspect_ratios)),
        )
        row["scores"] = scores
