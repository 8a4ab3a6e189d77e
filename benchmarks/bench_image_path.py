"""Image path throughput: ingest -> probe -> exact dedup -> filter -> route -> write.

Measures the engine (Ray Data, local) against a plain Python loop running the very same operator
code in one process, so the difference is the engine's overhead (or gain from parallelism).

    python benchmarks/bench_image_path.py --images 2000            # both, 2 cores
    python benchmarks/bench_image_path.py --images 2000 --only loop

Prints a table and writes benchmarks/results/image_path.json.
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
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIPELINE = {
    "name": "bench_images",
    "sources": [{"name": "images", "reader": "image_folder", "path": "PLACEHOLDER"}],
    "stages": [
        {"op": "probe"},
        {"op": "dedup_exact"},
        {"op": "filter", "params": {"rules": [{"field": "min_side", "min": 64}, {"field": "aspect_ratio", "min": 0.25, "max": 4}]}},
        {
            "op": "route",
            "params": {
                "rules": [
                    {"name": "cap", "when": {"layout": "image-text"}, "tasks": ["captioning"], "buckets": ["understanding"]},
                    {"name": "t2i", "when": {"layout": "image-text", "rules": [{"field": "min_side", "min": 256}]}, "tasks": ["text_to_image"], "buckets": ["generation"]},
                ]
            },
        },
    ],
}


def make_images(folder: Path, n: int) -> None:
    from curate.demo.synth import make_image

    marker = folder / f".complete-{n}"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sizes = [(320, 240), (256, 256), (512, 384), (48, 48), (640, 480)]
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        make_image(folder / f"img{i:06d}.jpg", w, h, seed=i, pattern="gradient" if i % 2 else "noise")
        (folder / f"img{i:06d}.txt").write_text(f"a synthetic picture number {i} with soft colours")
    # 2% exact duplicates
    for i in range(0, n // 50):
        shutil.copy(folder / f"img{i:06d}.jpg", folder / f"dup{i:06d}.jpg")
    marker.write_text("ok")


def run_loop(folder: Path, out: Path) -> dict:
    """The same operators, in one process, no Ray."""
    import pyarrow.parquet as pq

    from curate.config import load_pipeline
    from curate.ingest import finalize_record
    from operators.base import GlobalOperator
    from schemas.record import to_table

    cfg_path = out / "pipe.yaml"
    loaded = load_pipeline(cfg_path)
    reader = loaded.sources[0].reader
    ops = [s.op for s in loaded.stages]
    t0 = time.perf_counter()
    rows = []
    for ordinal, unit in enumerate(reader.plan()):
        for i, rec in enumerate(reader.read(unit["payload"])):
            confinement = reader.confinement_for(unit["payload"])
            rows.append(finalize_record(rec, unit=unit["unit"], ordinal=ordinal, row=i, reader=reader.name, confinement=confinement))
    table = to_table(rows)
    for op in ops:
        table = op.apply(table, op.decide(op.summarize(table))) if isinstance(op, GlobalOperator) else op(table)
    pq.write_table(table, out / "loop.parquet")
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def run_engine(out: Path, cpus: int) -> dict:
    import ray

    from curate.config import load_pipeline
    from curate.engine import Engine

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, object_store_memory=512 * 2**20, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    loaded = load_pipeline(out / "pipe.yaml")
    runs = []
    for _ in range(2):  # cold (worker processes start and import), then warm (a long job's steady state)
        t1 = time.perf_counter()
        summary = Engine(loaded, out / "run", fresh=True, progress=False).run()
        runs.append((time.perf_counter() - t1, summary))
    ray.shutdown()
    (cold, _), (warm, summary) = runs
    return {"seconds": warm, "cold_seconds": cold, "ray_init_s": init_s, "rows": summary["counts"]["input"],
            "kept": summary["counts"]["kept"], "segments": summary["run"]["segments"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", choices=["loop", "engine"], default=None)
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "_data")
    args = ap.parse_args()

    folder = args.data / f"images-{args.images}"
    t = time.perf_counter()
    make_images(folder, args.images)
    print(f"data: {folder} ({time.perf_counter() - t:.1f}s to prepare)")
    files = args.images + args.images // 50
    out = Path(tempfile.mkdtemp(prefix="bench_image_path_"))
    cfg = json.loads(json.dumps(PIPELINE))
    cfg["sources"][0]["path"] = str(folder)
    (out / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    results: dict = {"files": files, "cpus": args.cpus, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    if args.only in (None, "loop"):
        r = run_loop(folder, out)
        r["files_per_s"] = files / r["seconds"]
        r["files_per_s_per_core"] = r["files_per_s"]  # one process, one core
        results["loop"] = r
    if args.only in (None, "engine"):
        r = run_engine(out, args.cpus)
        r["files_per_s"] = files / r["seconds"]
        r["cold_files_per_s"] = files / r["cold_seconds"]
        r["files_per_s_per_core"] = r["files_per_s"] / args.cpus
        results["engine"] = r
    shutil.rmtree(out, ignore_errors=True)
    print(f"{'path':<8}{'seconds':>10}{'files/s':>10}{'files/s/core':>14}")
    for name in ("loop", "engine"):
        if name in results:
            r = results[name]
            print(f"{name:<8}{r['seconds']:>10.2f}{r['files_per_s']:>10.1f}{r['files_per_s_per_core']:>14.1f}")
    if "engine" in results:
        e = results["engine"]
        print(f"engine: warm run above; first (cold) run {e['cold_seconds']:.2f}s; ray.init {e['ray_init_s']:.2f}s (not included)")
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(exist_ok=True)
    (dest / "image_path.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
