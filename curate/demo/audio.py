"""A small speech corpus with known structure, for the audio pipeline, its tests and benchmarks.

``make_speech(path, bursts=...)`` writes speech-like audio: voiced "syllables" (a wandering pitch
with harmonics, amplitude-modulated at ~4 Hz) inside the given ``(start, end)`` bursts, and a faint
noise floor (``noise_db``) everywhere else, so a voice activity detector has a ground truth.

``make_audio_corpus(root)`` writes ``root/audio`` (the ``audio_folder`` source of
examples/pipelines/audio.yaml) and ``root/PLANTED.json``, which lists every file with its bursts
and what a correct run does with it:

- ``speech_en_NN.wav`` / ``speech_de_NN.wav``: short 16 kHz utterances with ``.txt`` transcripts in
  English / German, dirtied with HTML entities, tags, URLs and boilerplate that ``text_clean``
  removes;
- ``lecture_long.flac``: 60 s of speech in 10 known bursts with an untimed transcript (segmented
  into children without transcripts); ``interview_timed.wav``: 30 s with a timed transcript in a
  ``.json`` sidecar (``segments``: its children get their pieces);
- ``stereo_44k.wav``: 44.1 kHz stereo (transcoded to 16 kHz mono);
- ``clipped.wav``: speech driven into hard clipping; ``silent.wav``: digital silence;
  ``narrowband_8k.wav``: 8 kHz telephone-band speech (a sample-rate filter drops it);
- ``speech_en_00_copy.wav``: a byte copy (an exact duplicate); ``corrupt.wav``: garbage bytes.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np

from curate.demo import synth

__all__ = ["DE_SENTENCES", "EN_SENTENCES", "make_audio_corpus", "make_speech", "speech_signal"]

EN_SENTENCES = [
    "Good morning and welcome to the weekly news summary from the city council.",
    "Please remember to bring your ticket and your passport to the departure gate.",
    "The train to the airport leaves from platform four every twenty minutes.",
    "Add two cups of flour and stir slowly until the batter is completely smooth.",
]
DE_SENTENCES = [
    "Guten Morgen und herzlich willkommen zu den Nachrichten aus dem Stadtrat.",
    "Der Zug zum Flughafen fährt alle zwanzig Minuten von Gleis vier ab.",
    "Bitte vergessen Sie nicht, Ihre Fahrkarte und Ihren Ausweis mitzubringen.",
    "Geben Sie zwei Tassen Mehl hinzu und rühren Sie langsam, bis der Teig glatt ist.",
]
#: how transcripts get dirtied (text_clean must undo every one of these)
_DIRT = [
    "{s} (https://example.com/news?id=4)",
    "<p>{s}</p> Click here to subscribe!",
    "{s} &quot;Royalty free&quot; &#8211; Shutterstock",
    "  {s}\n\n   www.example.org/podcast  ",
]


def speech_signal(
    seconds: float,
    bursts: list[tuple[float, float]],
    *,
    sample_rate: int = 16000,
    seed: int = 0,
    level: float = 0.3,
    noise_db: float = -60.0,
) -> np.ndarray:
    """Mono float32 samples: speech-like sound inside ``bursts``, a noise floor elsewhere."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    x = (10 ** (noise_db / 20) * rng.standard_normal(n)).astype(np.float64)
    for start, end in bursts:
        a, b = round(start * sample_rate), min(n, round(end * sample_rate))
        t = np.arange(b - a) / sample_rate
        pitch = rng.uniform(100, 200) + 30 * np.sin(2 * np.pi * rng.uniform(0.3, 0.9) * t + rng.uniform(0, 6))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 7))
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.5, 5.0) * t + rng.uniform(0, 1)), 0, None) ** 0.5
        ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01) if t.size else t  # 10 ms fades
        x[a:b] += level / 2 * voiced * (0.25 + 0.75 * syllables) * ramp
    return x.astype(np.float32)


