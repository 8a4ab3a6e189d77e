"""Truncated, empty and mistyped media are told apart by the probe (issue 10 item 7, issue 14 item 6).

Every case is a tiny real file the test makes (PyAV, Pillow, the stdlib ``wave``), then cut; and
real files found on this machine (sounds, icons, the sample media that installed wheels ship) must
come through whole: a false ``truncated`` on a real file is the costly mistake."""

from __future__ import annotations

import functools
import io
import os
import re
import sys
import tarfile
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from curate.demo import synth
from operators.integrity import file_end, sniff
from operators.probe import Probe
from schemas.enums import ReasonCode, Status
from schemas.media_types import modality_of_ext
from schemas.record import from_table, new_media, new_record, to_table


def probe(path: Path | str, modality: str | None = None, params: dict[str, Any] | None = None, **media: Any):
    modality = modality or modality_of_ext(Path(path).suffix)
    row = new_record(source="t", locator=str(path), layout=modality, media=[new_media(modality, str(path), **media)])
    return from_table(Probe(params or {})(to_table([row])))[0]


def reason(out: dict[str, Any]) -> tuple[str, str | None]:
    return out["status"], out["status_reason"]


def cut(src: Path, dst: Path, keep: int | float) -> Path:
    """The first ``keep`` bytes of ``src`` (a fraction when a float), written to ``dst``."""
    data = src.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    dst.write_bytes(data[:n])
    return dst


