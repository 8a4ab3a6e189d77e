"""audio_transcode on tiny real audio and video made by curate.demo.synth."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from pydantic import ValidationError

from curate.demo import synth
from operators.audio.transcode import AudioDecoder, AudioTranscode, AudioWriter
from operators.base import StageContext
from operators.registry import OPERATORS
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def run(rows: list[dict[str, Any]], out: Path, **params: Any) -> list[dict[str, Any]]:
    op = AudioTranscode(params, StageContext("audio_transcode", artifacts_dir=str(out)))
    return from_table(op(to_table(rows)))


def rec(name: str, *media: dict[str, Any], **fields: Any) -> dict[str, Any]:
    fields.setdefault("layout", "audio-text")
    return new_record(source="t", locator=name, id=f"id-{name}", media=list(media), **fields)


def decoded(path: str | Path) -> tuple[np.ndarray, int, int]:
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        chunks = [f.to_ndarray() for f in c.decode(st)]
        return np.concatenate(chunks, axis=1), st.sample_rate, st.channels


def test_registered_with_params_and_writes() -> None:
    assert OPERATORS["audio_transcode"] is AudioTranscode
    assert AudioTranscode.writes["transcoded"]
    with pytest.raises(ValidationError):
        AudioTranscode({"format": "mp3"})
    with pytest.raises(ValidationError):
        AudioTranscode({"sample_rate": 100})
    with pytest.raises(ValidationError):
        AudioTranscode({"bogus": 1})


@pytest.mark.parametrize("fmt,codec", [("flac", "flac"), ("wav", "pcm_s16le")])
def test_resamples_and_downmixes_to_the_target(tmp_path: Path, fmt: str, codec: str) -> None:
    src = synth.make_audio(tmp_path / "in.wav", seconds=2.5, sample_rate=44100, channels=2, kind="speechlike")
    original = new_media("audio", str(src), sha256="abc", format="wav", sample_rate=44100, channels=2)
    out = run([rec("a", original, meta={"speaker": "x"})], tmp_path / "art", format=fmt)[0]
    assert out["status"] == Status.KEPT, out["status_detail"]
    m = out["media"][0]
    assert m["uri"] == str(tmp_path / "art" / f"id-a-0.{fmt}")
    assert (m["format"], m["codec"], m["sample_rate"], m["channels"]) == (fmt, codec, 16000, 1)
    assert m["duration_s"] == pytest.approx(2.5, abs=1e-3)
    assert m["bytes"] == Path(m["uri"]).stat().st_size and m["sha256"] != "abc"
    samples, rate, channels = decoded(m["uri"])
    assert (rate, channels, samples.shape[1]) == (16000, 1, 40000)
    meta = json.loads(out["meta"])
    assert meta["speaker"] == "x"  # other meta kept
    assert meta["original_uri"] == str(src)
    t = meta["transcode"][0]
    assert (t["original_sample_rate"], t["original_channels"], t["original_codec"], t["original_sha256"]) == (
        44100, 2, "pcm_s16le", "abc")  # fmt: skip
    assert out["scores"]["transcoded"] == 1.0
    assert not list((tmp_path / "art").glob(".*tmp*"))  # no temporary file left behind


def test_signal_survives_resampling(tmp_path: Path) -> None:
    """A 440 Hz tone is still a 440 Hz tone of the same level after 48 kHz -> 16 kHz."""
    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    src = tmp_path / "tone.flac"
    with AudioWriter(src, fmt="flac", sample_rate=rate, channels=1) as w:
        w.write(tone[None, :])
    out = run([rec("t", new_media("audio", str(src)))], tmp_path / "art")[0]
    samples, sr, _ = decoded(out["media"][0]["uri"])
    x = samples[0].astype(np.float64) / 32768
    spectrum = np.abs(np.fft.rfft(x[4000:-4000]))
    peak_hz = np.argmax(spectrum) * sr / (x.size - 8000)
    assert peak_hz == pytest.approx(440, abs=2)
    assert np.sqrt((x[4000:-4000] ** 2).mean()) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_same_bytes_on_rerun_and_deterministic_name(tmp_path: Path) -> None:
    src = synth.make_audio(tmp_path / "in.wav", seconds=1.0, sample_rate=22050)
    a = run([rec("a", new_media("audio", str(src)))], tmp_path / "art")[0]
    first = Path(a["media"][0]["uri"]).read_bytes()
    b = run([rec("a", new_media("audio", str(src)))], tmp_path / "art")[0]
    assert b["media"][0]["uri"] == a["media"][0]["uri"]
    assert Path(b["media"][0]["uri"]).read_bytes() == first
    assert b["media"][0]["sha256"] == a["media"][0]["sha256"]


def test_items_already_in_target_format_are_left_alone(tmp_path: Path) -> None:
    src = synth.make_audio(tmp_path / "in.flac", seconds=1.0, sample_rate=16000)
    media = new_media("audio", str(src), format="flac", codec="flac", sample_rate=16000, channels=1)
    out = run([rec("a", media)], tmp_path / "art")[0]
    assert out["media"][0]["uri"] == str(src) and out["meta"] is None
    assert out["scores"]["transcoded"] == 0.0
    forced = run([rec("a", dict(media))], tmp_path / "art", force=True)[0]
    assert forced["media"][0]["uri"] != str(src) and forced["scores"]["transcoded"] == 1.0


def test_audio_in_a_tar_member_is_read_by_offset(tmp_path: Path) -> None:
    src = synth.make_audio(tmp_path / "in.wav", seconds=1.0, sample_rate=8000, kind="noise")
    tar_path = tmp_path / "shard.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src, arcname="k.wav")
    with tarfile.open(tar_path) as tar:
        info = tar.getmember("k.wav")
    media = new_media("audio", str(tar_path), member="k.wav", offset=info.offset_data, length=info.size)
    out = run([rec("a", media)], tmp_path / "art")[0]
    m = out["media"][0]
    assert (m["member"], m["offset"], m["sample_rate"]) == (None, None, 16000)
    assert m["duration_s"] == pytest.approx(1.0, abs=1e-3)
    assert json.loads(out["meta"])["transcode"][0]["original_member"] == "k.wav"


def test_video_audio_track_becomes_a_new_item(tmp_path: Path) -> None:
    with_audio = synth.make_video(tmp_path / "v.mp4", seconds=1.0, audio=True)
    silent = synth.make_video(tmp_path / "s.mp4", seconds=1.0, audio=False)
    rows = [
        rec("v", new_media("video", str(with_audio), has_audio=True), layout="video", modalities=["video"]),
        rec("s", new_media("video", str(silent)), layout="video", modalities=["video"]),
    ]
    v, s = run(rows, tmp_path / "art", from_video=True)
    assert v["status"] == s["status"] == Status.KEPT
    assert len(v["media"]) == 2 and v["media"][0]["uri"] == str(with_audio)
    track = v["media"][1]
    assert (track["modality"], track["role"], track["sample_rate"], track["channels"]) == ("audio", "audio_track", 16000, 1)
    assert track["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert v["modalities"] == ["video", "audio"] and v["layout"] == "video"
    assert len(s["media"]) == 1 and s["scores"]["transcoded"] == 0.0  # no audio stream: nothing to extract
    # without from_video, videos are not touched
    plain = run([rec("v2", new_media("video", str(with_audio)), layout="video")], tmp_path / "art")[0]
    assert len(plain["media"]) == 1


@pytest.mark.parametrize("kind,reason", [("garbage", ReasonCode.CORRUPT_MEDIA), ("missing", ReasonCode.MISSING_FILE)])
def test_broken_input_is_quarantined(tmp_path: Path, kind: str, reason: ReasonCode) -> None:
    path = tmp_path / "bad.wav"
    if kind == "garbage":
        synth.make_corrupt(path)
    out = run([rec("b", new_media("audio", str(path)))], tmp_path / "art")[0]
    assert (out["status"], out["status_reason"], out["status_operator"]) == (Status.QUARANTINED, reason, "audio_transcode")
    assert not any((tmp_path / "art").glob("*"))  # nothing half-written is left


def test_decoder_streams_in_bounded_chunks(tmp_path: Path) -> None:
    src = synth.make_audio(tmp_path / "long.wav", seconds=30.0, sample_rate=16000, kind="noise")
    sizes = []
    with AudioDecoder(new_media("audio", str(src)), sample_rate=8000, channels=1) as dec:
        for chunk in dec:
            sizes.append(chunk.shape[1])
    assert sum(sizes) == 30 * 8000
    assert max(sizes) <= 8000  # never more than a second in memory at once
