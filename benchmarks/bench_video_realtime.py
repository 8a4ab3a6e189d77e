"""Video operators against real time, per core, on generated 720p H.264 with motion (issue 13 item 5).

Clips are 1280x720 H.264 (libx264, High profile, B-frames, crf 23 ``veryfast``), 30 or 25 fps, a
keyframe every 2-5 s (plus x264's own at scene cuts, as in real footage), a cut every 5-8 s, each
scene a textured picture panning under moving shapes with a little grain, and a stereo
AAC track (48 kHz). The set: four clips of 20 s (GOP 2, 3, 4 and 5 s) and two long ones (60 s at
30 fps, GOP 2 s; 120 s at 25 fps, GOP 5 s).

Each clip is probed (untimed), then each operator runs on it alone, with a cold per-process frame
cache, in this process: ``dedup_video`` signatures (the summarize step of the global operator),
``video_frames`` (defaults: 8 thumbnails of 256 px), ``video_quality`` (defaults), and the three
together, one after the other in one process (video_frames, video_quality, then dedup_video: what
a clip costs that goes through all three; the last two share one decode); and, for reference, a plain decode of every frame (one thread, no conversion:
``full_decode``). Time is CPU seconds of the process (``time.process_time()``: all threads, including
FFmpeg's), so the number does not move when other work shares the machine; wall time is printed
too. "x real time per core" = clip duration / CPU seconds.

    python benchmarks/bench_video_realtime.py                 # the whole set, 2 repeats (median)
    python benchmarks/bench_video_realtime.py --quick         # two 20 s clips and the 60 s one
    python benchmarks/bench_video_realtime.py --profile dedup_video   # cProfile of one operator

Writes benchmarks/results/video_realtime.json (``--out`` to change). Generated clips are kept in
benchmarks/_data/video_realtime (delete it to regenerate).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "_data" / "video_realtime"
RESULT = ROOT / "benchmarks" / "results" / "video_realtime.json"
W, H = 1280, 720

#: name -> (seconds, fps, GOP in seconds)
CLIPS: dict[str, tuple[float, int, float]] = {
    "c20_gop2": (20.0, 30, 2.0),
    "c20_gop3": (20.0, 30, 3.0),
    "c20_gop4": (20.0, 25, 4.0),
    "c20_gop5": (20.0, 30, 5.0),
    "c60_gop2": (60.0, 30, 2.0),
    "c120_gop5": (120.0, 25, 5.0),
}
QUICK = ("c20_gop2", "c20_gop5", "c60_gop2")


# ----------------------------------------------------------------------------- generated clips


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like picture: colour gradients, blurred blobs of noise at a few scales, edges."""
    from PIL import Image, ImageFilter

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        img[..., c] = 128 + 70 * np.sin(a * xx / w * 4 + b * yy / h * 3 + rng.uniform(0, 6))
    for scale in (8, 32, 96):
        small = rng.uniform(-1, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        up = np.asarray(Image.fromarray(((small + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC))
        img += (up.astype(np.float32) - 127.5) * (0.35 if scale == 8 else 0.5)
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
    return np.asarray(pic)


def _bounce(x: float, span: float) -> float:
    """x folded into [0, span] (back and forth): a position that bounces between two walls."""
    return span - abs(x % (2 * span) - span)


def _scene_frames(rng: np.random.Generator, n: int, fps: int, grain: np.ndarray):
    pad = 160
    tex = _texture(rng, H + 2 * pad, W + 2 * pad)
    vx, vy = rng.uniform(-90, 90, 2)  # pan, pixels per second
    shapes = []
    for _ in range(4):
        side = int(rng.integers(60, 200))
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        pos = rng.uniform([0, 0], [W - side, H - side])
        vel = rng.uniform(-300, 300, 2)
        shapes.append((side, colour, pos, vel))
    yy, xx = np.mgrid[0:200, 0:200]
    for i in range(n):
        t = i / fps
        ox, oy = int(_bounce(pad + vx * t, 2 * pad)), int(_bounce(pad + vy * t, 2 * pad))
        frame = tex[oy : oy + H, ox : ox + W].copy()
        for side, colour, pos, vel in shapes:
            p = pos + vel * t
            x, y = int(_bounce(p[0], W - side)), int(_bounce(p[1], H - side))
            r = side / 2
            mask = (xx[:side, :side] - r) ** 2 + (yy[:side, :side] - r) ** 2 <= r * r
            frame[y : y + side, x : x + side][mask] = colour
        g = grain[i % len(grain)]
        yield np.clip(frame.astype(np.int16) + g, 0, 255).astype(np.uint8)


def make_clip(path: Path, seconds: float, fps: int, gop_s: float, seed: int) -> None:
    import av

    from curate.demo.synth import _encode_audio

    rng = np.random.default_rng(seed)
    grain = [rng.integers(-3, 4, (H, W, 1), dtype=np.int16) for _ in range(5)]
    total = round(seconds * fps)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23", "profile": "high"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.codec_context.gop_size = round(gop_s * fps)
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "stereo"
        done = 0
        while done < total:
            n = min(total - done, round(rng.uniform(5, 8) * fps))
            for arr in _scene_frames(rng, n, fps, grain):
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                frame.pts = done
                done += 1
                out.mux(vs.encode(frame))
        out.mux(vs.encode())
        sr = 48000
        t = np.arange(round(seconds * sr)) / sr
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)
        left = 0.2 * env * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(len(t))
        right = 0.2 * env * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(len(t))
        _encode_audio(out, aus, np.stack([left, right]).astype(np.float32), sr)
    os.replace(tmp, path)


def make_clips(names: list[str]) -> dict[str, Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, name in enumerate(CLIPS):
        if name not in names:
            continue
        p = DATA / f"{name}.mp4"
        if not p.exists():
            t0 = time.perf_counter()
            make_clip(p, *CLIPS[name], seed=k)
            print(f"generated {p.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        paths[name] = p
    return paths


# ----------------------------------------------------------------------------- the operators


def probed_table(path: Path) -> Any:
    from curate.ingest import finalize_record
    from operators.confine import Confinement
    from operators.probe import Probe
    from schemas.record import new_media, new_record, to_table

    rec = new_record(source="bench", locator=str(path), layout="video-text", caption="x", modalities=["video", "text"],
                     media=[new_media("video", str(path))])  # fmt: skip
    row = finalize_record(rec, unit="bench", ordinal=0, row=0, reader="bench", confinement=Confinement([str(path.parent)]))
    return Probe({})(to_table([row]))


def operators(art: Path) -> dict[str, Any]:
    from operators.base import StageContext
    from operators.dedup.video import VideoDedup
    from operators.video.frames import VideoFrames
    from operators.video.quality import VideoQuality
    from schemas.record import from_table

    dedup = VideoDedup()
    frames_op = VideoFrames({}, StageContext("video_frames", artifacts_dir=str(art)))
    quality = VideoQuality({})

    def check(table: Any, name: str) -> Any:
        bad = [r for r in from_table(table) if r["status"] != "kept"]
        if bad:
            raise SystemExit(f"{name}: {bad[0]['status']} {bad[0]['status_detail']}")
        return table

    def run_dedup(table: Any) -> Any:
        sig = dedup.signatures(table)
        if any(sig.errors):
            raise SystemExit(f"dedup_video: {sig.errors}")
        return table

    def run_frames(table: Any) -> Any:
        return check(frames_op(table), "video_frames")

    def run_quality(table: Any) -> Any:
        return check(quality(table), "video_quality")

    def run_all(table: Any) -> Any:
        return run_dedup(run_quality(run_frames(table)))

    def run_full_decode(table: Any) -> Any:
        """The reference: every frame decoded (one thread, no conversion), what a plain loop costs."""
        import av

        with av.open(table.to_pylist()[0]["media"][0]["uri"]) as c:
            vs = c.streams.video[0]
            vs.codec_context.thread_count = 1
            for _ in c.decode(vs):
                pass
        return table

    return {"dedup_video": run_dedup, "video_frames": run_frames, "video_quality": run_quality, "all_three": run_all,
            "full_decode": run_full_decode}  # fmt: skip


def measure(fn, table: Any, repeat: int) -> dict[str, Any]:
    import operators.video.decode as decode

    cpu, wall, stats = [], [], {}
    for _ in range(repeat):
        decode.clear_cache()
        decode.STATS.clear()
        c0, w0 = time.process_time(), time.perf_counter()
        fn(table)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        stats = dict(decode.STATS)
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), "cpu_runs": cpu, "decode_stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--clips", nargs="+", choices=list(CLIPS), help="these clips only")
    ap.add_argument("--repeat", type=int, default=2, help="runs per operator and clip; the median is reported")
    ap.add_argument("--profile", choices=["dedup_video", "video_frames", "video_quality", "all_three", "full_decode"],
                    help="print a cProfile of this operator over the clips instead of timing")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--label", default="", help="a note stored with the results (e.g. 'before')")
    args = ap.parse_args()

    names = args.clips or (list(QUICK) if args.quick else list(CLIPS))
    paths = make_clips(names)
    tables = {name: probed_table(p) for name, p in paths.items()}
    art = Path(tempfile.mkdtemp(prefix="bench_video_rt_"))
    try:
        ops = operators(art)
        if args.profile:
            import operators.video.decode as decode

            ops[args.profile](next(iter(tables.values())))  # warm up: imports are not profiled
            prof = cProfile.Profile()
            for table in tables.values():
                decode.clear_cache()
                prof.runcall(ops[args.profile], table)
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
            print(s.getvalue())
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
            print(s.getvalue())
            return
        first = next(iter(tables.values()))
        for fn in ops.values():  # warm up: imports (scipy for pHash, PIL, PyAV's codecs) are not timed
            fn(first)
        results: dict[str, dict[str, Any]] = {}
        for name, table in tables.items():
            media = table.to_pylist()[0]["media"][0]
            dur = float(media["duration_s"])
            results[name] = {"duration_s": dur, "fps": CLIPS[name][1], "gop_s": CLIPS[name][2], "ops": {}}
            for op_name, fn in ops.items():
                r = measure(fn, table, args.repeat)
                r["x_realtime_per_core"] = round(dur / r["cpu_s"], 2)
                r["x_realtime_wall"] = round(dur / r["wall_s"], 2)
                results[name]["ops"][op_name] = r
                print(f"{name:<10} {op_name:<14} cpu {r['cpu_s']:7.3f} s  wall {r['wall_s']:7.3f} s  "
                      f"{r['x_realtime_per_core']:7.1f}x real time per core  {r['decode_stats']}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(art, ignore_errors=True)

    summary: dict[str, dict[str, float]] = {}
    for op_name in ops:
        per = {n: r["ops"][op_name]["x_realtime_per_core"] for n, r in results.items()}
        total_d = sum(r["duration_s"] for r in results.values())
        total_cpu = sum(r["ops"][op_name]["cpu_s"] for r in results.values())
        summary[op_name] = {"min_x": min(per.values()), "overall_x": round(total_d / total_cpu, 2),
                            "cpu_s_total": round(total_cpu, 3), "media_s_total": total_d}  # fmt: skip
    print(f"\n{'operator':<14}{'worst clip':>12}{'all clips':>11}   (x real time per core = media s / CPU s)")
    for op_name, s in summary.items():
        print(f"{op_name:<14}{s['min_x']:>11.1f}x{s['overall_x']:>10.1f}x")

    import av

    report = {
        "command": "python benchmarks/bench_video_realtime.py " + " ".join(sys.argv[1:]),
        "label": args.label,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg": av.ffmpeg_version_info,
        "clips": {n: {"seconds": CLIPS[n][0], "fps": CLIPS[n][1], "gop_s": CLIPS[n][2], "size": f"{W}x{H}",
                      "bytes": paths[n].stat().st_size} for n in names},  # fmt: skip
        "summary": summary,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