def faststart(src: Path, dst: Path) -> Path:
    """Remux an MP4 with its index (moov box) at the front, as web video is shipped."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for pkt in inp.demux():
            if pkt.dts is None:
                continue
            pkt.stream = streams[pkt.stream.index]
            out.mux(pkt)
    return dst


def detail_seconds(detail: str) -> tuple[float, float]:
    """(stated, real) seconds from a truncated detail: 'the header says 3.000s, data ends at 1.250s'."""
    m = re.search(r"header says ([0-9.]+)s, (?:data ends at|the data holds) ([0-9.]+)s", detail)
    assert m, detail
    return float(m.group(1)), float(m.group(2))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    plain = synth.make_video(d / "plain.mp4", seconds=3.0, fps=12, audio=True)
    return {
        "plain_mp4": plain,
        "faststart_mp4": faststart(plain, d / "faststart.mp4"),
        "flac": synth.make_audio(d / "a.flac", seconds=3.0, sample_rate=16000),
        "wav": synth.make_audio(d / "a.wav", seconds=3.0, sample_rate=16000),
        "jpg": synth.make_image(d / "a.jpg", 160, 120),
        "png": synth.make_image(d / "a.png", 160, 120),
        "gif": synth.make_image(d / "a.gif", 64, 48),
        "webp": synth.make_image(d / "a.webp", 64, 48),
    }


# ----------------------------------------------------------------------------- video


def test_faststart_mp4_cut_in_half_is_truncated_with_both_ends_in_the_detail(media, tmp_path: Path) -> None:
    whole = probe(media["faststart_mp4"])
    assert reason(whole) == (Status.KEPT, None)
    assert whole["media"][0]["duration_s"] == pytest.approx(3.0)
    assert whole["scores"]["duration_s"] == pytest.approx(3.0)

    half = probe(cut(media["faststart_mp4"], tmp_path / "half.mp4", 0.5))
    assert reason(half) == (Status.QUARANTINED, ReasonCode.TRUNCATED)
    assert half["status_operator"] == "probe"
    stated, real = detail_seconds(half["status_detail"])
    assert stated == pytest.approx(3.0) and 0.5 < real < 2.0
    assert "mdat box" in half["status_detail"]


def test_mp4_with_its_index_at_the_end_cut_or_missing_its_last_byte(media, tmp_path: Path) -> None:
    half = probe(cut(media["plain_mp4"], tmp_path / "half.mp4", 0.5))
    assert reason(half) == (Status.QUARANTINED, ReasonCode.TRUNCATED)
    assert "cannot be opened" in half["status_detail"]
    for name in ("plain_mp4", "faststart_mp4"):
        last = probe(cut(media[name], tmp_path / f"{name}-1.mp4", -1))
        assert reason(last) == (Status.QUARANTINED, ReasonCode.TRUNCATED), name


def test_video_header_and_first_frame_modes_still_check_the_end(media, tmp_path: Path) -> None:
    half = cut(media["faststart_mp4"], tmp_path / "half.mp4", 0.5)
    assert reason(probe(half, params={"video_check": "header"}))[1] == ReasonCode.TRUNCATED
    # opting out keeps the old behaviour: the header's duration, unchecked
    unchecked = probe(half, params={"check_end": ["image", "audio"]})
    assert reason(unchecked) == (Status.KEPT, None)
    assert unchecked["media"][0]["duration_s"] == pytest.approx(3.0)


def _encode(path: Path, vcodec: str | None, acodec: str | None, sr: int = 48000) -> Path:
    for codec in filter(None, (vcodec, acodec)):
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - this FFmpeg build lacks the encoder
            pytest.skip(f"no {codec} encoder")
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=12) if vcodec else None
        st = out.add_stream(acodec, rate=sr) if acodec else None
        if st is not None:
            st.layout = "mono"
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
            base = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for i in range(36):
                frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
                frame.pts = i
                out.mux(vs.encode(frame))
            out.mux(vs.encode())
        if st is not None:
            n, size = 3 * sr, st.codec_context.frame_size or 1024
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
            fmt = st.codec_context.format.name
            scale = {"s16": (32767, np.int16), "s32": (2**31 - 1, np.int32)}.get(fmt[:3])
            for i in range(0, n, size):
                chunk = tone[i : i + size][None, :]
                if scale:
                    chunk = (chunk * scale[0]).astype(scale[1])
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
                out.mux(st.encode(frame))
            out.mux(st.encode())
    return path


@pytest.mark.parametrize(
    "name,vcodec,acodec",
    [
        ("vp8.webm", "libvpx", "libopus"),
        ("vp9.mkv", "libvpx-vp9", None),
        ("mpeg4.avi", "mpeg4", None),
        ("speech.opus.ogg", None, "libopus"),
        ("song.mp3", None, "libmp3lame"),
        ("tone.m4a", None, "aac"),
    ],
)
def test_other_containers_whole_and_cut_in_half(
    tmp_path: Path, name: str, vcodec: str | None, acodec: str | None
) -> None:
    path = _encode(tmp_path / name, vcodec, acodec)
    modality = "video" if vcodec else "audio"
    whole = probe(path, modality)
    assert reason(whole) == (Status.KEPT, None), whole["status_detail"]
    assert whole["media"][0]["duration_s"] == pytest.approx(3.0, abs=0.1)
    half = probe(cut(path, tmp_path / f"half-{name}", 0.5), modality)
    assert reason(half) == (Status.QUARANTINED, ReasonCode.TRUNCATED), half["status_detail"]


# ----------------------------------------------------------------------------- audio


def test_flac_cut_in_half_or_by_one_byte_is_truncated(media, tmp_path: Path) -> None:
    assert reason(probe(media["flac"])) == (Status.KEPT, None)
    half = probe(cut(media["flac"], tmp_path / "half.flac", 0.5))
    assert reason(half) == (Status.QUARANTINED, ReasonCode.TRUNCATED)
    stated, real = detail_seconds(half["status_detail"])
    assert stated == pytest.approx(3.0) and real < 2.0
    # FLAC states its exact sample count: a last frame that does not decode is a cut, however short
    assert reason(probe(cut(media["flac"], tmp_path / "last.flac", -1)))[1] == ReasonCode.TRUNCATED


def test_wav_whose_header_promises_more_data_than_it_holds(media, tmp_path: Path) -> None:
    assert reason(probe(media["wav"])) == (Status.KEPT, None)
    half = probe(cut(media["wav"], tmp_path / "half.wav", 0.5))
    assert reason(half) == (Status.QUARANTINED, ReasonCode.TRUNCATED)
    stated, real = detail_seconds(half["status_detail"])
    assert stated == pytest.approx(3.0) and real == pytest.approx(1.5, abs=0.01)
    assert "data chunk declares 96000 bytes" in half["status_detail"]


def test_streamed_wav_with_unknown_data_size_is_whole(tmp_path: Path) -> None:
    """A WAV written to a pipe says 0xFFFFFFFF for its data size: the data runs to the end of the file."""
    path = tmp_path / "streamed.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, dtype="<i2").tobytes())
    data = bytearray(path.read_bytes())
    i = data.index(b"data")
    data[i + 4 : i + 8] = b"\xff\xff\xff\xff"
    data[4:8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert reason(probe(path)) == (Status.KEPT, None)


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["jpg", "png", "gif", "webp"])
def test_images_missing_their_last_bytes_are_truncated(media, tmp_path: Path, name: str) -> None:
    assert reason(probe(media[name])) == (Status.KEPT, None)
    for keep in (-1, -2, 0.5):
        out = probe(cut(media[name], tmp_path / f"cut{keep}.{name}", keep))
        assert reason(out) == (Status.QUARANTINED, ReasonCode.TRUNCATED), (keep, out["status_detail"])
        if name != "webp":  # Pillow cannot even open a WebP cut short; the others keep their header's size
            assert (out["media"][0]["width"], out["media"][0]["height"]) == Image.open(media[name]).size


def test_png_without_iend_and_jpeg_without_eoi_say_so(media, tmp_path: Path) -> None:
    png = probe(cut(media["png"], tmp_path / "noiend.png", -12))
    assert reason(png)[1] == ReasonCode.TRUNCATED and "IEND" in png["status_detail"]
    jpg = probe(cut(media["jpg"], tmp_path / "noeoi.jpg", -2))
    assert reason(jpg)[1] == ReasonCode.TRUNCATED and "FFD9" in jpg["status_detail"]


def test_bytes_after_the_end_marker_are_not_a_truncation(media, tmp_path: Path) -> None:
    """Motion photos append a video after the JPEG's end marker; some writers pad PNGs after IEND."""
    motion = tmp_path / "motion.jpg"
    motion.write_bytes(media["jpg"].read_bytes() + media["faststart_mp4"].read_bytes()[:5000])
    padded = tmp_path / "padded.png"
    padded.write_bytes(media["png"].read_bytes() + b"\0" * 100)
    assert reason(probe(motion)) == (Status.KEPT, None)
    assert reason(probe(padded)) == (Status.KEPT, None)


