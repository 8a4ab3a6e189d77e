"""The media generators write real files that Pillow and PyAV read back with the asked properties."""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import av
import pytest
from PIL import Image

from curate.demo import synth


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP")])
@pytest.mark.parametrize("pattern", ["noise", "gradient", "shapes"])
def test_make_image_size_and_format(tmp_path: Path, suffix: str, fmt: str, pattern: str) -> None:
    path = synth.make_image(tmp_path / f"a{suffix}", 70, 30, seed=1, pattern=pattern)
    with Image.open(path) as im:
        im.load()
        assert (im.format, im.size) == (fmt, (70, 30))


def test_make_image_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = synth.make_image(tmp_path / "a.png", 40, 30, seed=5).read_bytes()
    b = synth.make_image(tmp_path / "b.png", 40, 30, seed=5).read_bytes()
    c = synth.make_image(tmp_path / "c.png", 40, 30, seed=6).read_bytes()
    assert a == b
    assert a != c


def test_make_image_rejects_unknown_suffix_and_pattern(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        synth.make_image(tmp_path / "a.xyz", 10, 10)
    with pytest.raises(ValueError, match="pattern"):
        synth.make_image(tmp_path / "a.png", 10, 10, pattern="stripes")


@pytest.mark.parametrize("audio", [False, True])
def test_make_video_duration_frames_and_audio(tmp_path: Path, audio: bool) -> None:
    path = synth.make_video(tmp_path / "v.mp4", seconds=1.5, fps=10, width=64, height=48, audio=audio)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (64, 48)
        assert vs.frames == 15
        assert float(vs.duration * vs.time_base) == pytest.approx(1.5)
        assert bool(c.streams.audio) is audio
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 15


def test_make_video_static_frames_are_identical(tmp_path: Path) -> None:
    path = synth.make_video(tmp_path / "s.mp4", seconds=1.0, fps=4, moving=False, codec="mpeg4")
    with av.open(str(path)) as c:
        digests = {hashlib.md5(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)}
    moving = synth.make_video(tmp_path / "m.mp4", seconds=1.0, fps=4, codec="mpeg4")
    with av.open(str(moving)) as c:
        moving_digests = {hashlib.md5(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)}
    assert len(digests) == 1
    assert len(moving_digests) == 4


def test_video_codec_is_an_available_encoder() -> None:
    assert synth.video_codec() in ("libx264", "mpeg4")


@pytest.mark.parametrize("kind", ["tone", "noise", "speechlike", "silence"])
def test_make_audio_wav(tmp_path: Path, kind: str) -> None:
    path = synth.make_audio(tmp_path / "a.wav", seconds=1.25, sample_rate=8000, channels=2, kind=kind)
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 2, 10000)


def test_make_audio_flac_through_pyav(tmp_path: Path) -> None:
    path = synth.make_audio(tmp_path / "a.flac", seconds=2.0, sample_rate=16000, kind="speechlike")
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        assert (st.codec_context.name, st.sample_rate, st.channels) == ("flac", 16000, 1)
        assert c.duration / 1_000_000 == pytest.approx(2.0)


def test_make_corrupt(tmp_path: Path) -> None:
    source = synth.make_image(tmp_path / "a.jpg", 64, 64)
    cut = synth.make_corrupt(tmp_path / "cut.jpg", "truncated", source=source)
    assert cut.stat().st_size == int(source.stat().st_size * 0.4)
    assert source.read_bytes().startswith(cut.read_bytes())
    garbage = synth.make_corrupt(tmp_path / "g.png", "garbage")
    with pytest.raises(OSError), Image.open(garbage):
        pass
    with pytest.raises(ValueError):
        synth.make_corrupt(tmp_path / "x.jpg", "truncated")


def test_make_html_doc(tmp_path: Path) -> None:
    path = synth.make_html_doc(
        tmp_path / "d.html", images=["img/a.jpg", "img/b.png"], paragraphs=["One & two.", "Three."], title="T <1>"
    )
    page = path.read_text(encoding="utf-8")
    assert page.count("<img ") == 2
    assert 'src="img/a.jpg"' in page
    assert "One &amp; two." in page
    assert "<title>T &lt;1&gt;</title>" in page
    assert page.index("One &amp; two.") < page.index("img/a.jpg") < page.index("Three.") < page.index("img/b.png")
