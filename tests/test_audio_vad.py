"""audio_segment: voice-activity segmentation against speech bursts at known times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curate.demo.audio import make_speech
from curate.outputs import ledger_counts
from operators.audio.vad import AudioSegment
from operators.base import StageContext
from operators.registry import OPERATORS
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table

BURSTS = [(0.8, 3.1), (4.6, 6.2), (8.0, 11.5), (13.0, 14.4), (16.2, 19.0), (21.0, 23.3)]
TOL = 0.15  # seconds: detected speech edges vs the planted ones (30 ms frames + VAD hangover)


def rec(path: Path, name: str = "r", **fields: Any) -> dict[str, Any]:
    fields.setdefault("layout", "audio-text" if fields.get("transcript") else "audio")
    media = new_media("audio", str(path), sha256="parent-sha", sample_rate=16000, channels=1)
    return new_record(source="t", locator=f"/data/{name}.wav", id=f"id-{name}", media=[media], **fields)


def split(rows: list[dict[str, Any]], out: Path, **params: Any) -> list[dict[str, Any]]:
    op = AudioSegment(params, StageContext("audio_segment", artifacts_dir=str(out)))
    return from_table(op(to_table(rows)))


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech(tmp_path_factory.mktemp("vad") / "talk.wav", seconds=25.0, bursts=BURSTS, seed=7)


def test_registered_and_params_validated() -> None:
    assert OPERATORS["audio_segment"] is AudioSegment
    for key in ("num_segments", "speech_ratio", "segment_start_s", "segment_end_s"):
        assert AudioSegment.writes[key]
    with pytest.raises(ValidationError, match="max_s"):
        AudioSegment({"min_s": 5, "max_s": 8})
    with pytest.raises(ValidationError):
        AudioSegment({"method": "silero"})


@pytest.mark.parametrize("method", ["webrtc", "energy"])
def test_segments_match_the_planted_speech(tmp_path: Path, recording: Path, method: str) -> None:
    rows = split([rec(recording)], tmp_path / "art", method=method, padding_s=0.0, max_s=10.0)
    parent, children = rows[0], rows[1:]
    assert (parent["status"], parent["status_reason"], parent["status_operator"]) == (Status.SPLIT, ReasonCode.SPLIT, "audio_segment")
    assert parent["scores"]["num_segments"] == len(BURSTS) == len(children)
    for child, (start, end) in zip(children, BURSTS, strict=True):
        s = child["scores"]
        assert s["segment_start_s"] == pytest.approx(start, abs=TOL)
        assert s["segment_end_s"] == pytest.approx(end, abs=TOL)
        assert s["duration_s"] == pytest.approx(s["segment_end_s"] - s["segment_start_s"], abs=1e-3)
    speech = sum(e - s for s, e in BURSTS) / 25.0
    assert parent["scores"]["speech_ratio"] == pytest.approx(speech, abs=0.03)


def test_children_are_playable_files_and_proper_derived_rows(tmp_path: Path, recording: Path) -> None:
    rows = split([rec(recording, language="en", meta={"speaker": "a"})], tmp_path / "art", padding_s=0.2, max_s=10.0)
    parent, children = rows[0], rows[1:]
    assert len({c["id"] for c in children}) == len(children) == len({c["content_hash"] for c in children})
    previous_end = 0.0
    for i, c in enumerate(children):
        assert c["status"] == Status.KEPT and c["parent_id"] == parent["id"]
        assert c["locator"] == f"{parent['locator']}#seg{i:03d}"
        assert c["lineage"] == parent["lineage"] and c["language"] == "en"
        m = c["media"][0]
        assert Path(m["uri"]).name == f"{parent['id']}-seg{i:03d}.flac"
        with av.open(m["uri"]) as f:  # a real, decodable file of the promised length
            st = f.streams.audio[0]
            n = sum(fr.samples for fr in f.decode(st))
            assert (st.sample_rate, st.channels, st.codec_context.name) == (16000, 1, "flac")
        assert n / 16000 == pytest.approx(m["duration_s"]) == pytest.approx(c["scores"]["duration_s"])
        assert m["bytes"] == Path(m["uri"]).stat().st_size and m["sha256"] not in (None, "parent-sha")
        start, end = c["scores"]["segment_start_s"], c["scores"]["segment_end_s"]
        assert start >= previous_end - 1e-9  # padding never makes neighbours overlap
        assert start == pytest.approx(max(BURSTS[i][0] - 0.2, 0), abs=TOL)
        previous_end = end
        meta = json.loads(c["meta"])
        assert meta["speaker"] == "a" and meta["segment"]["index"] == i
        assert c["scores"]["segment_index"] == float(i)
        # rescored on the segment itself: speech almost everywhere, pauses carry the noise floor
        assert c["scores"]["speech_ratio"] > 0.7 and c["scores"]["quality_seconds"] == pytest.approx(m["duration_s"])
        assert "num_segments" not in c["scores"]


def test_the_ledger_counts_parent_as_split_and_children_as_derived(tmp_path: Path, recording: Path) -> None:
    short = make_speech(tmp_path / "short.wav", seconds=5.0, bursts=[(0.5, 2.0), (3.0, 4.5)])
    rows = split([rec(recording, "long"), rec(short, "short")], tmp_path / "art", max_s=10.0)
    path = tmp_path / "out.parquet"
    pq.write_table(to_table(rows), path)
    ledger = ledger_counts([path])
    c = ledger["counts"]
    assert ledger["balanced"]
    assert (c["input"], c["derived"], c["split"], c["kept"]) == (2, len(BURSTS), 1, len(BURSTS) + 1)
    assert ledger["split"] == {"audio_segment": {"split": 1}}


def test_long_speech_is_cut_at_max_s(tmp_path: Path) -> None:
    path = make_speech(tmp_path / "monologue.wav", seconds=50.0, bursts=[(1.0, 46.0)], seed=3)
    rows = split([rec(path)], tmp_path / "art", max_s=12.0, min_s=2.0, padding_s=0.0, method="energy")
    children = rows[1:]
    spans = [(c["scores"]["segment_start_s"], c["scores"]["segment_end_s"]) for c in children]
    assert len(children) >= 4
    assert all(2.0 <= e - s <= 12.0 + 1e-6 for s, e in spans)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:], strict=False))  # contiguous cuts
    assert spans[0][0] == pytest.approx(1.0, abs=TOL) and spans[-1][1] == pytest.approx(46.0, abs=TOL)


def test_webrtc_rejects_stationary_noise_above_the_silence_gate(tmp_path: Path) -> None:
    bursts = [(1.0, 3.0), (5.0, 7.5), (9.0, 10.5)]
    path = make_speech(tmp_path / "noisy.wav", seconds=12.0, bursts=bursts, noise_db=-30, seed=3)
    rows = split([rec(path)], tmp_path / "art", method="webrtc", aggressiveness=2, padding_s=0.0, max_s=6.0)
    spans = [(c["scores"]["segment_start_s"], c["scores"]["segment_end_s"]) for c in rows[1:]]
    assert len(spans) == len(bursts)
    for (s, e), (bs, be) in zip(spans, bursts, strict=True):
        assert s == pytest.approx(bs, abs=TOL) and e == pytest.approx(be, abs=TOL)


def test_untimed_transcript_stays_on_the_parent(tmp_path: Path, recording: Path) -> None:
    row = rec(recording, transcript="all the words", caption="a talk", scores={"text_chars": 19.0, "text_words": 5.0})
    rows = split([row], tmp_path / "art", max_s=10.0)
    parent, children = rows[0], rows[1:]
    assert parent["status"] == Status.SPLIT and parent["transcript"] == "all the words"
    for c in children:
        assert c["transcript"] is None and c["caption"] is None
        assert (c["scores"]["text_chars"], c["scores"]["text_words"]) == (0.0, 0.0)  # recounted, not inherited
        assert (c["layout"], c["modalities"]) == ("audio", ["audio"])
        meta = json.loads(c["meta"])
        assert parent["id"] in meta["transcript_note"]
        assert meta["parent_text_fields"] == ["caption"]  # a caption of the whole talk does not fit a segment


def test_keep_whole_does_not_split_transcribed_recordings(tmp_path: Path, recording: Path) -> None:
    rows = split([rec(recording, transcript="all the words")], tmp_path / "art", max_s=10.0, untimed_transcript="keep_whole")
    assert len(rows) == 1 and rows[0]["status"] == Status.KEPT
    assert rows[0]["scores"]["num_segments"] == len(BURSTS)
    assert "not split" in json.loads(rows[0]["meta"])["transcript_note"]


def test_timed_transcript_is_distributed(tmp_path: Path, recording: Path) -> None:
    pieces = [{"start": s, "end": e, "text": f"utterance {i}"} for i, (s, e) in enumerate(BURSTS)]
    row = rec(recording, transcript=" ".join(p["text"] for p in pieces), meta={"segments": pieces}, scores={"text_chars": 1.0})
    children = split([row], tmp_path / "art", max_s=10.0)[1:]
    assert [c["transcript"] for c in children] == [f"utterance {i}" for i in range(len(BURSTS))]
    assert all(c["scores"]["text_words"] == 2.0 for c in children)
    for c in children:
        assert (c["layout"], c["modalities"]) == ("audio-text", ["audio", "text"])
        meta = json.loads(c["meta"])
        (piece,) = meta["transcript_segments"]
        assert 0 <= piece["start"] < piece["end"] <= c["scores"]["duration_s"] + 1e-6
        assert "segments" not in meta


def test_short_and_silent_recordings_are_kept_whole(tmp_path: Path) -> None:
    short = make_speech(tmp_path / "short.wav", seconds=6.0, bursts=[(0.5, 2.0), (3.5, 5.5)])
    silent = make_speech(tmp_path / "silent.wav", seconds=4.0, bursts=[], noise_db=-90)
    kept_short, kept_silent = split([rec(short, "s"), rec(silent, "z")], tmp_path / "art")
    assert kept_short["status"] == Status.KEPT and kept_short["scores"]["num_segments"] == 2.0
    assert kept_silent["status"] == Status.KEPT
    assert (kept_silent["scores"]["num_segments"], kept_silent["scores"]["speech_ratio"]) == (0.0, 0.0)
    # keep_short false: a short recording with two utterances is split too
    rows = split([rec(short, "s")], tmp_path / "art", keep_short=False, max_s=4.0)
    assert rows[0]["status"] == Status.SPLIT and len(rows) == 3
    assert not any((tmp_path / "art").glob(".*tmp*"))


def test_corrupt_audio_is_quarantined(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    row = split([rec(bad)], tmp_path / "art")[0]
    assert (row["status"], row["status_reason"]) == (Status.QUARANTINED, ReasonCode.CORRUPT_MEDIA)
