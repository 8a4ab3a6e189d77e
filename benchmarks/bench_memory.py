"""Peak memory of the media operators against file length: does any grow with the file?

Generates a short and a 10x longer file of each kind (video 320x240 at 24 fps with an AAC track,
60 s and 600 s; speech-like 16 kHz WAV, 120 s and 1,200 s), then runs probe and one operator on
one row per file, each in a fresh process, and reports the process's peak RSS (VmHWM) and the
operator's wall time. Imports alone take ~150 MB; what matters is the difference between short and long.

    python benchmarks/bench_memory.py                 # all operators below
    python benchmarks/bench_memory.py --ops video_shots audio_quality

Prints a table and writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VIDEO_OPS = ["video_frames", "video_quality", "video_shots"]
AUDIO_OPS = ["audio_quality", "audio_transcode", "audio_segment"]

_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from operators.base import StageContext
from operators.registry import OPERATORS, load_builtins
from schemas.record import from_table, new_media, new_record, to_table
load_builtins()
op_name, path, modality, art = sys.argv[1:5]
row = new_record(source="b", locator=path, layout=modality + "-text", caption="x", media=[new_media(modality, path)])
table = OPERATORS["probe"]({{}})(to_table([row]))
op = OPERATORS[op_name]({{}}, StageContext(op_name, artifacts_dir=art))
t0 = time.perf_counter()
out = from_table(op(table))
# VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's over exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"rows_out": len(out), "status": out[0]["status"], "seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": hwm // 1024}}))
"""


def make_media(work: Path) -> dict[str, dict[str, Path]]:
    from curate.demo import synth

    files = {"video": {}, "audio": {}}
    for name, seconds in (("short", 60), ("long", 600)):
        p = work / f"{name}.mp4"
        if not p.exists():
            synth.make_video(p, seconds=seconds, fps=24, width=320, height=240, audio=True)
        files["video"][name] = p
    for name, seconds in (("short", 120), ("long", 1200)):
        p = work / f"{name}.wav"
        if not p.exists():
            synth.make_audio(p, seconds=seconds, kind="speechlike", seed=1)
        files["audio"][name] = p
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", nargs="+", default=VIDEO_OPS + AUDIO_OPS)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "nmm-bench-memory"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = make_media(work)
    child = _CHILD.format(root=str(ROOT))
    results = []
    print(f"{'operator':<16} {'file':<6} {'media s':>8} {'seconds':>8} {'peak MB':>8} {'rows out':>8}")
    for op in args.ops:
        modality = "video" if op in VIDEO_OPS else "audio"
        for name, path in files[modality].items():
            r = subprocess.run(
                [sys.executable, "-c", child, op, str(path), modality, str(work / f"art-{op}-{name}")],
                capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
            res = {"op": op, "file": name, "media_seconds": {"video": {"short": 60, "long": 600}, "audio": {"short": 120, "long": 1200}}[modality][name]}
            res.update(json.loads(r.stdout.strip().splitlines()[-1]))
            results.append(res)
            print(f"{op:<16} {name:<6} {res['media_seconds']:>8} {res['seconds']:>8} {res['peak_rss_mb']:>8} {res['rows_out']:>8}", flush=True)
    out = {
        "benchmark": "memory",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
