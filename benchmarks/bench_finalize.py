"""Finalize, the dedup report and `curate explain` on a synthetic million-row run: time and peak
memory per row, the partial-count finalize against the per-row loop it replaced.

Synthetic final-segment files (``--rows`` rows in files of ``--per-file``; 24-hex ids, 70% kept
in one or two buckets, 15% dropped, 10% duplicates of a kept row, 5% quarantined; a media item,
a scores map and a lineage per row, 20% audio or video with durations) are made once per size
under --data. Each measurement runs in a fresh process and reports its wall time and peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``); the per-row cost is the slope of the peak
between the two sizes, so the ~200 MB that imports and one file's rows take cancel out.

    python benchmarks/bench_finalize.py                              # 250k and 1M rows
    python benchmarks/bench_finalize.py --baseline 1205617^          # also the finalize and
                                                                     # dedup report of that git revision
    python benchmarks/bench_finalize.py --sizes 100000 --explain-ids 20
    python benchmarks/bench_finalize.py --explain-only                # explain again, on the outputs left

Modes measured: ``finalize`` in one process (the driver does everything: the bound on one
process), ``finalize-ray`` (per-file and per-partition Ray tasks on a local 2-CPU Ray: the
driver's peak; the workers' are bounded by one file and one index partition), ``dedup-report``
(no thumbnails), and ``explain``: lookups of random ids (a kept, a dropped and a duplicate row
each) in one process, and the whole `curate explain OUT ID --json` command as a user runs it.
Writes benchmarks/results/finalize.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATUSES = ("kept", "dropped", "duplicate", "quarantined")
P_STATUS = (0.70, 0.15, 0.10, 0.05)
LAYOUTS = ("image-text", "text", "audio-text", "video-text", "interleaved")


def make_file(path: Path, f: int, rows: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.record import MEDIA_TYPE, SAMPLE_SCHEMA

    rng = np.random.default_rng(seed)
    n = rows
    raw = rng.bytes(12 * n)
    ids = [raw[12 * i : 12 * i + 12].hex() for i in range(n)]
    status = rng.choice(len(STATUSES), n, p=P_STATUS)
    layout = rng.choice(len(LAYOUTS), n, p=(0.6, 0.15, 0.1, 0.1, 0.05))
    source = rng.integers(0, 5, n)
    cols: dict[str, object] = {
        "id": ids,
        "content_hash": [h * 2 + "ab" * 8 for h in ids],
        "source": [f"src{s}" for s in source],
        "locator": [f"/corpus/src{s}/shard-{f:05d}/sample_{i:08d}.jpg" for i, s in enumerate(source)],
        "seq": (np.int64(f) << 20) + np.arange(n),
        "unit": [f"unit-{f:05d}"] * n,
        "layout": [LAYOUTS[k] for k in layout],
        "caption": [f"a caption for sample {i} of file {f}" if k != 1 else None for i, k in enumerate(layout)],
        "text": [f"some text body {i}" if k == 1 else None for i, k in enumerate(layout)],
        "status": [STATUSES[s] for s in status],
    }
    mods = {0: ["image", "text"], 1: ["text"], 2: ["audio", "text"], 3: ["video", "text"], 4: ["image", "text"]}
    cols["modalities"] = [mods[k] for k in layout]
    # one media item per row that is not text-only
    has = layout != 1
    offsets = np.r_[0, np.cumsum(has)].astype(np.int32)
    m = int(has.sum())
    lay_m = layout[has]
    modality = np.array(["image", "text", "audio", "video", "image"])[lay_m]
    timed = (lay_m == 2) | (lay_m == 3)
    fields = {
        "role": pa.array(["input"] * m), "modality": pa.array(modality.tolist()),
        "uri": pa.array([f"/corpus/media/{f}/{i}.bin" for i in range(m)]),
        "bytes": pa.array(rng.integers(10_000, 2_000_000, m)), "sha256": pa.array([ids[i] * 2 + "cd" * 8 for i in np.flatnonzero(has)]),
        "format": pa.array(np.where(timed, "mp4", "jpeg").tolist()),
        "width": pa.array(rng.integers(64, 2048, m).astype(np.int32)), "height": pa.array(rng.integers(64, 2048, m).astype(np.int32)),
        "duration_s": pa.array(np.where(timed, rng.uniform(1, 600, m), np.nan), mask=~timed),
    }  # fmt: skip
    struct = pa.StructArray.from_arrays(
        [fields.get(fl.name, pa.nulls(m, fl.type)).cast(fl.type) for fl in MEDIA_TYPE], fields=list(MEDIA_TYPE)
    )
    cols["media"] = pa.ListArray.from_arrays(pa.array(offsets), struct)
    keys = ["min_side", "aesthetic", "clip_score", "text_words", "dup_count", "route_rules"]
    cols["scores"] = pa.MapArray.from_arrays(
        pa.array(np.arange(0, 6 * n + 1, 6, dtype=np.int32)), pa.array(keys * n), pa.array(rng.uniform(0, 1000, 6 * n))
    )
    stages = ["ingest:image_folder", "probe", "dedup_exact", "image_quality", "route"]
    depth = np.where(status == 0, 5, np.where(status == 2, 3, np.where(status == 3, 2, 4)))
    cols["lineage"] = pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(depth)].astype(np.int32)), pa.array([s for d in depth for s in stages[:d]]))
    kept_idx = np.flatnonzero(status == 0)
    bucket_choice = rng.integers(0, 3, n)
    buckets = [["understanding"], ["generation", "understanding"], []]
    cols["buckets"] = [buckets[b] if s == 0 else [] for b, s in zip(bucket_choice, status, strict=True)]
    cols["tasks"] = [["captioning"] if s == 0 and b < 2 else [] for b, s in zip(bucket_choice, status, strict=True)]
    op = {1: "image_quality", 2: "dedup_exact", 3: "probe"}
    reason = {1: "below_min", 2: "exact_duplicate", 3: "corrupt_media"}
    cols["status_operator"] = [op.get(int(s)) for s in status]
    cols["status_reason"] = [reason.get(int(s)) for s in status]
    surv = rng.choice(kept_idx, n) if len(kept_idx) else np.zeros(n, dtype=np.int64)
    cols["duplicate_of"] = [ids[surv[i]] if s == 2 else None for i, s in enumerate(status)]
    cols["status_detail"] = [
        f"min_side={30 + i % 30} < 64" if s == 1 else f"same content as /corpus/src0/sample_{surv[i]:08d}.jpg" if s == 2
        else "InvalidDataError: Invalid data found when processing input" if s == 3 else None
        for i, s in enumerate(status)
    ]  # fmt: skip
    table = pa.table({fl.name: cols[fl.name] if fl.name in cols else pa.nulls(n, fl.type) for fl in SAMPLE_SCHEMA}, schema=SAMPLE_SCHEMA)
    pq.write_table(table, path, compression="zstd")


def make_data(root: Path, rows: int, per_file: int) -> Path:
    final = root / f"rows_{rows}" / "final"
    done = final / "DONE"
    if done.exists():
        return final
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    for f in range(-(-rows // per_file)):
        make_file(final / f"unit-{f:05d}.parquet", f, min(per_file, rows - f * per_file), seed=f)
    done.write_text("ok")
    (root / f"rows_{rows}" / "p.yaml").write_text("name: bench\nsources:\n  - {name: src0, reader: jsonl, path: m.jsonl}\n")
    return final


def _old_modules(rev: str):
    """curate.outputs, curate.media_hours and curate.dedup_report as they were at ``rev``."""
    import importlib.util
    import tempfile

    mods = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-old-"))
    for name in ("media_hours", "outputs", "dedup_report"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:curate/{name}.py"], check=True, capture_output=True, text=True).stdout
        (tmp / f"old_{name}.py").write_text(src)
        spec = importlib.util.spec_from_file_location(f"old_{name}", tmp / f"old_{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        mods[name] = mod
    mods["outputs"].media_hours = mods["media_hours"].media_hours
    return mods


def child(mode: str, data: Path, out: Path, rev: str | None, ids: int) -> dict:
    import resource

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from curate.config import load_pipeline

    loaded = load_pipeline(data.parent / "p.yaml")
    if mode.startswith("finalize"):
        from curate.outputs import finalize

        fn = finalize
        kwargs: dict = {"parallel": False}
        if rev:
            fn, kwargs = _old_modules(rev)["outputs"].finalize, {}
        if mode == "finalize-ray":
            from curate.runtime import start_local_ray

            start_local_ray(num_cpus=2, object_store_mb=512)
            kwargs = {"parallel": True}
        base = peak_mb()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        t = time.time()
        s = fn(out, loaded, data, {}, **kwargs)
        return {"seconds": round(time.time() - t, 3), "peak_mb": round(peak_mb(), 1), "before_mb": round(base, 1), "kept": s["counts"]["kept"]}
    if mode == "dedup-report":
        from curate.dedup_report import write_dedup_report

        fn = _old_modules(rev)["dedup_report"].write_dedup_report if rev else write_dedup_report
        base = peak_mb()
        t = time.time()
        st = fn(out, out / "dedup_report.html", thumbnails=False)
        return {"seconds": round(time.time() - t, 3), "peak_mb": round(peak_mb(), 1), "before_mb": round(base, 1), "duplicates": st["duplicates"]}
    if mode == "explain":
        import pyarrow.parquet as pq

        from curate.explain import explain

        rng = random.Random(0)
        sample = {}
        for f in sorted((out / "explain").glob("ids-*.parquet"))[:1]:
            t = pq.read_table(f, columns=["id", "status"]).to_pylist()
            for status in ("kept", "dropped", "duplicate"):
                pool = [r["id"] for r in t if r["status"] == status]
                sample[status] = rng.sample(pool, min(ids, len(pool)))
        times: dict[str, list[float]] = {}
        for status, chosen in sample.items():
            for i in chosen:
                t0 = time.perf_counter()
                doc = explain(out, i)
                times.setdefault(status, []).append(time.perf_counter() - t0)
                assert doc["status"] == status
        cli, bare = [], []
        for i in sample["duplicate"][:5]:  # the whole command, and `curate --help` (start-up alone) in turn
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "curate.cli", "explain", str(out), i, "--json"], check=True, capture_output=True, cwd=ROOT)
            cli.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "curate.cli", "--help"], check=True, capture_output=True, cwd=ROOT)
            bare.append(time.perf_counter() - t0)
        from curate.explain import examples

        spent = []
        for _ in range(5):
            t0 = time.perf_counter()
            ex = examples(out, "below_min", 20)
            spent.append(time.perf_counter() - t0)
            assert len(ex) == 20
        reason_s = sorted(spent)[2]
        ms = {k: {"median_ms": round(1000 * sorted(v)[len(v) // 2], 1), "max_ms": round(1000 * max(v), 1), "n": len(v)} for k, v in times.items()}
        return {
            "in_process": ms, "cli_median_s": round(sorted(cli)[len(cli) // 2], 3), "cli_max_s": round(max(cli), 3),
            "help_median_s": round(sorted(bare)[len(bare) // 2], 3), "reason_median_ms": round(1000 * reason_s, 1),
        }  # fmt: skip
    raise SystemExit(f"unknown mode {mode}")


def run_child(mode: str, data: Path, out: Path, rev: str | None = None, ids: int = 30) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--out", str(out), "--explain-ids", str(ids)]
    if rev:
        cmd += ["--rev", rev]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"{mode} failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--per-file", type=int, default=10_000)
    ap.add_argument("--data", type=Path, default=Path("/tmp/nmm-bench-finalize"))
    ap.add_argument("--baseline", help="git revision whose finalize and dedup report to measure too")
    ap.add_argument("--no-ray", action="store_true", help="skip finalize-ray")
    ap.add_argument("--explain-ids", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each finalize and report (the fastest is kept)")
    ap.add_argument("--explain-only", action="store_true", help="only the explain step, on the outputs of an earlier full run")
    ap.add_argument("--child")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rev")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.data, a.out, a.rev, a.explain_ids)))
        return
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "per_file": a.per_file, "sizes": {}}
    def best(runs: list[dict]) -> dict:
        """The fastest of repeated runs (a shared machine only ever adds time), with every time."""
        top = dict(min(runs, key=lambda x: x["seconds"]))
        top["all_seconds"] = [x["seconds"] for x in runs]
        return top

    dest = ROOT / "benchmarks" / "results" / "finalize.json"
    if a.explain_only:  # the explain step again, on outputs a full run left, into the results file
        results = json.loads(dest.read_text())
        for rows in a.sizes:
            out = a.data / f"rows_{rows}" / "out"
            results["sizes"][str(rows)]["explain"] = run_child("explain", out.parent / "final", out, ids=a.explain_ids)
            print(rows, json.dumps(results["sizes"][str(rows)]["explain"]), flush=True)
        dest.write_text(json.dumps(results, indent=1) + "\n")
        return
    for rows in a.sizes:
        data = make_data(a.data, rows, a.per_file)
        r: dict = {}
        out, old = data.parent / "out", data.parent / "out_old"
        tries: dict[str, list[dict]] = {}
        for _ in range(a.repeat):  # baseline and new in turn, so both see the same load
            if a.baseline:
                tries.setdefault("finalize-baseline", []).append(run_child("finalize", data, old, rev=a.baseline))
                if rows <= 250_000:  # the old report holds every row as Python dicts (4-5 KB each)
                    tries.setdefault("dedup-report-baseline", []).append(run_child("dedup-report", data, old, rev=a.baseline))
            tries.setdefault("finalize", []).append(run_child("finalize", data, out))
            tries.setdefault("dedup-report", []).append(run_child("dedup-report", data, out))
            if not a.no_ray:
                tries.setdefault("finalize-ray", []).append(run_child("finalize-ray", data, data.parent / "out_ray"))
                shutil.rmtree(data.parent / "out_ray", ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        r = {k: best(v) for k, v in tries.items()}
        r["explain"] = run_child("explain", data, out, ids=a.explain_ids)
        results["sizes"][str(rows)] = r
        print(rows, json.dumps(r), flush=True)
    sizes = sorted(int(k) for k in results["sizes"])
    if len(sizes) >= 2:
        lo, hi = (results["sizes"][str(s)] for s in (sizes[0], sizes[-1]))
        d = sizes[-1] - sizes[0]
        results["bytes_per_row"] = {
            k: round((hi[k]["peak_mb"] - lo[k]["peak_mb"]) * 2**20 / d, 1) for k in hi if k in lo and "peak_mb" in hi[k]
        }
        results["us_per_row"] = {k: round((hi[k]["seconds"] - lo[k]["seconds"]) * 1e6 / d, 2) for k in hi if k in lo and "seconds" in hi[k]}
        print("bytes/row (peak RSS slope):", results["bytes_per_row"])
        print("us/row (time slope):", results["us_per_row"])
    dest.write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", dest)


if __name__ == "__main__":
    main()
