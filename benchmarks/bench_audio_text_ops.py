"""Per-core throughput of the audio, text and interleaved-document operators.

Each operator runs alone, in this one process (one core), on generated data, through its real
entry point (``op(arrow_table)``: Arrow -> dicts -> work -> Arrow), so the numbers include the
record conversion the engine pays too. Audio: speech-like recordings with pauses
(``curate.demo.audio.make_speech``); text: dirty captions and transcripts in English and German;
documents: interleaved rows with probed image metadata.

    python benchmarks/bench_audio_text_ops.py                 # default sizes (~1-2 min on 1 core)
    python benchmarks/bench_audio_text_ops.py --quick         # a smoke run

Rates are items (and seconds of audio) per CPU-second of this process, so a busy shared machine
does not understate them; wall time is reported too. Prints a table and writes
benchmarks/results/media_ops_audio_text.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CAPTIONS = [
    "Young woman with a laptop in a cafe - Stock Photo | Shutterstock",
    "Image may contain: 2 people, smiling, outdoor &amp; nature",
    "<p>A red vintage bicycle leans against a brick wall</p> Click here to enlarge",
    "Sunset over the harbour (royalty-free stock image) https://example.com/p?id=42",
    "Der Zug zum Flughafen f&auml;hrt alle zwanzig Minuten von Gleis vier ab.",
    "Guten Morgen und herzlich willkommen zu den Nachrichten aus dem Stadtrat.",
    "Add two cups of flour and stir slowly until the batter is completely smooth.",
    "A golden retriever rests on a wooden porch at sunset. The colours are warm and slightly faded.",
]


def make_audio(folder: Path, files: int, seconds: float) -> list[Path]:
    from curate.demo.audio import make_speech

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        t, bursts = 0.4, []
        while t + 2.5 < seconds:
            bursts.append((round(t, 2), round(t + 1.5 + (i + len(bursts)) % 3 * 0.5, 2)))
            t = bursts[-1][1] + 0.9
        rate, channels = (44100, 2) if i % 2 else (16000, 1)
        paths.append(make_speech(folder / f"a{i:04d}.wav", seconds=seconds, bursts=bursts, sample_rate=rate,
                                 channels=channels, seed=i))  # fmt: skip
    return paths


def audio_rows(paths: list[Path]) -> list[dict[str, Any]]:
    from schemas.record import new_media, new_record

    rows = []
    for i, p in enumerate(paths):
        media = new_media("audio", str(p), sha256=f"{i:064x}")
        rows.append(new_record(source="bench", locator=str(p), id=f"a{i:06d}", layout="audio", media=[media]))
    return rows


def text_rows(n: int) -> list[dict[str, Any]]:
    from schemas.record import new_record

    return [new_record(source="bench", locator=f"t{i}", id=f"t{i:06d}", layout="image-text",
                       caption=f"{_CAPTIONS[i % len(_CAPTIONS)]} #{i}") for i in range(n)]  # fmt: skip


def doc_rows(n: int) -> list[dict[str, Any]]:
    from schemas.record import new_media, new_record

    rows = []
    for i in range(n):
        media, segs = [], []
        for k in range(12):
            segs.append({"kind": "text", "text": f"Paragraph {k} of document {i}: " + "some words here " * 12, "media_index": None})
            name, w, h = [("photo", 640, 480), ("icon", 16, 16), ("spacer", 600, 2), ("logo", 200, 80)][k % 4]
            media.append(new_media("image", f"/site/{i}/{name}_{k}.jpg", width=w, height=h))
            segs.append({"kind": "media", "text": None, "media_index": k})
        rows.append(new_record(source="bench", locator=f"d{i}", id=f"d{i:06d}", layout="interleaved", media=media,
                               interleaved=segs, modalities=["text", "image"]))  # fmt: skip
    return rows


def timed(op: Any, rows: list[dict[str, Any]], batch: int) -> tuple[tuple[float, float], list[dict[str, Any]]]:
    """((wall seconds, CPU seconds of this process), output rows)."""
    from schemas.record import from_table, to_table

    tables = [to_table(rows[i : i + batch]) for i in range(0, len(rows), batch)]
    t0, c0 = time.perf_counter(), time.process_time()
    outs = [op(t) for t in tables]
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    out = [r for t in outs for r in from_table(t)]
    return seconds, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=24, help="audio files per audio benchmark")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each audio file")
    ap.add_argument("--captions", type=int, default=20000)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    args = ap.parse_args()
    if args.quick:
        args.files, args.seconds, args.captions, args.docs = 4, 8.0, 500, 100

    import scipy.signal  # noqa: F401 - imports are not throughput
    import webrtcvad  # noqa: F401

    from operators.audio.quality import AudioQuality
    from operators.audio.transcode import AudioTranscode
    from operators.audio.vad import AudioSegment
    from operators.base import StageContext
    from operators.text.clean import TextClean
    from operators.text.interleaved import InterleavedClean
    from operators.text.quality import TextQuality

    work = Path(tempfile.mkdtemp(prefix="bench_audio_text_"))
    t = time.perf_counter()
    paths = make_audio(work / "audio", args.files, args.seconds)
    print(f"data: {args.files} x {args.seconds:g}s wav (half 16 kHz mono, half 44.1 kHz stereo) in {time.perf_counter() - t:.1f}s")
    audio_s = args.files * args.seconds
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "note": "one process = one core; rates are per CPU-second of this process (the machine may be shared); "
        "op(table) incl. Arrow conversion",
        "sizes": {"audio_files": args.files, "audio_seconds_each": args.seconds, "captions": args.captions, "docs": args.docs},
        "ops": {},
    }  # fmt: skip

    def record(name: str, seconds: tuple[float, float], items: int, unit: str, audio: float | None = None) -> None:
        wall, cpu = seconds
        entry = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "items": items, "unit": unit,
                 "items_per_s": round(items / cpu, 2)}  # fmt: skip
        if audio is not None:
            entry["audio_s_per_s"] = round(audio / cpu, 1)
        results["ops"][name] = entry

    def audio_op(name: str, factory: Callable[[Any], Any], rows: list[dict[str, Any]], batch: int = 4) -> list[dict[str, Any]]:
        op = factory(StageContext(name, artifacts_dir=str(work / "artifacts" / name)))
        seconds, out = timed(op, rows, batch)
        bad = [r["status_detail"] for r in out if r["status"] == "quarantined"]
        assert not bad, bad
        record(name, seconds, len(rows), "files", audio_s)
        return out

    transcoded = audio_op("audio_transcode", lambda ctx: AudioTranscode({"sample_rate": 16000, "channels": 1}, ctx), audio_rows(paths))
    audio_op("audio_quality (source wav)", lambda ctx: AudioQuality({}, ctx), audio_rows(paths))
    audio_op("audio_quality (16k flac)", lambda ctx: AudioQuality({}, ctx), [dict(r) for r in transcoded])
    for method in ("webrtc", "energy"):
        audio_op(f"audio_segment ({method})", lambda ctx, m=method: AudioSegment({"method": m, "max_s": 10.0}, ctx),
                 [dict(r) for r in transcoded])  # fmt: skip

    captions = text_rows(args.captions)
    seconds, cleaned = timed(TextClean({}), captions, 1024)
    record("text_clean", seconds, len(captions), "captions")
    for label, params in (("all languages, low accuracy", {}), ("en+de", {"languages": ["en", "de"]})):
        op = TextQuality(params)
        op.detect("warm up the language models once")  # lazy model loading is not throughput
        seconds, _ = timed(op, [dict(r) for r in cleaned], 512)
        record(f"text_quality ({label})", seconds, len(captions), "captions")
    docs = doc_rows(args.docs)
    seconds, _ = timed(InterleavedClean({}), docs, 256)
    record("interleaved_clean", seconds, len(docs), "documents (12 images, 12 paragraphs)")
    shutil.rmtree(work, ignore_errors=True)

    print(f"{'operator':<44}{'items':>7}{'unit':>10}{'wall s':>8}{'cpu s':>8}{'items/s':>10}{'audio-s/s':>11}")
    for name, r in results["ops"].items():
        unit = r["unit"].split()[0]
        audio = f"{r['audio_s_per_s']:>11.1f}" if "audio_s_per_s" in r else f"{'':>11}"
        print(f"{name:<44}{r['items']:>7}{unit:>10}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['items_per_s']:>10.1f}{audio}")
    print("items/s and audio-s/s are per CPU-second of this single process, i.e. per core")
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(exist_ok=True)
    (dest / "media_ops_audio_text.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
