"""What the probe's end check costs: ``probe_media`` per file with ``check_end: []`` and with the
default (image, video, audio), on one CPU core, over generated media of typical sizes.

The end check reads bytes for the container's own structure (MP4 boxes, RIFF chunks, PNG chunks,
JPEG's end marker...) and, for video and audio, seeks one second before the stated end and reads
to the end of the data (audio decoded, video until one frame decodes). Type sniffing (first 8 KiB)
runs in both settings.

    python benchmarks/bench_probe_end_check.py                 # default sizes, 3 runs, median
    python benchmarks/bench_probe_end_check.py --repeat 5

Prints a table and writes benchmarks/results/probe_end_check.json. Generated media is kept in
benchmarks/_data/probe_end (delete it to regenerate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "_data" / "probe_end"
RESULT = ROOT / "benchmarks" / "results" / "probe_end_check.json"


def _faststart(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for pkt in inp.demux():
            if pkt.dts is not None:
                pkt.stream = streams[pkt.stream.index]
                out.mux(pkt)


def _video(path: Path, seconds: float, width: int, height: int, gop_s: float, seed: int) -> None:
    from curate.demo.media import Segment, segment_video

    tmp = path.with_suffix(".tmp.mp4")
    segs = [
        Segment("moving", seconds / 2, seed=seed, pan_px=2),
        Segment("moving", seconds / 2, seed=seed + 1, pan_px=2),
    ]
    segment_video(tmp, segs, fps=24, width=width, height=height, audio=True, gop=round(gop_s * 24))
    _faststart(tmp, path)
    tmp.unlink()


#: name -> (how many, maker(path, i), suffix)
SETS: dict[str, tuple[int, Callable[[Path, int], Any], str]] = {
    "jpeg_1920x1080": (60, lambda p, i: _image(p, 1920, 1080, i, "noise"), ".jpg"),
    "png_1024x768": (40, lambda p, i: _image(p, 1024, 768, i, "shapes"), ".png"),
    "gif_320x240": (40, lambda p, i: _image(p, 320, 240, i, "shapes"), ".gif"),
    "mp4_12s_640x360_gop2s": (8, lambda p, i: _video(p, 12.0, 640, 360, 2.0, 10 * i), ".mp4"),
    "mp4_60s_320x180_gop10s": (4, lambda p, i: _video(p, 60.0, 320, 180, 10.0, 10 * i), ".mp4"),
    "flac_30s_16k": (20, lambda p, i: _audio(p, 30.0, 16000, i), ".flac"),
    "wav_30s_16k": (20, lambda p, i: _audio(p, 30.0, 16000, i), ".wav"),
    "mp3_30s_44k": (20, lambda p, i: _audio(p, 30.0, 44100, i), ".mp3"),
    "m4a_30s_44k": (20, lambda p, i: _audio(p, 30.0, 44100, i), ".m4a"),
}


def _image(path: Path, w: int, h: int, seed: int, pattern: str) -> None:
    from curate.demo.synth import make_image

    make_image(path, w, h, seed=seed, pattern=pattern)


def _audio(path: Path, seconds: float, rate: int, seed: int) -> None:
    from curate.demo.synth import make_audio

    make_audio(path, seconds=seconds, sample_rate=rate, seed=seed, kind="speechlike")


def make_set(name: str) -> list[Path]:
    count, maker, suffix = SETS[name]
    folder = DATA / name
    marker = folder / f".complete-{count}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(count):
            maker(folder / f"f{i:04d}{suffix}", i)
        marker.write_text("ok")
    return sorted(p for p in folder.iterdir() if p.suffix == suffix)


def modality(suffix: str) -> str:
    from schemas.media_types import modality_of_ext

    return modality_of_ext(suffix) or "image"


def run_once(paths: list[Path], params: Any) -> tuple[float, float]:
    """Seconds for probe_media over ``paths``; and the media seconds probed."""
    from operators.probe import probe_media
    from schemas.record import new_media

    media = [new_media(modality(p.suffix), str(p)) for p in paths]
    t0 = time.perf_counter()
    for m in media:
        probe_media(m, params)
    elapsed = time.perf_counter() - t0
    return elapsed, sum(m.get("duration_s") or 0.0 for m in media)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the median is reported")
    ap.add_argument("--only", nargs="*", default=None, help="names of the sets to run")
    ap.add_argument("--core", type=int, default=None, help="CPU core to pin to (default: the first allowed)")
    args = ap.parse_args()

    from operators.probe import ProbeParams

    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.core if args.core is not None else allowed[0]})
    settings = {"no end check": ProbeParams(check_end=[]), "end check (default)": ProbeParams()}
    results: dict[str, Any] = {}
    print(f"{'set':26s} {'files':>5s} {'no check ms/file':>17s} {'end check ms/file':>18s} {'overhead':>9s}")
    for name in args.only or list(SETS):
        paths = make_set(name)
        run_once(paths, settings["no end check"])  # warm the page cache and the imports
        row: dict[str, Any] = {"files": len(paths), "bytes": sum(p.stat().st_size for p in paths)}
        for label, params in settings.items():
            runs = []
            for _ in range(args.repeat):
                seconds, media_s = run_once(paths, params)
                runs.append(seconds)
            row[label] = {
                "seconds": statistics.median(runs),
                "runs": runs,
                "ms_per_file": 1000 * statistics.median(runs) / len(paths),
            }
            row["media_seconds"] = media_s
        base, checked = row["no end check"]["ms_per_file"], row["end check (default)"]["ms_per_file"]
        row["overhead_ms_per_file"] = checked - base
        row["overhead_ratio"] = checked / base - 1 if base else None
        results[name] = row
        print(f"{name:26s} {len(paths):5d} {base:17.2f} {checked:18.2f} {100 * row['overhead_ratio']:8.0f}%")

    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({
        "command": "python benchmarks/bench_probe_end_check.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_avg": os.getloadavg()},
        "results": results,
    }, indent=2))  # fmt: skip
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