def test_truncated_image_in_a_document_is_one_media_error(media, tmp_path: Path) -> None:
    broken = cut(media["jpg"], tmp_path / "broken.jpg", -1)
    row = new_record(
        source="t", locator="doc", layout="interleaved",
        media=[new_media("image", str(media["png"])), new_media("image", str(broken))],
    )  # fmt: skip
    out = from_table(Probe({})(to_table([row])))[0]
    assert out["status"] == Status.KEPT
    assert out["scores"]["media_errors"] == 1.0
    assert out["media"][1]["error_reason"] == ReasonCode.TRUNCATED


def test_truncated_tar_member(media, tmp_path: Path) -> None:
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(media["flac"], arcname="k.flac")
        tar.add(media["png"], arcname="k.png")
    with tarfile.open(shard) as tar:
        members = {m.name: m for m in tar.getmembers()}
    for name, modality in (("k.flac", "audio"), ("k.png", "image")):
        m = members[name]
        whole = probe(shard, modality, member=name, offset=m.offset_data, length=m.size)
        short = probe(shard, modality, member=name, offset=m.offset_data, length=m.size // 2)
        assert reason(whole) == (Status.KEPT, None), name
        assert reason(short) == (Status.QUARANTINED, ReasonCode.TRUNCATED), name


# ----------------------------------------------------------------------------- empty, wrong type, garbage


@pytest.mark.parametrize("name", ["empty.mp4", "empty.jpg", "empty.wav"])
def test_zero_byte_files_are_empty(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    out = probe(path)
    assert reason(out) == (Status.QUARANTINED, ReasonCode.EMPTY_FILE)
    assert "0 bytes" in out["status_detail"] and "Errno" not in out["status_detail"]


def test_content_of_another_modality_is_a_wrong_type_named_by_what_it_is(media, tmp_path: Path) -> None:
    png_as_mp4 = tmp_path / "clip.mp4"
    png_as_mp4.write_bytes(media["png"].read_bytes())
    out = probe(png_as_mp4)
    assert reason(out) == (Status.QUARANTINED, ReasonCode.WRONG_TYPE)
    assert "PNG" in out["status_detail"] and ".mp4" in out["status_detail"]

    wav_as_mp4 = tmp_path / "talk.mp4"
    wav_as_mp4.write_bytes(media["wav"].read_bytes())
    assert "WAV" in probe(wav_as_mp4)["status_detail"]

    html_as_jpg = tmp_path / "photo.jpg"
    html_as_jpg.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    out = probe(html_as_jpg)
    assert reason(out) == (Status.QUARANTINED, ReasonCode.WRONG_TYPE) and "HTML" in out["status_detail"]

    mp4_as_gif = tmp_path / "funny.gif"  # "gifv": a video under an image name
    mp4_as_gif.write_bytes(media["faststart_mp4"].read_bytes())
    assert reason(probe(mp4_as_gif)) == (Status.QUARANTINED, ReasonCode.WRONG_TYPE)

    # an MP4 holding only sound, listed as a video: the container is right, the content is audio
    m4a = _encode(tmp_path / "voice.m4a", None, "aac")
    m4a_as_mp4 = tmp_path / "voice.mp4"
    m4a_as_mp4.write_bytes(m4a.read_bytes())
    out = probe(m4a_as_mp4)
    assert reason(out) == (Status.QUARANTINED, ReasonCode.WRONG_TYPE) and "audio only" in out["status_detail"]


def test_another_format_of_the_same_modality_is_fine(media, tmp_path: Path) -> None:
    png_as_jpg = tmp_path / "really_png.jpg"
    png_as_jpg.write_bytes(media["png"].read_bytes())
    out = probe(png_as_jpg)
    assert reason(out) == (Status.KEPT, None) and out["media"][0]["format"] == "png"
    flac_as_wav = tmp_path / "really_flac.wav"
    flac_as_wav.write_bytes(media["flac"].read_bytes())
    assert reason(probe(flac_as_wav)) == (Status.KEPT, None)
    # the sniff can be switched off
    png_as_mp4 = tmp_path / "clip.mp4"
    png_as_mp4.write_bytes(media["png"].read_bytes())
    assert reason(probe(png_as_mp4, params={"check_type": False}))[1] != ReasonCode.WRONG_TYPE


@pytest.mark.parametrize("name", ["noise.mp4", "noise.wav", "noise.jpg", "noise.flac"])
def test_random_bytes_are_corrupt(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert reason(probe(path)) == (Status.QUARANTINED, ReasonCode.CORRUPT_MEDIA)
    assert sniff(path.read_bytes()) is None


def test_sniff_names_the_common_types(media) -> None:
    names = {k: sniff(p.read_bytes()[:8192]) for k, p in media.items()}
    assert {k: v.name for k, v in names.items() if v} == {
        "plain_mp4": "MP4", "faststart_mp4": "MP4", "flac": "FLAC", "wav": "WAV",
        "jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WebP",
    }  # fmt: skip
    for whole in media.values():
        with open(whole, "rb") as f:
            assert file_end(f, sniff(f.read(8192)), whole.stat().st_size) is None, whole


# ----------------------------------------------------------------------------- real files: no false alarm


@functools.cache
def _files_on_this_machine() -> tuple[Path, ...]:
    roots = ["/usr/share/sounds", "/usr/share/asterisk/sounds", "/usr/share/lmms/samples", "/usr/share/games",
             "/usr/share/icons", "/usr/share/pixmaps", os.path.join(os.path.dirname(os.__file__), "test")]  # fmt: skip
    roots += [os.path.join(p, sub) for p in sys.path if p.endswith("site-packages")
              for sub in ("matplotlib/mpl-data", "sklearn/datasets", "scipy/io", "IPython", "skimage/data")]  # fmt: skip
    found: list[Path] = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            found += [Path(dirpath) / f for f in sorted(files)]
    # scipy's and the standard library's tests include deliberately broken files, named as such
    return tuple(sorted(p for p in found if not re.search(r"eof|incomplete|truncat|corrupt|broken", p.name, re.I)))


def _real_files(exts: tuple[str, ...], limit: int) -> list[Path]:
    """Media this machine already has: system sounds and icons, the sample data that the standard
    library and installed wheels ship. Spread over folders, bounded in number."""
    found = [p for p in _files_on_this_machine() if p.suffix.lower() in exts]
    found = [p for p in found if p.is_file() and not p.is_symlink() and p.stat().st_size > 0]
    by_ext: dict[str, list[Path]] = {}
    for p in found:
        by_ext.setdefault(p.suffix.lower(), []).append(p)
    share = max(1, limit // max(1, len(by_ext)))  # every format gets its share, spread over its folders
    return [p for group in by_ext.values() for p in group[:: max(1, len(group) // share)][:share]]


def _readable_without_the_check(path: Path) -> bool:
    return reason(probe(path, params={"check_end": [], "check_type": False}))[0] == Status.KEPT


def _assert_whole(paths: list[Path]) -> None:
    readable = [p for p in paths if _readable_without_the_check(p)]
    if not readable:
        pytest.skip("no real media files readable on this machine")
    outs = {str(p): probe(p) for p in readable}
    false = {p: out["status_detail"] for p, out in outs.items() if out["status"] != Status.KEPT}
    assert not false, false


def test_real_sounds_on_this_machine_are_not_called_truncated() -> None:
    paths = _real_files((".wav", ".ogg", ".flac", ".mp3", ".aiff", ".aif", ".au", ".opus", ".m4a"), 80)
    if not paths:
        pytest.skip("no sound files on this machine")
    _assert_whole(paths)


def test_real_images_on_this_machine_are_not_called_truncated() -> None:
    paths = _real_files((".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ico"), 80)
    if not paths:
        pytest.skip("no image files on this machine")
    _assert_whole(paths)


def test_real_sounds_cut_in_half_are_caught() -> None:
    """The other side of the same files: cut, the ones whose header states a length are truncated."""
    paths = [p for p in _real_files((".wav", ".flac", ".aiff", ".aif"), 20) if _readable_without_the_check(p)]
    if not paths:
        pytest.skip("no sound files on this machine")
    for p in paths:
        data = p.read_bytes()
        half = io.BytesIO(data[: len(data) // 2])
        assert file_end(half, sniff(data[:8192]), len(data) // 2) is not None or p.suffix == ".flac", p
