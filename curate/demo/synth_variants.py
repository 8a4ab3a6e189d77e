"""Ground truth for near-duplicate detection: natural-looking originals and their planted variants.

Every generator is deterministic for its ``seed``. Originals look like photographs, clips,
recordings and documents closely enough for perceptual hashes and fingerprints to behave as on
real data (smooth gradients, shapes with soft edges, texture and grain; moving scenes; notes with
harmonics; sentences from a vocabulary). Variants are what a corpus really holds twice: resized,
re-encoded, slightly cropped, brightened or mirrored images; re-encoded, resized or trimmed clips;
re-encoded or resampled audio; lightly edited text.

Used by tests/test_dedup_*.py and benchmarks/bench_dedup_quality.py.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from curate.demo.synth import _encode_audio, video_codec

__all__ = [
    "IMAGE_VARIANTS",
    "TEXT_VARIANTS",
    "edit_text",
    "image_variant",
    "make_music",
    "make_scene_video",
    "natural_image",
    "random_document",
    "transcode_audio",
    "transcode_video",
]

# ----------------------------------------------------------------------------- images


def natural_image(seed: int, width: int = 384, height: int = 288) -> Image.Image:
    """A photo-like RGB image: sky/ground gradient, soft shapes, texture and sensor grain."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    top, bottom, side = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(-60, 60, 3)
    horizon = rng.uniform(0.3, 0.7)
    base = np.where(y < horizon, top + (bottom - top) * y / horizon, bottom * (1.2 - 0.4 * y)) + side * x
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            pts = [(float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))) for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
            draw.polygon(pts, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 2.5))))
    # texture: low-frequency luminance variation plus fine grain
    coarse = rng.normal(0, 18, (max(2, height // 16), max(2, width // 16))).astype(np.float32)
    tex = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    grain = rng.normal(0, 4, (height, width, 1))
    arr = np.asarray(img, dtype=np.float32) + tex[..., None] + grain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


#: variant kinds image_variant knows; "flip" is a near-duplicate only where flips are configured
IMAGE_VARIANTS = ("resize", "reencode", "crop", "crop_corner", "brightness", "flip")


def image_variant(img: Image.Image, kind: str, seed: int = 0) -> tuple[Image.Image, dict]:
    """A planted variant of ``img``; returns the image and save options (JPEG quality)."""
    rng = np.random.default_rng(seed)
    w, h = img.size
    if kind == "resize":
        f = float(rng.choice([0.5, 0.6, 0.75, 1.5]))
        return img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.LANCZOS), {"quality": 90}
    if kind == "reencode":
        return img.copy(), {"quality": int(rng.integers(35, 65))}
    if kind == "crop":
        f = float(rng.uniform(0.02, 0.05))
        dx, dy = round(w * f), round(h * f)
        return img.crop((dx, dy, w - dx, h - dy)), {"quality": 90}
    if kind == "crop_corner":  # 4-10% of each side cut away towards one corner
        f = float(rng.uniform(0.04, 0.10))
        dx, dy = round(w * f), round(h * f)
        corner = int(rng.integers(0, 4))
        box = [(dx, dy, w, h), (0, 0, w - dx, h - dy), (dx, 0, w, h - dy), (0, dy, w - dx, h)][corner]
        return img.crop(box), {"quality": 90}
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(float(rng.choice([0.85, 1.15]))), {"quality": 90}
    if kind == "flip":
        return ImageOps.mirror(img), {"quality": 90}
    raise ValueError(f"unknown image variant {kind!r}; expected one of {IMAGE_VARIANTS}")


# ----------------------------------------------------------------------------- video


def make_scene_video(
    path: str | Path,
    *,
    seed: int,
    seconds: float = 4.0,
    fps: int = 12,
    width: int = 160,
    height: int = 120,
    gop: int = 12,
) -> Path:
    """A clip that pans across a natural-looking scene, with a cut to a second scene halfway."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scenes = [np.asarray(natural_image(seed * 7 + k, width * 2, height)) for k in range(2)]
    n = round(seconds * fps)
    with av.open(str(path), "w") as out:
        codec = video_codec()
        opts = {"x264-params": "mbtree=0", "g": str(gop)} if codec == "libx264" else {"g": str(gop)}
        vs = out.add_stream(codec, rate=fps, options=opts)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        for i in range(n):
            scene = scenes[0] if i < n // 2 else scenes[1]
            x = int((width - 1) * (i % (n // 2 or 1)) / max(1, n // 2))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[:, x : x + width]), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def transcode_video(
    src: str | Path,
    dst: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    trim_start_s: float = 0.0,
    crf: int = 30,
    fps: int | None = None,
    max_seconds: float | None = None,
) -> Path:
    """Re-encode ``src``: optionally resized, with the first ``trim_start_s`` seconds cut off, and
    at most ``max_seconds`` long."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ivs = inp.streams.video[0]
        rate = fps or round(float(ivs.average_rate or 12))
        codec = video_codec()
        opts = {"x264-params": "mbtree=0", "crf": str(crf)} if codec == "libx264" else {"qscale": str(max(2, crf // 6))}
        vs = out.add_stream(codec, rate=rate, options=opts)
        vs.width = width or ivs.codec_context.width
        vs.height = height or ivs.codec_context.height
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1
        k = 0
        for frame in inp.decode(ivs):
            t = float(frame.pts * ivs.time_base) if frame.pts is not None else k / rate
            if t + 1e-6 < trim_start_s:
                continue
            if max_seconds is not None and t - trim_start_s >= max_seconds - 1e-6:
                break
            img = frame.to_ndarray(format="rgb24", width=vs.width, height=vs.height)
            nf = av.VideoFrame.from_ndarray(img, format="rgb24")
            nf.pts = k
            k += 1
            out.mux(vs.encode(nf))
        out.mux(vs.encode())
    return dst


# ----------------------------------------------------------------------------- audio


def make_music(path: str | Path, *, seed: int, seconds: float = 8.0, sample_rate: int = 22050) -> Path:
    """A melody of harmonic notes (with attack/decay envelopes) over a quiet noise floor."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    sig = 0.004 * rng.standard_normal(n)
    start = 0.0
    while start < seconds:
        dur = float(rng.choice([0.15, 0.25, 0.35, 0.5]))
        i0, i1 = int(start * sample_rate), min(n, int((start + dur) * sample_rate))
        for _ in range(int(rng.integers(1, 3))):  # one or two simultaneous notes
            f0 = 110.0 * 2 ** (int(rng.integers(0, 36)) / 12)
            tt = t[i0:i1] - start
            env = np.minimum(1, tt / 0.01) * np.exp(-tt * rng.uniform(2, 6))
            note = sum((0.6**k) * np.sin(2 * np.pi * f0 * (k + 1) * tt) for k in range(4))
            sig[i0:i1] += 0.15 * env * note
        start += dur
    samples = np.clip(sig, -1, 1).astype(np.float32)[None, :]
    if path.suffix.lower() == ".wav":
        import wave

        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes((samples[0] * 32767).astype("<i2").tobytes())
        return path
    _write_audio(path, samples, sample_rate)
    return path


def _write_audio(path: Path, samples: np.ndarray, sample_rate: int, bit_rate: int | None = None) -> None:
    codec = {".flac": "flac", ".mp3": "libmp3lame", ".m4a": "aac", ".ogg": "libvorbis"}.get(path.suffix.lower(), "flac")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        if bit_rate:
            stream.bit_rate = bit_rate
        _encode_audio(out, stream, samples, sample_rate)


def transcode_audio(src: str | Path, dst: str | Path, *, sample_rate: int | None = None, bit_rate: int | None = 64000) -> Path:
    """Decode ``src`` and write it again (the codec from ``dst``'s suffix), optionally resampled."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp:
        st = inp.streams.audio[0]
        rate = sample_rate or st.sample_rate
        res = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        chunks = [f.to_ndarray() for fr in inp.decode(st) for f in res.resample(fr)]
        chunks += [f.to_ndarray() for f in res.resample(None)]
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    _write_audio(dst, samples, rate, bit_rate)
    return dst


# ----------------------------------------------------------------------------- text

_WORDS = ["the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from", "that", "this", "it", "be", "are", "were", "river", "mountain", "city", "market", "engine", "model", "data", "train", "light", "water", "stone", "garden", "music", "paper", "window", "street", "morning", "evening", "winter", "summer", "history", "science", "museum", "harbor", "bridge", "forest", "valley", "island", "village", "library", "station", "kitchen", "painter", "teacher", "farmer", "doctor", "student", "engineer", "captain", "traveler", "merchant", "soldier", "poet", "old", "new", "small", "large", "quiet", "busy", "bright", "dark", "ancient", "modern", "famous", "hidden", "golden", "silver", "northern", "southern", "walked", "built", "opened", "closed", "carried", "found", "watched", "wrote", "painted", "crossed", "followed", "remembered", "discovered", "described", "measured", "collected", "visited", "returned"]


def random_document(seed: int, sentences: int = 8) -> str:
    """A paragraph of ``sentences`` random sentences over a small vocabulary."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sentences):
        words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), int(rng.integers(8, 16)))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


TEXT_VARIANTS = ("typo", "word_edit", "append", "case_space")


def edit_text(text: str, kind: str, seed: int = 0) -> str:
    """A lightly edited copy: a few typos, a changed/removed word, a sentence appended, or
    case/whitespace changes."""
    rng = np.random.default_rng(seed)
    words = text.split()
    if kind == "typo":
        for i in rng.choice(len(words), size=min(2, len(words)), replace=False):
            w = words[i]
            if len(w) > 2:
                j = int(rng.integers(0, len(w) - 1))
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        return " ".join(words)
    if kind == "word_edit":
        i = int(rng.integers(0, len(words)))
        if rng.random() < 0.5:
            del words[i]
        else:
            words[i] = _WORDS[int(rng.integers(0, len(_WORDS)))]
        return " ".join(words)
    if kind == "append":
        return text + " " + random_document(seed + 10_000, sentences=1)
    if kind == "case_space":
        return "  ".join(w.upper() if rng.random() < 0.1 else w for w in words)
    raise ValueError(f"unknown text variant {kind!r}; expected one of {TEXT_VARIANTS}")
