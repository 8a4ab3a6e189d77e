"""The probe operator on tiny real media made by curate.demo.synth."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import operators.probe as probe_mod
from curate.demo import synth
from operators.probe import Probe
from operators.registry import OPERATORS
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def run(rows: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    op = Probe(params or {})
    return from_table(op(to_table(rows)))


def rec(layout: str, *media: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return new_record(source="t", locator=f"loc-{layout}", layout=layout, media=list(media), **fields)


def one(layout: str, modality: str, path: Path | str, params: dict[str, Any] | None = None, **fields: Any):
    return run([rec(layout, new_media(modality, str(path)), **fields)], params)[0]


def test_registered_with_documented_scores() -> None:
    assert OPERATORS["probe"] is Probe
    for key in ("min_side", "pixels", "duration_s", "sample_rate", "has_audio", "text_words", "media_errors"):
        assert Probe.writes[key]
    with pytest.raises(ValidationError):
        Probe({"image_check": "full"})
    with pytest.raises(ValidationError):
        Probe({"unknown": 1})
    with pytest.raises(ValidationError):
        Probe({"check_end": ["text"]})
    with pytest.raises(ValidationError):
        Probe({"end_tolerance_s": -1})
    assert Probe({}).params.check_end == ["image", "video", "audio"]


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp")])
def test_image_metadata_and_scores(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = synth.make_image(tmp_path / f"a{suffix}", 120, 40)
    out = one("image-text", "image", path, caption="A red bicycle leans on a wall.")
    assert out["status"] == Status.KEPT
    m = out["media"][0]
    assert (m["format"], m["width"], m["height"], m["bytes"]) == (fmt, 120, 40, path.stat().st_size)
    s = out["scores"]
    assert (s["min_side"], s["max_side"], s["pixels"], s["aspect_ratio"]) == (40.0, 120.0, 4800.0, 3.0)
    assert (s["num_images"], s["num_videos"], s["num_audio"], s["media_errors"]) == (1.0, 0.0, 0.0, 0.0)
    assert (s["text_chars"], s["text_words"]) == (30.0, 7.0)
    assert s["bytes"] == float(path.stat().st_size)
    assert "duration_s" not in s and "sample_rate" not in s and "has_audio" not in s


def test_several_images_take_the_worst_case(tmp_path: Path) -> None:
    a = synth.make_image(tmp_path / "a.png", 100, 80)
    b = synth.make_image(tmp_path / "b.png", 30, 90)
    out = run([rec("multi-image-text", new_media("image", str(a)), new_media("image", str(b)))])[0]
    s = out["scores"]
    assert (s["min_side"], s["max_side"], s["pixels"], s["num_images"]) == (30.0, 100.0, 2700.0, 2.0)
    assert s["aspect_ratio"] == pytest.approx(30 / 90)


def test_exif_rotation_swaps_width_and_height(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "rot.jpg"
    img = Image.new("RGB", (80, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(path, exif=exif)
    m = one("image", "image", path)["media"][0]
    assert (m["width"], m["height"]) == (20, 80)


@pytest.mark.parametrize("audio", [True, False])
def test_video_metadata(tmp_path: Path, audio: bool) -> None:
    path = synth.make_video(tmp_path / "v.mp4", seconds=1.5, fps=12, width=64, height=48, audio=audio)
    out = one("video-text", "video", path, caption="A dog runs.")
    assert out["status"] == Status.KEPT, out["status_detail"]
    m = out["media"][0]
    assert (m["format"], m["width"], m["height"], m["num_frames"]) == ("mp4", 64, 48, 18)
    assert m["codec"] == synth.video_codec().replace("lib", "").replace("x264", "h264")
    assert m["duration_s"] == pytest.approx(1.5)
    assert m["fps"] == pytest.approx(12.0)
    assert m["has_audio"] is audio
    assert m["audio_codec"] == ("aac" if audio else None)
    assert m["sample_rate"] == (16000 if audio else None)
    s = out["scores"]
    assert s["has_audio"] == (1.0 if audio else 0.0)
    assert (s["num_videos"], s["min_side"], s["fps"]) == (1.0, 48.0, 12.0)
    assert s["duration_s"] == pytest.approx(1.5)
    assert "sample_rate" not in s


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_audio_metadata(tmp_path: Path, suffix: str) -> None:
    path = synth.make_audio(tmp_path / f"a{suffix}", seconds=2.0, sample_rate=8000, channels=2, kind="speechlike")
    out = one("audio-text", "audio", path, transcript="hello there")
    assert out["status"] == Status.KEPT, out["status_detail"]
    m = out["media"][0]
    assert (m["format"], m["sample_rate"], m["channels"]) == (suffix[1:], 8000, 2)
    assert m["codec"] == ("pcm_s16le" if suffix == ".wav" else "flac")
    assert m["duration_s"] == pytest.approx(2.0)
    s = out["scores"]
    assert (s["sample_rate"], s["channels"], s["num_audio"]) == (8000.0, 2.0, 1.0)
    assert s["duration_s"] == pytest.approx(2.0)
    assert "min_side" not in s and "has_audio" not in s and "fps" not in s


def test_durations_add_up_over_video_and_audio(tmp_path: Path) -> None:
    v = synth.make_video(tmp_path / "v.mp4", seconds=1.0)
    a = synth.make_audio(tmp_path / "a.wav", seconds=2.0)
    out = run([rec("video", new_media("video", str(v)), new_media("audio", str(a)))])[0]
    assert out["scores"]["duration_s"] == pytest.approx(3.0)


def test_truncated_jpeg_is_quarantined_as_truncated(tmp_path: Path) -> None:
    good = synth.make_image(tmp_path / "good.jpg", 320, 240)
    cut = synth.make_corrupt(tmp_path / "cut.jpg", "truncated", source=good)
    out = one("image-text", "image", cut, caption="x")
    assert out["status"] == Status.QUARANTINED
    assert out["status_reason"] == ReasonCode.TRUNCATED
    assert out["status_operator"] == "probe"
    assert out["status_detail"].startswith(f"{cut}: ")
    assert "FFD9" in out["status_detail"]
    # without the end check, the decode still notices that the pixels run out
    decoded = one("image-text", "image", cut, {"check_end": ["video", "audio"]}, caption="x")
    assert decoded["status_reason"] == ReasonCode.TRUNCATED
    assert "pixel data stops" in decoded["status_detail"]


def test_header_mode_does_not_decode(tmp_path: Path) -> None:
    good = synth.make_image(tmp_path / "good.jpg", 320, 240)
    cut = synth.make_corrupt(tmp_path / "cut.jpg", "truncated", source=good)
    out = one("image", "image", cut, {"image_check": "header", "check_end": []})
    assert out["status"] == Status.KEPT
    assert (out["media"][0]["width"], out["media"][0]["height"]) == (320, 240)
    # the end check reads bytes, not pixels: it runs in header mode too
    ended = one("image", "image", cut, {"image_check": "header"})
    assert ended["status_reason"] == ReasonCode.TRUNCATED
    assert (ended["media"][0]["width"], ended["media"][0]["height"]) == (320, 240)


def _scramble_mdat(path: Path) -> Path:
    """Keep the mp4 header (the moov box) intact but overwrite the start of the media data."""
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4
    data[start : start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_video_header_mode_reads_metadata_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _scramble_mdat(synth.make_video(tmp_path / "v.mp4", seconds=1.0, audio=True))
    header = one("video", "video", path, {"video_check": "header"})
    assert header["status"] == Status.KEPT
    assert header["scores"]["duration_s"] == pytest.approx(1.0)
    decoded = one("video", "video", path, {"video_check": "first_frame"})
    assert decoded["status"] == Status.QUARANTINED
    assert decoded["status_reason"] == ReasonCode.CORRUPT_MEDIA

    calls: list[str] = []
    real = probe_mod._decode_first_frame

    def spy(container: Any, stream: Any) -> None:
        calls.append(stream.type)
        real(container, stream)

    monkeypatch.setattr(probe_mod, "_decode_first_frame", spy)
    good = synth.make_video(tmp_path / "good.mp4", seconds=1.0)
    audio = synth.make_audio(tmp_path / "a.wav")
    one("video", "video", good, {"video_check": "header"})
    one("audio", "audio", audio, {"audio_check": "header"})
    assert calls == []
    one("video", "video", good)
    one("audio", "audio", audio)
    assert calls == ["video", "audio"]


def test_garbage_video_and_audio_are_quarantined(tmp_path: Path) -> None:
    for modality, name in (("video", "g.mp4"), ("audio", "g.wav")):
        garbage = synth.make_corrupt(tmp_path / name, "garbage")
        out = one(modality, modality, garbage)
        assert out["status"] == Status.QUARANTINED
        assert out["status_reason"] == ReasonCode.CORRUPT_MEDIA
        assert out["status_detail"].startswith(str(garbage))


def test_garbage_png_is_corrupt(tmp_path: Path) -> None:
    out = one("image", "image", synth.make_corrupt(tmp_path / "g.png", "garbage"))
    assert out["status_reason"] == ReasonCode.CORRUPT_MEDIA


def test_missing_file_is_quarantined_as_missing(tmp_path: Path) -> None:
    out = one("image-text", "image", tmp_path / "nope.jpg", caption="x")
    assert out["status"] == Status.QUARANTINED
    assert out["status_reason"] == ReasonCode.MISSING_FILE
    assert "nope.jpg" in out["status_detail"]


def test_interleaved_record_keeps_going_with_one_missing_image(tmp_path: Path) -> None:
    ok = synth.make_image(tmp_path / "ok.jpg", 80, 60)
    row = rec(
        "interleaved",
        new_media("image", str(ok)),
        new_media("image", str(tmp_path / "gone.jpg")),
        interleaved=[
            {"kind": "text", "text": "First paragraph here.", "media_index": None},
            {"kind": "media", "text": None, "media_index": 0},
            {"kind": "text", "text": "Second one.", "media_index": None},
            {"kind": "media", "text": None, "media_index": 1},
        ],
    )
    out = run([row])[0]
    assert out["status"] == Status.KEPT
    good, gone = out["media"]
    assert good["error"] is None and good["width"] == 80
    assert gone["error"].startswith("missing_file")
    s = out["scores"]
    assert (s["media_errors"], s["num_images"], s["min_side"]) == (1.0, 1.0, 60.0)
    assert (s["text_chars"], s["text_words"]) == (32.0, 5.0)


def test_media_already_marked_by_ingest(tmp_path: Path) -> None:
    ok = synth.make_image(tmp_path / "ok.png", 50, 50)
    pre = new_media("image", str(tmp_path / "x.png"), error="missing_file: not in archive", error_reason="missing_file")
    kept = run([rec("interleaved", new_media("image", str(ok)), dict(pre))])[0]
    assert kept["status"] == Status.KEPT
    assert kept["scores"]["media_errors"] == 1.0
    assert kept["media"][1]["error"] == "missing_file: not in archive"
    dropped = run([rec("preference", new_media("image", str(ok)), dict(pre))])[0]
    assert dropped["status"] == Status.QUARANTINED
    assert dropped["status_reason"] == ReasonCode.MISSING_FILE


def test_tar_member_is_probed_through_open_media(tmp_path: Path) -> None:
    img = synth.make_image(tmp_path / "x.png", 33, 21)
    wav = synth.make_audio(tmp_path / "x.wav", seconds=0.5, sample_rate=16000)
    tar_path = tmp_path / "shard.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(img, arcname="k1.png")
        tar.add(wav, arcname="k1.wav")
    refs = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            modality = "image" if member.name.endswith(".png") else "audio"
            refs.append(
                new_media(modality, str(tar_path), member=member.name, offset=member.offset_data, length=member.size)
            )
    out = run([rec("image", refs[0]), rec("audio", refs[1])])
    assert [r["status"] for r in out] == [Status.KEPT, Status.KEPT]
    m_img, m_wav = out[0]["media"][0], out[1]["media"][0]
    assert (m_img["width"], m_img["height"], m_img["bytes"]) == (33, 21, img.stat().st_size)
    assert (m_wav["format"], m_wav["sample_rate"]) == ("wav", 16000)
    assert m_wav["duration_s"] == pytest.approx(0.5)


def test_text_only_rows_and_existing_scores(tmp_path: Path) -> None:
    row = new_record(
        source="t",
        locator="l",
        layout="text",
        text="one two three",
        conversation=[{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello you"}],
        scores={"lang_score": 0.5},
    )
    s = run([row])[0]["scores"]
    assert s == {
        "lang_score": 0.5,
        "num_images": 0.0,
        "num_videos": 0.0,
        "num_audio": 0.0,
        "text_chars": 24.0,
        "text_words": 6.0,
        "media_errors": 0.0,
    }


def test_rows_not_kept_are_left_alone(tmp_path: Path) -> None:
    row = rec("image", new_media("image", str(tmp_path / "missing.png")))
    row.update(status="dropped", status_operator="earlier", status_reason="below_min")
    out = run([row])[0]
    assert (out["status"], out["status_operator"], out["scores"]) == ("dropped", "earlier", {})


SVG = """<?xml version="1.0" encoding="UTF-8"?>
<!-- a diagram as documentation sites ship them -->
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}pt" viewBox="0 0 300 150">
<rect x="10" y="10" width="120" height="60" fill="none" stroke="black"/>
<text x="20" y="50" font-family="Times,serif" font-size="24">ptr</text>
</svg>"""


def test_svg_images_are_rasterised_with_their_text(tmp_path: Path) -> None:
    from operators.media_io import open_image

    path = tmp_path / "diagram.svg"
    path.write_text(SVG.format(w=300, h=112.5))  # 112.5 pt = 150 px
    out = one("image-text", "image", path, {"image_check": "decode"}, caption="A pointer diagram.")
    assert out["status"] == Status.KEPT
    assert (out["media"][0]["format"], out["media"][0]["width"], out["media"][0]["height"]) == ("svg", 300, 150)
    with open(path, "rb") as f, open_image(f) as im:
        px = np.asarray(im.convert("L"))
    # white page, the box's outline, and the label drawn (fonts come with the package)
    assert px[0, 0] == 255 and px[10, 70] < 128
    assert (px[30:60, 20:70] < 128).sum() > 40
    # a huge declared size is drawn at most SVG_MAX_SIDE on its longest side
    path.write_text(SVG.format(w=100000, h=37500))
    with open(path, "rb") as f, open_image(f) as im:
        assert im.size == (4096, 2048)
    # broken markup is corrupt media, with the renderer's reason
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect')
    out = one("image-text", "image", path, caption="x")
    assert out["status"] == Status.QUARANTINED and out["status_reason"] == ReasonCode.CORRUPT_MEDIA
    assert "SVG" in out["status_detail"]