def _write(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """(n,) or (channels, n) float samples -> 16-bit WAV (stdlib) or FLAC (PyAV)."""
    samples = np.atleast_2d(samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".wav":
        pcm = (np.clip(samples.T, -1, 1) * 32767).astype("<i2")
        with wave.open(str(path), "wb") as w:
            w.setnchannels(samples.shape[0])
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
        return path
    from operators.audio.transcode import AudioWriter

    with AudioWriter(path, fmt="flac", sample_rate=sample_rate, channels=samples.shape[0]) as writer:
        for start in range(0, samples.shape[1], 4096):
            writer.write(samples[:, start : start + 4096].astype(np.float32))
    return path


def make_speech(
    path: str | Path,
    *,
    seconds: float,
    bursts: list[tuple[float, float]],
    sample_rate: int = 16000,
    channels: int = 1,
    seed: int = 0,
    level: float = 0.3,
    noise_db: float = -60.0,
) -> Path:
    """Write speech-like bursts at known times (see ``speech_signal``); .wav or .flac."""
    mono = speech_signal(seconds, bursts, sample_rate=sample_rate, seed=seed, level=level, noise_db=noise_db)
    samples = np.stack([np.roll(mono, 11 * c) for c in range(channels)])
    return _write(Path(path), samples, sample_rate)


def _bursts(rng: np.random.Generator, seconds: float, count: int, lo: float = 1.2, hi: float = 3.0) -> list[tuple[float, float]]:
    """``count`` bursts of lo..hi seconds with pauses of 0.8..2 s, starting after 0.5 s."""
    out, t = [], 0.5
    for _ in range(count):
        length = float(np.round(rng.uniform(lo, hi), 2))
        if t + length > seconds - 0.3:
            break
        out.append((round(t, 2), round(t + length, 2)))
        t += length + float(np.round(rng.uniform(0.8, 2.0), 2))
    return out


def make_audio_corpus(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the audio corpus under ``root`` and return ``{"audio": root/audio}`` (see the module doc)."""
    root = Path(root)
    folder = root / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files: dict[str, dict[str, Any]] = {}

    def add(name: str, **info: Any) -> Path:
        files[name] = info
        return folder / name

    for lang, sentences in (("en", EN_SENTENCES), ("de", DE_SENTENCES)):
        for i, sentence in enumerate(sentences):
            bursts = [(0.4, 1.9), (2.6, 4.2)]
            name = f"speech_{lang}_{i:02d}.wav"
            make_speech(add(name, seconds=5.0, bursts=bursts, language=lang, transcript=sentence),
                        seconds=5.0, bursts=bursts, seed=int(rng.integers(1 << 30)))  # fmt: skip
            (folder / f"speech_{lang}_{i:02d}.txt").write_text(_DIRT[i % len(_DIRT)].format(s=sentence), encoding="utf-8")

    long_bursts = _bursts(rng, 60.0, 10)
    make_speech(add("lecture_long.flac", seconds=60.0, bursts=long_bursts, language="en", transcript="untimed"),
                seconds=60.0, bursts=long_bursts, seed=int(rng.integers(1 << 30)))  # fmt: skip
    (folder / "lecture_long.txt").write_text(" ".join(EN_SENTENCES * 3), encoding="utf-8")

    timed_bursts = _bursts(rng, 30.0, 6)
    pieces = [{"start": a, "end": b, "text": EN_SENTENCES[k % len(EN_SENTENCES)]} for k, (a, b) in enumerate(timed_bursts)]
    make_speech(add("interview_timed.wav", seconds=30.0, bursts=timed_bursts, language="en", transcript="timed"),
                seconds=30.0, bursts=timed_bursts, seed=int(rng.integers(1 << 30)))  # fmt: skip
    sidecar = {"transcript": " ".join(p["text"] for p in pieces), "segments": pieces, "speaker": "host"}
    (folder / "interview_timed.json").write_text(json.dumps(sidecar, ensure_ascii=False, indent=1), encoding="utf-8")

    bursts = [(0.5, 2.5), (3.2, 5.5)]
    make_speech(add("stereo_44k.wav", seconds=6.0, bursts=bursts, sample_rate=44100, channels=2),
                seconds=6.0, bursts=bursts, sample_rate=44100, channels=2, seed=int(rng.integers(1 << 30)))  # fmt: skip
    (folder / "stereo_44k.txt").write_text(EN_SENTENCES[1], encoding="utf-8")
    make_speech(add("clipped.wav", seconds=4.0, bursts=bursts[:1], clipped=True),
                seconds=4.0, bursts=bursts[:1], level=6.0, seed=int(rng.integers(1 << 30)))  # fmt: skip
    (folder / "clipped.txt").write_text(EN_SENTENCES[2], encoding="utf-8")
    synth.make_audio(add("silent.wav", seconds=3.0, bursts=[], silent=True), seconds=3.0, kind="silence")
    make_speech(add("narrowband_8k.wav", seconds=4.0, bursts=bursts[:1], sample_rate=8000, low_rate=True),
                seconds=4.0, bursts=bursts[:1], sample_rate=8000, seed=int(rng.integers(1 << 30)))  # fmt: skip
    (folder / "narrowband_8k.txt").write_text(EN_SENTENCES[3], encoding="utf-8")
    synth.copy_file(folder / "speech_en_00.wav", add("speech_en_00_copy.wav", duplicate_of="speech_en_00.wav"))
    synth.copy_file(folder / "speech_en_00.txt", folder / "speech_en_00_copy.txt")
    synth.make_corrupt(add("corrupt.wav", corrupt=True), "garbage", seed=seed)

    planted = {"seed": seed, "files": files, "rows": len(files)}
    (root / "PLANTED.json").write_text(json.dumps(planted, indent=1) + "\n", encoding="utf-8")
    return {"audio": folder}
