"""image_transform: resized, re-encoded copies in the artifacts folder; the original kept in meta."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from curate.demo import synth
from operators.base import StageContext
from operators.image.transform import ImageTransform, ImageTransformParams, target_size
from operators.registry import OPERATORS
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def rec(*paths: Path | str, rid: str = "abc123", roles: list[str] | None = None) -> dict[str, Any]:
    media = [new_media("image", str(p), role=(roles or ["input"] * len(paths))[i]) for i, p in enumerate(paths)]
    return new_record(source="t", locator=str(paths[0]), layout="image", media=media, id=rid, scores={"min_side": 1.0})


def run(rows: list[dict[str, Any]], art: Path, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    op = ImageTransform(params or {}, StageContext("image_transform", artifacts_dir=str(art)))
    return from_table(op(to_table(rows)))


def test_registered_and_params() -> None:
    assert OPERATORS["image_transform"] is ImageTransform
    assert ImageTransform.writes["transform_scale"]
    with pytest.raises(ValidationError):
        ImageTransform({"format": "gif"})
    with pytest.raises(ValidationError):
        ImageTransform({"mode": "min_side", "size": None})


def test_target_sizes() -> None:
    def size(w: int, h: int, **kw: Any) -> tuple[int, int]:
        return target_size(w, h, ImageTransformParams(**kw))

    assert size(800, 600, mode="max_side", size=400) == (400, 300)
    assert size(300, 200, mode="max_side", size=400) == (300, 200)  # never upscaled...
    assert size(300, 200, mode="max_side", size=400, upscale=True) == (400, 267)  # ...unless asked
    assert size(800, 600, mode="min_side", size=300) == (400, 300)
    assert size(700, 500, mode="tier") == (358, 256)
    assert size(500, 1100, mode="tier") == (256, 563)
    assert size(1500, 1024, mode="tier") == (1500, 1024)
    assert size(200, 100, mode="tier") == (200, 100)
    assert size(200, 100, mode="tier", upscale=True) == (512, 256)


def test_resize_and_reencode_keeps_the_original_in_meta(tmp_path: Path) -> None:
    src = synth.make_image(tmp_path / "a.png", 800, 600)
    [row] = run([rec(src)], tmp_path / "art", {"mode": "max_side", "size": 400, "format": "webp", "quality": 80})
    assert row["status"] == Status.KEPT
    m = row["media"][0]
    path = Path(m["uri"])
    assert path == tmp_path / "art" / "ab" / "abc123_m0.webp"
    with Image.open(path) as im:
        assert (im.format, im.size) == ("WEBP", (400, 300))
    assert (m["format"], m["width"], m["height"], m["role"]) == ("webp", 400, 300, "input")
    data = path.read_bytes()
    assert (m["bytes"], m["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    [orig] = json.loads(row["meta"])["original_media"]
    assert (orig["media_index"], orig["uri"]) == (0, str(src))
    s = row["scores"]
    assert (s["transform_scale"], s["min_side"], s["max_side"], s["pixels"]) == (0.5, 300.0, 400.0, 120000.0)
    assert not [p for p in (tmp_path / "art").rglob(".*")]  # no temporary files left


def test_tier_mode_snaps_the_short_side(tmp_path: Path) -> None:
    src = synth.make_image(tmp_path / "a.jpg", 700, 520)
    [row] = run([rec(src)], tmp_path / "art", {"mode": "tier", "tiers": [256, 512]})
    assert (row["media"][0]["width"], row["media"][0]["height"]) == (689, 512)
    with Image.open(row["media"][0]["uri"]) as im:
        assert im.size == (689, 512) and im.format == "JPEG"


def test_if_needed_keeps_a_file_already_in_shape(tmp_path: Path) -> None:
    src = synth.make_image(tmp_path / "small.jpg", 200, 100)
    [kept] = run([rec(src)], tmp_path / "art", {"size": 1024})
    assert kept["media"][0]["uri"] == str(src)
    assert kept["meta"] is None and kept["scores"]["transform_scale"] == 1.0
    assert not (tmp_path / "art").exists()
    [again] = run([rec(src)], tmp_path / "art", {"size": 1024, "reencode": "always"})
    assert again["media"][0]["uri"] != str(src) and Path(again["media"][0]["uri"]).is_file()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (80, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif)
    [row] = run([rec(tmp_path / "rot.jpg")], tmp_path / "art", {"size": 40})
    m = row["media"][0]
    assert (m["width"], m["height"]) == (10, 40)
    with Image.open(m["uri"]) as im:
        assert im.size == (10, 40) and im.getexif().get(0x0112, 1) == 1


def test_transparency_is_flattened_for_jpeg_and_kept_for_png(tmp_path: Path) -> None:
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    [jpeg] = run([rec(tmp_path / "clear.png")], tmp_path / "j", {"format": "jpeg"})
    with Image.open(jpeg["media"][0]["uri"]) as im:
        assert im.mode == "RGB" and im.getpixel((5, 5)) == (255, 255, 255)
    [png] = run([rec(tmp_path / "clear.png")], tmp_path / "p", {"format": "png", "reencode": "always"})
    with Image.open(png["media"][0]["uri"]) as im:
        assert im.mode == "RGBA" and im.getpixel((5, 5))[3] == 0


def test_rerun_overwrites_the_same_file_with_the_same_bytes(tmp_path: Path) -> None:
    src = synth.make_image(tmp_path / "a.png", 640, 480)
    first = run([rec(src)], tmp_path / "art", {"size": 320})[0]["media"][0]
    second = run([rec(src)], tmp_path / "art", {"size": 320})[0]["media"][0]
    assert (first["uri"], first["sha256"]) == (second["uri"], second["sha256"])
    assert len([p for p in (tmp_path / "art").rglob("*") if p.is_file()]) == 1


def test_keyframes_are_left_alone_and_broken_images_quarantined(tmp_path: Path) -> None:
    a = synth.make_image(tmp_path / "a.png", 640, 480)
    k = synth.make_image(tmp_path / "k.png", 640, 480, seed=1)
    [row] = run([rec(a, k, roles=["input", "keyframe"])], tmp_path / "art", {"size": 320})
    assert row["media"][1]["uri"] == str(k) and row["media"][0]["width"] == 320
    bad = synth.make_corrupt(tmp_path / "bad.png", "garbage")
    out = run([rec(bad, rid="b1"), rec(tmp_path / "gone.jpg", rid="b2")], tmp_path / "art")
    assert [(r["status"], r["status_reason"]) for r in out] == [
        (Status.QUARANTINED, ReasonCode.CORRUPT_MEDIA),
        (Status.QUARANTINED, ReasonCode.MISSING_FILE),
    ]


def test_svg_is_rasterised_into_the_shard_format(tmp_path: Path) -> None:
    svg = tmp_path / "d.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="800" height="400"><rect x="0" y="0" width="400" height="400" fill="black"/></svg>')
    (out,) = run([rec(svg)], tmp_path / "art", {"mode": "max_side", "size": 400, "format": "png"})
    assert out["status"] == Status.KEPT
    m = out["media"][0]
    assert (m["format"], m["width"], m["height"]) == ("png", 400, 200)
    with Image.open(m["uri"]) as im:
        left, right = im.convert("L").getpixel((50, 100)), im.convert("L").getpixel((350, 100))
    assert left < 10 and right > 245  # the drawing on a white page
    assert json.loads(out["meta"])["original_media"][0]["uri"] == str(svg)
