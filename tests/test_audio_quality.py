"""audio_quality: loudness against FFmpeg's ebur128 filter, exact level numbers on constructed
signals, and bounded decoding."""

from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import Any

import av
import av.filter
import numpy as np
import pytest

import operators.audio.quality as aq
from curate.demo import synth
from curate.demo.audio import make_speech
from operators.audio.quality import AudioQuality, LoudnessMeter
from operators.registry import OPERATORS
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def write_pcm(path: Path, pcm: np.ndarray, rate: int) -> Path:
    """(channels, n) int16 samples -> WAV, bit-exact."""
    pcm = np.atleast_2d(pcm)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm.T).astype("<i2").tobytes())
    return path


def write_float(path: Path, x: np.ndarray, rate: int) -> Path:
    return write_pcm(path, np.round(np.clip(np.atleast_2d(x), -1, 1) * 32767).astype(np.int16), rate)


def measure(path: Path, **params: Any) -> dict[str, Any]:
    row = new_record(source="t", locator=str(path), layout="audio", media=[new_media("audio", str(path))])
    return from_table(AudioQuality(params)(to_table([row])))[0]


def ffmpeg_ebur128(path: Path) -> float:
    """Integrated loudness from FFmpeg's ebur128 filter, run through PyAV's filter graph: the
    filter's per-frame metadata carries the running integrated value; the last frame's is final."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        graph = av.filter.Graph()
        src = graph.add_abuffer(template=stream)
        meter = graph.add("ebur128", "metadata=1")
        sink = graph.add("abuffersink")
        src.link_to(meter)
        meter.link_to(sink)
        graph.configure()
        last = None

        def drain() -> None:
            nonlocal last
            while True:
                try:
                    last = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return

        for frame in container.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    assert last is not None
    return float(last.metadata["lavfi.r128.I"])


def _signals(rate: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(rate * 6) / rate
    return {
        "tone_1k": 0.3 * np.sin(2 * np.pi * 1000 * t),
        "tone_60hz": 0.5 * np.sin(2 * np.pi * 60 * t),  # the high-pass stage matters here
        "tone_8k": 0.2 * np.sin(2 * np.pi * min(8000, rate / 2.5) * t),  # the shelf matters here
        "noise": 0.1 * rng.standard_normal(t.size),
        "stereo": np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(t.size)]),
        # loud and very quiet halves: the relative gate removes the quiet ones
        "gated": np.where((t % 2) < 1, 0.3, 0.003) * np.sin(2 * np.pi * 500 * t),
    }


def test_registered_with_documented_scores() -> None:
    assert OPERATORS["audio_quality"] is AudioQuality
    for key in ("loudness_lufs", "rms_dbfs", "peak_dbfs", "clipping_ratio", "silence_ratio", "snr_db"):
        assert AudioQuality.writes[key]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_loudness_agrees_with_ffmpeg_ebur128(tmp_path: Path, rate: int) -> None:
    rng = np.random.default_rng(rate)
    for name, x in _signals(rate, rng).items():
        path = write_float(tmp_path / f"{name}.wav", x, rate)
        ours = measure(path)["scores"]["loudness_lufs"]
        theirs = ffmpeg_ebur128(path)
        assert abs(ours - theirs) < 1.0, (name, rate, ours, theirs)
        assert abs(ours - theirs) < 0.1, (name, rate, ours, theirs)  # what we actually get (~0.01)


def test_loudness_of_speech_with_pauses_agrees_with_ffmpeg(tmp_path: Path) -> None:
    path = make_speech(tmp_path / "s.flac", seconds=12.0, bursts=[(0.5, 3.0), (5.0, 6.0), (8.0, 11.5)])
    assert abs(measure(path)["scores"]["loudness_lufs"] - ffmpeg_ebur128(path)) < 0.1


def test_loudness_meter_is_independent_of_chunking() -> None:
    rate = 16000
    x = np.random.default_rng(0).standard_normal((1, rate * 5)).astype(np.float32) * 0.1
    whole = LoudnessMeter(rate, 1)
    whole.feed(x)
    pieces = LoudnessMeter(rate, 1)
    for a in range(0, x.shape[1], 777):
        pieces.feed(x[:, a : a + 777])
    assert pieces.integrated() == pytest.approx(whole.integrated(), abs=1e-9)


def test_levels_of_a_known_tone(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate * 3) / rate
    path = write_float(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), rate)
    s = measure(path)["scores"]
    assert s["rms_dbfs"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert s["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert s["clipping_ratio"] == 0.0 and s["silence_ratio"] == 0.0
    assert s["snr_db"] == pytest.approx(0.0, abs=0.1)  # a steady signal has no pauses
    assert s["quality_seconds"] == pytest.approx(3.0)


def test_clipping_ratio_is_exact(tmp_path: Path) -> None:
    n = 16000
    pcm = np.full(n, 8000, np.int16)
    pcm[::2] *= -1
    pcm[100:137] = 32767  # 37 positive full-scale samples
    pcm[5000:5013] = -32768  # 13 negative ones
    pcm[9000:9010] = 32730  # 0.99884 FS: just under the 0.999 threshold, not clipped
    s = measure(write_pcm(tmp_path / "clip.wav", pcm, 16000))["scores"]
    assert s["clipping_ratio"] == 50 / n
    stereo = np.stack([pcm, np.zeros(n, np.int16)])
    s2 = measure(write_pcm(tmp_path / "clip2.wav", stereo, 16000))["scores"]
    assert s2["clipping_ratio"] == 50 / (2 * n)  # over every sample of every channel


def test_silence_ratio_is_exact_and_snr_is_the_level_gap(tmp_path: Path) -> None:
    frame = 480  # 30 ms at 16 kHz
    loud, quiet = 16384, 164
    layout = [True] * 63 + [False] * 37
    np.random.default_rng(1).shuffle(layout)
    square = np.tile([1, -1], frame // 2).astype(np.int16)
    pcm = np.concatenate([square * (loud if on else quiet) for on in layout]).astype(np.int16)
    s = measure(write_pcm(tmp_path / "gaps.wav", pcm, 16000))["scores"]
    # quiet frames sit at 20*log10(164/32768) = -46.0 dBFS: silent at the -40 threshold, not at -50
    assert measure(write_pcm(tmp_path / "g.wav", pcm, 16000), silence_db=-40)["scores"]["silence_ratio"] == 0.37
    assert s["silence_ratio"] == 0.0
    assert s["snr_db"] == pytest.approx(20 * math.log10(loud / quiet), abs=1e-6)


def test_digital_silence(tmp_path: Path) -> None:
    s = measure(synth.make_audio(tmp_path / "z.wav", seconds=2.0, kind="silence"))["scores"]
    assert s["loudness_lufs"] == -70.0  # what FFmpeg reports below the absolute gate
    assert (s["rms_dbfs"], s["peak_dbfs"], s["silence_ratio"], s["snr_db"]) == (-100.0, -100.0, 1.0, 0.0)


def test_max_seconds_bounds_what_is_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long file is read for max_seconds only, in small chunks: memory does not grow with length."""
    path = synth.make_audio(tmp_path / "long.flac", seconds=40.0, sample_rate=16000, kind="noise")
    seen: list[int] = []

    class Counting(aq.AudioDecoder):
        def _take(self, arr: np.ndarray, limit: int | None) -> np.ndarray | None:
            seen.append(arr.shape[-1])  # every decoded chunk, before the cap trims it
            return super()._take(arr, limit)

    monkeypatch.setattr(aq, "AudioDecoder", Counting)
    s = measure(path, max_seconds=5)["scores"]
    assert s["quality_seconds"] == 5.0
    assert sum(seen) < 6 * 16000  # stopped right after the cap, not at 40 s
    assert max(seen) <= 16000  # no chunk bigger than one second

    seen.clear()
    assert measure(path, max_seconds=None)["scores"]["quality_seconds"] == 40.0
    assert max(seen) <= 16000


