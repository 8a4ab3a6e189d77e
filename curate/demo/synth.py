"""Tiny, real, deterministic media for tests, the demo corpus and benchmarks.

Every generator takes a ``seed`` and writes the same bytes for the same arguments (Pillow and
FFmpeg encoders are deterministic single-threaded), so tests can assert exact sizes and durations.
"""

from __future__ import annotations

import html
import shutil
import wave
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

__all__ = ["copy_file", "make_audio", "make_corrupt", "make_html_doc", "make_image", "make_video", "video_codec"]


_IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP"}


def _rgb_noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour noise: a coarse random grid upscaled, plus a little fine grain."""
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    grain = rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255).astype(np.uint8))


def _rgb_gradient(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = (np.linspace(0, 1, width)[None, :] + np.linspace(0, 1, height)[:, None]) / 2
    return Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))


def _rgb_shapes(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1 + 1, y1 + 1], fill=fill)
    return img


_PATTERNS = {"noise": _rgb_noise, "gradient": _rgb_gradient, "shapes": _rgb_shapes}


def make_image(
    path: str | Path, width: int, height: int, *, seed: int = 0, fmt: str | None = None, pattern: str = "noise"
) -> Path:
    """Write a ``width`` x ``height`` RGB image; the format comes from ``fmt`` or the file suffix."""
    path = Path(path)
    fmt = fmt or _IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path}; pass fmt=")
    if pattern not in _PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {sorted(_PATTERNS)}")
    img = _PATTERNS[pattern](np.random.default_rng(seed), width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt.upper(), **({"quality": 90} if fmt.upper() in ("JPEG", "WEBP") else {}))
    return path


def video_codec() -> str:
    """The best small video encoder this PyAV build has: libx264, else mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return "mpeg4"


def _video_frame(t: int, fps: int, width: int, height: int, base: np.ndarray, moving: bool) -> np.ndarray:
    if not moving:
        return base
    frame = np.roll(base, shift=(t * 3) % width, axis=1).copy()
    side = max(4, min(width, height) // 4)
    x = int((width - side) * (0.5 + 0.5 * np.sin(2 * np.pi * t / max(1, fps))))
    y = int((height - side) * t / max(1, fps * 2)) % max(1, height - side)
    frame[y : y + side, x : x + side] = 255
    return frame


def _tone(seconds: float, sample_rate: int, freq: float) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_video(
    path: str | Path,
    *,
    seconds: float = 1.0,
    fps: int = 12,
    width: int = 64,
    height: int = 48,
    seed: int = 0,
    audio: bool = False,
    codec: str | None = None,
    audio_codec: str = "aac",
    moving: bool = True,
) -> Path:
    """Write an mp4 of ``round(seconds * fps)`` frames; optionally with a 16 kHz mono tone track."""
    if width % 2 or height % 2:
        raise ValueError(f"video width and height must be even (yuv420p), got {width}x{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.asarray(_rgb_noise(np.random.default_rng(seed), width, height))
    with av.open(str(path), "w") as out:
        codec = codec or video_codec()
        # x264's macroblock-tree rate control is not bit-reproducible across processes
        vs = out.add_stream(codec, rate=fps, options={"x264-params": "mbtree=0"} if codec == "libx264" else {})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        aus = None
        if audio:
            aus = out.add_stream(audio_codec, rate=16000)
            aus.layout = "mono"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(_video_frame(i, fps, width, height, base, moving), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        if aus is not None:
            _encode_audio(out, aus, _tone(seconds, 16000, 220.0 + 110 * (seed % 5))[None, :], 16000)
    return path


def _encode_audio(
    out: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray, sample_rate: int
) -> None:
    """Encode (channels, n) float32 samples in codec-sized frames."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    step = stream.codec_context.frame_size or 1024
    planar = stream.codec_context.format.is_planar
    for start in range(0, samples.shape[1], step):
        chunk = np.ascontiguousarray(samples[:, start : start + step])
        fmt = stream.codec_context.format.name
        data = chunk if planar else chunk.T.reshape(1, -1)
        if fmt.startswith(("s16", "s32")):
            full = 32767 if fmt.startswith("s16") else 2**31 - 1
            data = (np.clip(data, -1, 1).astype(np.float64) * full).astype(np.int16 if full == 32767 else np.int32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        frame.sample_rate, frame.pts = sample_rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def _waveform(kind: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if kind == "tone":
        return _tone(seconds, sample_rate, float(rng.uniform(200, 900)))
    if kind == "noise":
        return (0.1 * rng.standard_normal(n)).astype(np.float32)
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "speechlike":
        # voiced "syllables" at ~4 Hz with a wandering pitch and harmonics, separated by pauses
        pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 2
        return (0.25 * voiced * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32)
    raise ValueError(f"unknown audio kind {kind!r}; expected tone, noise, speechlike or silence")


def make_audio(
    path: str | Path,
    *,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    channels: int = 1,
    seed: int = 0,
    kind: str = "tone",
) -> Path:
    """Write ``seconds`` of audio: .wav with the stdlib, anything else (.flac, .mp3...) with PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mono = _waveform(kind, seconds, sample_rate, np.random.default_rng(seed))
    samples = np.stack([np.roll(mono, 7 * c) for c in range(channels)])
    if path.suffix.lower() == ".wav":
        pcm = (np.clip(samples.T, -1, 1) * 32767).astype("<i2")
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
        return path
    codec = {".flac": "flac", ".mp3": "libmp3lame", ".m4a": "aac"}
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec.get(path.suffix.lower(), "flac"), rate=sample_rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        _encode_audio(out, stream, samples, sample_rate)
    return path


def make_corrupt(path: str | Path, kind: str = "garbage", source: str | Path | None = None, *, seed: int = 0) -> Path:
    """``garbage``: random bytes under a media suffix; ``truncated``: the first 40% of ``source``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        data = np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes()
        path.write_bytes(b"\x00not-media\x00" + data)
    elif kind == "truncated":
        if source is None:
            raise ValueError("kind='truncated' needs source=")
        data = Path(source).read_bytes()
        path.write_bytes(data[: max(1, int(len(data) * 0.4))])
    else:
        raise ValueError(f"unknown corruption kind {kind!r}; expected garbage or truncated")
    return path


def copy_file(source: str | Path, path: str | Path) -> Path:
    """A byte copy (a planted exact duplicate)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def make_html_doc(
    path: str | Path,
    *,
    images: list[str],
    paragraphs: list[str],
    title: str,
    alts: list[str] | None = None,
) -> Path:
    """An HTML page: a title, then paragraphs with an ``<img>`` after each one while images last."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [f"<h1>{html.escape(title)}</h1>"]
    for i in range(max(len(paragraphs), len(images))):
        if i < len(paragraphs):
            body.append(f"<p>{html.escape(paragraphs[i])}</p>")
        if i < len(images):
            alt = alts[i] if alts and i < len(alts) else f"Figure {i + 1}"
            body.append(f'<figure><img src="{html.escape(images[i])}" alt="{html.escape(alt)}"></figure>')
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title></head>\n<body>\n<article>\n" + "\n".join(body) + "\n</article>\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
