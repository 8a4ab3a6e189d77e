"""Per-core throughput of the video and image operators on generated media.

Each operator runs in this process, pinned to one CPU core (FFmpeg then decodes with one thread),
over the same generated files, and reports files/s and media-seconds/s (seconds of video per
second of wall time; megapixels/s for images). ``video_quality`` is measured twice: cold (it
decodes its own frames) and warm (after ``video_frames`` filled the per-process frame cache, as when
both stages are fused in one Ray task).

    python benchmarks/bench_media_ops.py                      # 6 videos of 12 s 640x360, 200 images
    python benchmarks/bench_media_ops.py --videos 12 --images 400 --repeat 3

Prints a table and writes benchmarks/results/media_ops_video_image.json. Generated media is kept in
benchmarks/_data/media_ops (delete it to regenerate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "_data" / "media_ops"
RESULT = ROOT / "benchmarks" / "results" / "media_ops_video_image.json"
VIDEO = {"seconds": 12.0, "fps": 24, "width": 640, "height": 360}


def make_videos(n: int) -> list[Path]:
    from curate.demo.media import Segment, segment_video

    folder = DATA / "videos"
    marker = folder / f".complete-{n}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(n):
            # 3 shots (4 s each) with audio, keyframe every 2 s (typical of web video)
            segs = [Segment("moving", 4.0, seed=10 * i + k, tone_hz=220 + 110 * k, pan_px=2) for k in range(3)]
            segment_video(folder / f"v{i:04d}.mp4", segs, fps=VIDEO["fps"], width=VIDEO["width"],
                          height=VIDEO["height"], audio=True, gop=2 * VIDEO["fps"])  # fmt: skip
        marker.write_text("ok")
    return sorted(folder.glob("v*.mp4"))


def make_images(n: int) -> list[Path]:
    from curate.demo.synth import make_image

    folder = DATA / "images"
    marker = folder / f".complete-{n}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        sizes = [(1024, 768), (1920, 1080), (800, 800), (1280, 960)]
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            make_image(folder / f"i{i:05d}.jpg", w, h, seed=i, pattern=("noise", "shapes", "gradient")[i % 3])
        marker.write_text("ok")
    return sorted(folder.glob("i*.jpg"))


def rows_for(paths: list[Path], modality: str) -> list[dict[str, Any]]:
    from curate.ingest import finalize_record
    from operators.confine import Confinement
    from schemas.record import new_media, new_record

    rows = []
    for i, p in enumerate(paths):
        rec = new_record(source="bench", locator=str(p), layout=f"{modality}-text", caption="x",
                         modalities=[modality, "text"], media=[new_media(modality, str(p))])  # fmt: skip
        rows.append(finalize_record(rec, unit="bench", ordinal=0, row=i, reader="bench", confinement=Confinement([str(p.parent)])))
    return rows


def probe(rows: list[dict[str, Any]]) -> Any:
    from operators.probe import Probe
    from schemas.record import to_table

    return Probe({})(to_table(rows))


def timed(name: str, op_name: str, params: dict, table: Any, art: Path, repeat: int, before=None) -> dict[str, Any]:
    import operators.video.decode as frames
    from operators.base import StageContext
    from operators.registry import get_operator
    from schemas.record import from_table

    times = []
    out = None
    for _ in range(repeat):
        frames.clear_cache()
        if before is not None:
            before()
        op = get_operator(op_name)(params, StageContext(name, artifacts_dir=str(art / name)))
        t0 = time.perf_counter()
        out = op(table)
        times.append(time.perf_counter() - t0)
    rows = from_table(out)
    bad = [r for r in rows if r["status"] == "quarantined"]
    if bad:
        raise SystemExit(f"{name}: {len(bad)} rows quarantined, e.g. {bad[0]['status_detail']}")
    return {"seconds": statistics.median(times), "runs": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="runs per operator; the median is reported")
    ap.add_argument("--core", type=int, default=None, help="CPU core to pin to (default: the first allowed)")
    args = ap.parse_args()

    allowed = sorted(os.sched_getaffinity(0))
    core = args.core if args.core is not None else allowed[0]
    os.sched_setaffinity(0, {core})

    videos, images = make_videos(args.videos), make_images(args.images)
    vrows, irows = rows_for(videos, "video"), rows_for(images, "image")
    vtable, itable = probe(vrows), probe(irows)
    video_s = sum(r["media"][0]["duration_s"] for r in vtable.to_pylist())
    megapixels = sum(r["media"][0]["width"] * r["media"][0]["height"] for r in itable.to_pylist()) / 1e6

    art = Path(tempfile.mkdtemp(prefix="bench_media_ops_"))
    results: dict[str, dict[str, Any]] = {}
    try:
        frames_params = {"num_frames": 8, "max_side": 256}
        quality_params = {"num_samples": 8}
        plan = [
            ("video_shots", "video_shots", {"max_clip_s": 10.0, "transcode": {"max_side": 640}}, vtable, None),
            ("video_shots_360p_to_256", "video_shots", {"transcode": {"max_side": 256, "crf": 28}}, vtable, None),
            ("video_frames", "video_frames", frames_params, vtable, None),
            ("video_quality_cold", "video_quality", quality_params, vtable, None),
        ]
        for name, op_name, params, table, before in plan:
            results[name] = timed(name, op_name, params, table, art, args.repeat, before)

        from operators.base import StageContext
        from operators.registry import get_operator

        def warm() -> None:
            op = get_operator("video_frames")(frames_params, StageContext("warm", artifacts_dir=str(art / "warm")))
            op(vtable)

        results["video_quality_warm"] = timed("video_quality_warm", "video_quality", quality_params, vtable, art,
                                              args.repeat, warm)  # fmt: skip
        results["image_quality"] = timed("image_quality", "image_quality", {}, itable, art, args.repeat)
        results["image_transform"] = timed("image_transform", "image_transform",
                                           {"mode": "max_side", "size": 512, "reencode": "always"}, itable, art,
                                           args.repeat)  # fmt: skip
    finally:
        shutil.rmtree(art, ignore_errors=True)

    for name, r in results.items():
        files = len(videos) if name.startswith("video") else len(images)
        r["files"] = files
        r["files_per_s"] = files / r["seconds"]
        if name.startswith("video"):
            r["media_seconds"] = video_s
            r["media_seconds_per_s"] = video_s / r["seconds"]
        else:
            r["megapixels"] = megapixels
            r["megapixels_per_s"] = megapixels / r["seconds"]

    print(f"\none core (cpu {core}); {len(videos)} videos x {VIDEO['seconds']:g} s {VIDEO['width']}x{VIDEO['height']} "
          f"{VIDEO['fps']} fps (3 shots, AAC audio); {len(images)} JPEG images (0.6-2.1 MP); median of {args.repeat}\n")  # fmt: skip
    print(f"{'operator':<26}{'seconds':>9}{'files/s':>10}{'media-s/s':>11}{'MP/s':>9}")
    for name, r in results.items():
        media = f"{r['media_seconds_per_s']:.1f}" if "media_seconds_per_s" in r else "-"
        mp = f"{r['megapixels_per_s']:.1f}" if "megapixels_per_s" in r else "-"
        print(f"{name:<26}{r['seconds']:>9.3f}{r['files_per_s']:>10.2f}{media:>11}{mp:>9}")

    import av

    report = {
        "command": "python benchmarks/bench_media_ops.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({len(allowed)} allowed), pinned to one",
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # > cores: shared machine, numbers are pessimistic
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg": av.ffmpeg_version_info,
        "date": time.strftime("%Y-%m-%d"),
        "videos": {"count": len(videos), **VIDEO, "shots": 3, "audio": "aac mono 16 kHz", "total_s": video_s},
        "images": {"count": len(images), "megapixels": megapixels},
        "params": {
            "video_shots": "max_clip_s 10, libx264 crf 23 veryfast, source size (640x360), 1 encoder thread",
            "video_shots_360p_to_256": "libx264 crf 28 veryfast, max_side 256, 1 encoder thread",
            "video_frames": frames_params,
            "video_quality": quality_params,
            "image_quality": "defaults (512 px grayscale thumbnail)",
            "image_transform": "max_side 512, jpeg q90, always re-encode",
        },
        "results": results,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