def test_rows_without_audio_are_untouched_and_broken_audio_is_quarantined(tmp_path: Path) -> None:
    img = synth.make_image(tmp_path / "a.png", 32, 32)
    bad = synth.make_corrupt(tmp_path / "bad.wav")
    rows = [
        new_record(source="t", locator="i", layout="image", media=[new_media("image", str(img))]),
        new_record(source="t", locator="b", layout="audio", media=[new_media("audio", str(bad))]),
    ]
    i, b = from_table(AudioQuality({})(to_table(rows)))
    assert i["status"] == Status.KEPT and i["scores"] == {}
    assert (b["status"], b["status_reason"]) == (Status.QUARANTINED, ReasonCode.CORRUPT_MEDIA)


def test_video_audio_stream_with_from_video(tmp_path: Path) -> None:
    video = synth.make_video(tmp_path / "v.mp4", seconds=1.0, audio=True)
    row = new_record(source="t", locator="v", layout="video", media=[new_media("video", str(video))])
    assert from_table(AudioQuality({})(to_table([row])))[0]["scores"] == {}
    s = from_table(AudioQuality({"from_video": True})(to_table([row])))[0]["scores"]
    assert s["rms_dbfs"] == pytest.approx(20 * math.log10(0.3 / math.sqrt(2)), abs=0.5)  # synth's 0.3 tone
