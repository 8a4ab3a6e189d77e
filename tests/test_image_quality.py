"""image_quality: sharpness, entropy, blank, resolution tiers and aspect buckets on generated images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFilter
from pydantic import ValidationError

from curate.demo import synth
from operators.image.quality import ImageQuality, aspect_bucket, gray_thumbnail, resolution_tier
from operators.registry import OPERATORS
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def rec(*paths: Path | str, roles: list[str] | None = None) -> dict[str, Any]:
    media = [new_media("image", str(p), role=(roles or ["input"] * len(paths))[i]) for i, p in enumerate(paths)]
    return new_record(source="t", locator=str(paths[0]), layout="image", media=media, id="r0")


def run(rows: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return from_table(ImageQuality(params or {})(to_table(rows)))


def score(path: Path | str, params: dict[str, Any] | None = None) -> dict[str, float]:
    [row] = run([rec(path)], params)
    assert row["status"] == Status.KEPT, row["status_detail"]
    return row["scores"]


def test_registered_and_params() -> None:
    assert OPERATORS["image_quality"] is ImageQuality
    for key in ("sharpness", "entropy", "blank", "resolution_tier", "aspect_bucket"):
        assert ImageQuality.writes[key]
    with pytest.raises(ValidationError):
        ImageQuality({"tiers": [512, 256]})
    with pytest.raises(ValidationError):
        ImageQuality({"aspect_ratios": [0.0, 1.0]})


def test_blurred_image_is_less_sharp(tmp_path: Path) -> None:
    sharp = synth.make_image(tmp_path / "sharp.png", 320, 240, pattern="shapes", seed=3)
    with Image.open(sharp) as im:
        im.filter(ImageFilter.GaussianBlur(3)).save(tmp_path / "blur.png")
    s, b = score(sharp), score(tmp_path / "blur.png")
    assert b["sharpness"] < s["sharpness"] / 4
    assert s["blank"] == b["blank"] == 0.0


def test_uniform_image_is_blank_and_noise_is_not(tmp_path: Path) -> None:
    Image.new("RGB", (200, 100), (90, 140, 200)).save(tmp_path / "flat.jpg", quality=95)
    flat = score(tmp_path / "flat.jpg")
    assert (flat["blank"], flat["entropy"], flat["sharpness"]) == (1.0, 0.0, 0.0)
    noise = score(synth.make_image(tmp_path / "noise.jpg", 200, 100))
    assert noise["blank"] == 0.0 and noise["entropy"] > 5.0


@pytest.mark.parametrize(
    "size,tier,bucket",
    [
        ((100, 80), 0, 3),  # 1.25 -> 4:3
        ((300, 255), 0, 3),
        ((256, 256), 256, 2),
        ((640, 360), 256, 4),  # 16:9
        ((360, 640), 256, 0),  # 9:16
        ((511, 700), 256, 1),  # 0.73 -> 3:4
        ((512, 512), 512, 2),
        ((1100, 1024), 1024, 2),
    ],
)
def test_resolution_tier_and_aspect_bucket(tmp_path: Path, size: tuple[int, int], tier: int, bucket: int) -> None:
    path = synth.make_image(tmp_path / "a.png", *size, pattern="gradient")
    s = score(path)
    assert (s["resolution_tier"], s["aspect_bucket"]) == (float(tier), float(bucket))


def test_tier_and_bucket_helpers() -> None:
    assert [resolution_tier(m, [256, 512]) for m in (0, 255, 256, 511, 512, 5000)] == [0, 0, 256, 256, 512, 512]
    ratios = [0.5, 1.0, 2.0]
    assert [aspect_bucket(w, h, ratios) for w, h in ((100, 200), (100, 100), (300, 100), (141, 100))] == [0, 1, 2, 1]
    assert aspect_bucket(142, 100, ratios) == 2  # log scale: sqrt(2) is the midpoint of 1 and 2


def test_exif_rotation_turns_the_aspect(tmp_path: Path) -> None:
    img = synth.make_image(tmp_path / "r.png", 640, 360)
    with Image.open(img) as im:
        exif = im.getexif()
        exif[0x0112] = 6
        im.convert("RGB").save(tmp_path / "r.jpg", exif=exif)
    assert score(tmp_path / "r.jpg")["aspect_bucket"] == 0.0


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    big = synth.make_image(tmp_path / "big.jpg", 3200, 2400, pattern="gradient")
    gray, size = gray_thumbnail(new_media("image", str(big)), 256)
    assert size == (3200, 2400)
    assert max(gray.shape) == 256 and gray.shape == (192, 256)
    assert score(big)["resolution_tier"] == 1024.0


def test_several_images_worst_case_and_keyframes_skipped(tmp_path: Path) -> None:
    sharp = synth.make_image(tmp_path / "a.png", 600, 300, pattern="shapes")
    Image.new("RGB", (300, 300), "gray").save(tmp_path / "flat.png")
    both = run([rec(sharp, tmp_path / "flat.png")])[0]["scores"]
    assert (both["blank"], both["entropy"], both["resolution_tier"], both["aspect_bucket"]) == (1.0, 0.0, 256.0, 4.0)
    skipped = run([rec(sharp, tmp_path / "flat.png", roles=["input", "keyframe"])])[0]["scores"]
    assert skipped["blank"] == 0.0


def test_broken_images_are_quarantined(tmp_path: Path) -> None:
    good = synth.make_image(tmp_path / "good.jpg", 320, 240)
    cut = synth.make_corrupt(tmp_path / "cut.jpg", "truncated", source=good)
    out = run([rec(cut), rec(tmp_path / "missing.png")])
    assert [(r["status"], r["status_reason"]) for r in out] == [
        (Status.QUARANTINED, ReasonCode.CORRUPT_MEDIA),
        (Status.QUARANTINED, ReasonCode.MISSING_FILE),
    ]


def test_rows_without_images_are_untouched() -> None:
    row = new_record(source="t", locator="x", layout="text", text="hello", id="t0")
    assert run([row])[0]["scores"] == {}
