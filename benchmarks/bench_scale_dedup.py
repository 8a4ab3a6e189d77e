"""Global dedup at corpus scale through the engine's own path: ``curate.global_phase.decide_globally``
(map -> hot keys -> reduce -> combine / regroup) and ``ApplyFn`` (apply), as Ray tasks on a local
Ray, over Parquet files on local disk. Measures per step and per process: peak RSS (VmHWM of
every task, reset at its start, and of the driver), bytes written and read per row, seconds;
then µs per row and the cost exponent between sizes (log time ratio / log size ratio).

Synthetic signatures with a realistic duplicate structure (``--sizes`` rows each):
- power-law groups: 4% of rows are members of groups whose sizes follow a Zipf law (exponent
  2.2, at least 2, at most 5,000; groups past ``max_bucket`` members make hot buckets);
- one group of near-identical copies of one placeholder (a "no image" picture, a cookie banner):
  1% of the rows (100,000 at 10M), signatures a few bits from one random signature (truly flat
  images have degenerate hashes and are not compared by dedup_image_phash at all);
- hot LSH buckets of unrelated rows: 0.5% of the rows share the value of their first band
  (images with a flat top, boilerplate openings) and are otherwise random.

Kinds:
- ``exact``: dedup_exact on a 32-hex-digit content hash (members of a group and the blank rows
  share theirs);
- ``image``: dedup_image_phash with its defaults (mirrored view and crop views: 42 LSH keys a
  row, bands of 21-22 bits): random pHash, dHash, mirrored and five crop-view hashes; a group
  member is its leader with 0-3 pHash bits flipped (views flipped alike), a placeholder copy is
  the placeholder with 0-2 bits flipped in each hash;
- ``image_wide``: the same with bands sized for 10^7-10^9 rows (``bands: 4``, ``crop_bands: 4``:
  32-bit bands), so random collisions stay few (the defaults' grow as rows^2 / 2^21);
- ``minhash``: dedup_text_minhash with its defaults (20 bands of 6): random 128-value
  signatures; a member has 10% of its leader's values changed, a blank row 3% of a fixed one.

The operators are the registered ones with ``signatures`` reading the synthetic columns instead
of decoding media (signing is linear and measured by bench_dedup_quality.py).

    python benchmarks/bench_scale_dedup.py --sizes 1000000 3000000 10000000
    python benchmarks/bench_scale_dedup.py --sizes 100000 --kinds image     # a quick look

Writes benchmarks/results/scale_dedup.json (merged with earlier runs by (kind, rows)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.global_phase import ApplyFn, current_rss, decide_globally, peak_rss  # noqa: E402
from operators.base import StageContext  # noqa: E402
from operators.dedup.exact import ExactDedup  # noqa: E402
from operators.dedup.image_phash import CROP_VIEWS, ImagePhashDedup, lsh_keys  # noqa: E402
from operators.dedup.near import Signatures  # noqa: E402
from operators.dedup.text_minhash import TextMinhashDedup, minhash_band_keys  # noqa: E402
from schemas.hashing import mix64  # noqa: E402
from schemas.record import MEDIA_TYPE, SAMPLE_SCHEMA  # noqa: E402

BLANK = -1
NV = len(CROP_VIEWS)


# ----------------------------------------------------------------------------- the operators


class BenchImage(ImagePhashDedup):
    """dedup_image_phash on hashes the rows carry (columns b_ph, b_dh, b_phf, b_dhf, b_phv, b_dhv)."""

    def signatures(self, live: pa.Table) -> Signatures:
        p = self.params
        ph = live["b_ph"].to_numpy().view(np.uint64)
        dh = live["b_dh"].to_numpy().view(np.uint64)
        flip = (live["b_phf"].to_numpy().view(np.uint64), live["b_dhf"].to_numpy().view(np.uint64)) if p.flip else None
        phv = live["b_phv"].combine_chunks().values.to_numpy().view(np.uint64).reshape(-1, NV)
        dhv = live["b_dhv"].combine_chunks().values.to_numpy().view(np.uint64).reshape(-1, NV)
        keys = lsh_keys(p, ph, dh, flip, (phv, dhv) if p.crops else None)
        cols = {"phash": live["b_ph"].combine_chunks(), "dhash": live["b_dh"].combine_chunks()}
        if p.flip:
            cols.update(phash_flip=live["b_phf"].combine_chunks(), dhash_flip=live["b_dhf"].combine_chunks())
        if p.crops:
            cols.update(phash_crops=live["b_phv"].combine_chunks(), dhash_crops=live["b_dhv"].combine_chunks())
        return Signatures(keys=keys, columns=cols)


class BenchText(TextMinhashDedup):
    """dedup_text_minhash on MinHash signatures the rows carry (column b_mh, 128 uint32)."""

    def signatures(self, live: pa.Table) -> Signatures:
        p = self.params
        sig = live["b_mh"].combine_chunks().values.to_numpy().reshape(-1, p.num_perm)
        low = (sig & np.uint32(0xFFFF)).astype(np.uint16)
        column = pa.FixedSizeListArray.from_arrays(pa.array(low.reshape(-1), pa.uint16()), p.num_perm)
        return Signatures(keys=minhash_band_keys(sig, p.bands, p.rows), columns={"minhash": column})


#: params per kind (the operator's defaults unless named here)
PARAMS = {"image_wide": {"bands": 4, "crop_bands": 4}}
KINDS = ("exact", "image", "image_wide", "minhash")


def make_op(kind: str, artifacts: Path):
    ctx = StageContext(stage=f"bench_{kind}", artifacts_dir=str(artifacts))
    cls = {"exact": ExactDedup, "image": BenchImage, "image_wide": BenchImage, "minhash": BenchText}[kind]
    return cls(PARAMS.get(kind), ctx)


# ----------------------------------------------------------------------------- the corpus


def structure(n: int, seed: int, dup: float, blank: float, hot: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per row its origin (its own index, its group leader's index, or BLANK) and whether it is
    in the hot bucket of unrelated rows."""
    rng = np.random.default_rng(seed)
    origin = np.arange(n, dtype=np.int64)
    perm = rng.permutation(n)
    n_blank = int(n * blank)
    origin[perm[:n_blank]] = BLANK
    want = int(n * dup)
    sizes = []
    total = 0
    while total < want:
        s = int(min(5000, rng.zipf(2.2) + 1))
        sizes.append(s)
        total += s
    members = perm[n_blank : n_blank + total]
    group = np.repeat(np.arange(len(sizes)), sizes)
    leaders = members[np.r_[0, np.cumsum(sizes)[:-1]]]
    origin[members] = leaders[group]
    is_hot = np.zeros(n, dtype=bool)
    is_hot[perm[n_blank + total : n_blank + total + int(n * hot)]] = True
    sizes = np.array(sizes)
    info = {
        "groups": len(sizes),
        "group_members": int(total),
        "largest_group": int(sizes.max()),
        "groups_over_2000": int((sizes > 2000).sum()),
        "placeholder_rows": n_blank,
        "hot_rows": int(is_hot.sum()),
        "expected_duplicates": int(total - len(sizes) + max(0, n_blank - 1)),
    }
    return origin, is_hot, info


def _flips(rng: np.random.Generator, n: int, most: int) -> np.ndarray:
    """Per row a uint64 with 0..most random bits set."""
    out = np.zeros(n, dtype=np.uint64)
    k = rng.integers(0, most + 1, n)
    for j in range(most):
        bit = np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
        out |= np.where(k > j, bit, np.uint64(0))
    return out


def _rand(o: np.ndarray, salt: int) -> np.ndarray:
    """A random 64-bit value per origin and salt (hash the origin first: o ^ salt would collide
    across salts)."""
    with np.errstate(over="ignore"):
        return mix64(mix64(o.astype(np.int64).view(np.uint64)) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15))


def file_table(kind: str, lo: int, hi: int, origin: np.ndarray, is_hot: np.ndarray, seed: int) -> pa.Table:
    n = hi - lo
    idx = np.arange(lo, hi, dtype=np.int64)
    o = origin[lo:hi]
    blank = o == BLANK
    member = (o != idx) & ~blank
    hot = is_hot[lo:hi]
    rng = np.random.default_rng([seed, lo])
    ids = pc.binary_join_element_wise("r", pc.cast(pa.array(idx), pa.string()), "")
    locator = pc.binary_join_element_wise(f"/data/{kind}/", pc.cast(pa.array(idx), pa.string()), ".jpg", "")
    cols: dict[str, pa.Array] = {
        "id": ids,
        "source": pa.array(np.full(n, "bench")),
        "locator": locator,
        "seq": pa.array(idx),
        "layout": pa.array(np.full(n, "text" if kind == "minhash" else "image")),
        "status": pa.array(np.full(n, "kept")),
    }
    extra: dict[str, pa.Array] = {}
    if kind.startswith("image"):
        media = pa.StructArray.from_arrays(
            [pa.array(np.full(n, "image")) if f.name == "modality" else locator if f.name == "uri" else pa.nulls(n, f.type) for f in MEDIA_TYPE],
            fields=list(MEDIA_TYPE),
        )
        cols["media"] = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), media)
        base = np.where(blank, np.int64(-7), o)  # the placeholder: one random signature
        ph, dh, phf, dhf = (_rand(base, salt) for salt in (0x11, 0x22, 0x33, 0x44))
        views_p = np.stack([_rand(base, 0x100 + v) for v in range(NV)], axis=1)
        views_d = np.stack([_rand(base, 0x200 + v) for v in range(NV)], axis=1)
        f = np.where(member, _flips(rng, n, 3), np.uint64(0))  # a copy: 0-3 pHash bits off
        f = np.where(blank, _flips(rng, n, 2), f)  # a placeholder copy: 0-2 bits off in each hash
        nd = np.where(blank, _flips(rng, n, 2), np.uint64(0))
        ph ^= f
        phf ^= f
        views_p ^= f[:, None]
        dh ^= nd
        dhf ^= nd
        views_d ^= nd[:, None]
        ph = np.where(hot, (ph & np.uint64((1 << 42) - 1)) | (np.uint64(0x2AAAAA) << np.uint64(42)), ph)
        extra = {
            "b_ph": pa.array(ph.view(np.int64)),
            "b_dh": pa.array(dh.view(np.int64)),
            "b_phf": pa.array(phf.view(np.int64)),
            "b_dhf": pa.array(dhf.view(np.int64)),
            "b_phv": pa.FixedSizeListArray.from_arrays(pa.array(views_p.view(np.int64).reshape(-1)), NV),
            "b_dhv": pa.FixedSizeListArray.from_arrays(pa.array(views_d.view(np.int64).reshape(-1)), NV),
        }
    elif kind == "minhash":
        base = np.where(blank, np.int64(-7), o)
        with np.errstate(over="ignore"):
            sig = (mix64(base.view(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15) + np.arange(128, dtype=np.uint64)) >> np.uint64(32)).astype(np.uint32)
        rate = np.where(member, 0.10, np.where(blank, 0.03, 0.0))[:, None]
        change = rng.random((n, 128)) < rate
        sig = np.where(change, rng.integers(0, 2**32, (n, 128), dtype=np.uint64).astype(np.uint32), sig)
        sig[hot, :6] = np.arange(6, dtype=np.uint32) + np.uint32(77)
        extra = {"b_mh": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), 128)}
    else:
        h1, h2 = _rand(np.where(blank, np.int64(-7), o), 0x33), _rand(np.where(blank, np.int64(-7), o), 0x44)
        hexes = np.char.add(np.char.zfill(np.char.mod("%x", h1), 16), np.char.zfill(np.char.mod("%x", h2), 16))
        cols["content_hash"] = pa.array(hexes.astype(str))
    table = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in SAMPLE_SCHEMA}, schema=SAMPLE_SCHEMA)
    for k, v in extra.items():
        table = table.append_column(k, v)
    return table


def write_corpus(kind: str, n: int, rows_per_file: int, folder: Path, origin, is_hot, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, lo in enumerate(range(0, n, rows_per_file)):
        path = folder / f"unit-{k:06d}.parquet"
        pq.write_table(file_table(kind, lo, min(n, lo + rows_per_file), origin, is_hot, seed), path)
        files.append(path)
    return files


# ----------------------------------------------------------------------------- the run


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _apply_file(op, decisions_dir: str, path: str) -> dict:
    pa.default_memory_pool().release_unused()
    _reset_peak()
    start = current_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    out = ApplyFn(op, Path(decisions_dir))(pa.table({"path": [path]}))
    status = out["status"]
    return {
        "rows": out.num_rows,
        "duplicates": int(pc.sum(pc.equal(status, "duplicate")).as_py() or 0),
        "s": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "peak_rss": peak_rss(),
        "rss_start": start,
        "pid": os.getpid(),
    }


def evaluate(decisions_dir: Path, origin: np.ndarray) -> dict:
    """Duplicates found against the planted structure: precision (a duplicate's survivor has
    its origin), recall (of the planted duplicates), and the groups the placeholder rows end in."""
    dup_rows, surv_rows = [], []
    for f in decisions_dir.glob("*.parquet"):
        t = pq.read_table(f, columns=["id", "duplicate_of", "error_reason"])
        t = t.filter(pc.is_valid(t["duplicate_of"]))
        dup_rows.append(pc.cast(pc.utf8_slice_codeunits(t["id"], 1), pa.int64()).to_numpy())
        surv_rows.append(pc.cast(pc.utf8_slice_codeunits(t["duplicate_of"], 1), pa.int64()).to_numpy())
    dups = np.concatenate(dup_rows) if dup_rows else np.zeros(0, np.int64)
    survs = np.concatenate(surv_rows) if surv_rows else np.zeros(0, np.int64)
    same = origin[dups] == origin[survs]
    blank = origin == BLANK
    n_blank = int(blank.sum())
    head = np.arange(len(origin))
    head[dups] = survs
    groups_of_blank = len(np.unique(head[blank])) if n_blank else 0
    expected = int(((origin != np.arange(len(origin))) & ~blank).sum()) + max(0, n_blank - 1)
    return {
        "duplicates": len(dups),
        "precision": round(float(same.mean()) if len(dups) else 1.0, 5),
        "recall": round(float(same.sum()) / max(1, expected), 5),
        "placeholder_rows": n_blank,
        "placeholder_groups": groups_of_blank,
    }


def run(kind: str, n: int, args, ray) -> dict:
    work = Path(args.work) / f"{kind}_{n}"
    shutil.rmtree(work, ignore_errors=True)
    origin, is_hot, info = structure(n, args.seed, args.dup, args.blank, args.hot)
    t0 = time.perf_counter()
    files = write_corpus(kind, n, args.rows_per_file, work / "in", origin, is_hot, args.seed)
    gen_s = time.perf_counter() - t0
    input_bytes = sum(f.stat().st_size for f in files)
    np.save(work / "origin.npy", origin)
    del origin, is_hot
    op = make_op(kind, work / "artifacts")
    _reset_peak()
    t1 = time.perf_counter()
    kw = {"key_rows_per_partition": args.key_rows_per_partition} if args.key_rows_per_partition else {}
    decisions_dir = decide_globally(op, files, work / "seg", cpus=args.cpus, **kw)
    t2 = time.perf_counter()
    apply = ray.remote(num_cpus=1)(_apply_file)
    applied = ray.get([apply.remote(op, str(decisions_dir), str(f)) for f in files])
    t3 = time.perf_counter()
    driver_peak = peak_rss()
    success = json.loads((decisions_dir / "_SUCCESS").read_text())
    steps = success["steps"]
    steps["apply"] = {
        "tasks": len(applied),
        "peak_rss_max": max(a["peak_rss"] for a in applied),
        "peak_over_start_max": max(a["peak_rss"] - a["rss_start"] for a in applied),
        "task_s_sum": round(sum(a["s"] for a in applied), 3),
        "task_cpu_s_sum": round(sum(a["cpu"] for a in applied), 3),
        "task_s_max": round(max(a["s"] for a in applied), 3),
        "duplicates": sum(a["duplicates"] for a in applied),
    }
    quality = evaluate(decisions_dir, np.load(work / "origin.npy"))
    assert steps["apply"]["duplicates"] == quality["duplicates"], "apply and decisions disagree"
    decision_bytes = sum(p.stat().st_size for p in decisions_dir.glob("*.parquet"))
    report_path = work / "artifacts" / "dedup.json"
    report = json.loads(report_path.read_text())["stats"] if report_path.exists() else {}
    m = steps["map"]
    per_row = {
        "key_rows": round(m.get("key_rows", 0) / n, 2),
        "shuffle_key_bytes": round(m.get("key_bytes", 0) / n, 1),
        "row_table_bytes": round(m.get("row_bytes", 0) / n, 1),
        "rows_read_by_reducers": round(steps.get("reduce", {}).get("rows_read", 0) / n, 2),
        "edge_bytes": round(steps.get("reduce", {}).get("edge_bytes", 0) / n, 2),
        "decision_bytes": round(decision_bytes / n, 1),
        "input_bytes": round(input_bytes / n, 1),
    }
    task_s = sum(s.get("task_s_sum", 0) for s in steps.values())
    cpu_s = sum(s.get("task_cpu_s_sum", 0) for s in steps.values())
    out = {
        "kind": kind,
        "rows": n,
        "files": len(files),
        "partitions": success["partitions"],
        "structure": info,
        "generate_s": round(gen_s, 2),
        "decide_s": round(t2 - t1, 2),
        "apply_s": round(t3 - t2, 2),
        "total_s": round(t3 - t1, 2),
        "us_per_row": round(1e6 * (t3 - t1) / n, 2),
        "task_s": round(task_s, 2),
        "task_cpu_s": round(cpu_s, 2),
        "cpu_us_per_row": round(1e6 * cpu_s / n, 2),
        "driver_peak_rss_mb": round(driver_peak / 2**20, 1),
        "peak_rss_mb": {name: round(s.get("peak_rss_max", 0) / 2**20, 1) for name, s in steps.items()},
        "peak_over_task_start_mb": {name: round(s.get("peak_over_start_max", 0) / 2**20, 1) for name, s in steps.items()},
        "step_s": {
            name: {"sum": s.get("task_s_sum"), "cpu": s.get("task_cpu_s_sum"), "max": s.get("task_s_max"), "tasks": s.get("tasks")}
            for name, s in steps.items()
        },
        "bytes_per_row": per_row,
        "stats": report,
        "quality": quality,
        "steps": steps,
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def exponents(results: list[dict]) -> dict:
    out = {}
    for kind in sorted({r["kind"] for r in results}):
        rs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["rows"])
        for a, b in zip(rs, rs[1:], strict=False):
            for what in ("total_s", "task_cpu_s"):
                key = f"{kind} {a['rows']}->{b['rows']} {what}"
                out[key] = round(math.log(b[what] / a[what]) / math.log(b["rows"] / a["rows"]), 3)
        if len(rs) > 2:
            a, b = rs[0], rs[-1]
            for what in ("total_s", "task_cpu_s"):
                out[f"{kind} {a['rows']}->{b['rows']} {what}"] = round(math.log(b[what] / a[what]) / math.log(b["rows"] / a["rows"]), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--kinds", nargs="+", default=["exact", "image_wide", "minhash", "image"], choices=KINDS)
    ap.add_argument("--rows-per-file", type=int, default=20_000)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--work", default="/tmp/nmm_bench_scale", help="folder for the files (local disk)")
    ap.add_argument("--dup", type=float, default=0.04, help="fraction of rows in power-law groups")
    ap.add_argument("--blank", type=float, default=0.01, help="fraction of rows in the one placeholder group")
    ap.add_argument("--hot", type=float, default=0.005, help="fraction of unrelated rows sharing one band")
    ap.add_argument("--key-rows-per-partition", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale_dedup.json"))
    args = ap.parse_args()

    import ray

    from curate.runtime import start_local_ray

    start_local_ray(num_cpus=args.cpus, object_store_mb=512)
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text())["results"] if out_path.exists() else []
    results = []
    cols = ["kind", "rows", "partitions", "total_s", "us_per_row", "cpu_us_per_row", "driver_peak_rss_mb"]
    print(" ".join(f"{c:>16}" for c in cols) + "  peak RSS per step (MB) / bytes per row / quality", flush=True)
    for kind in args.kinds:
        for n in args.sizes:
            r = run(kind, n, args, ray)
            r["date"] = time.strftime("%Y-%m-%d")
            results.append(r)
            print(" ".join(f"{r[c]!s:>16}" for c in cols), r["peak_rss_mb"], r["peak_over_task_start_mb"], r["bytes_per_row"], r["quality"], flush=True)
            merged = [p for p in previous if (p["kind"], p["rows"]) not in {(x["kind"], x["rows"]) for x in results}] + results
            doc = {
                "benchmark": "scale_dedup",
                "note": "decide_globally + ApplyFn on local Ray, files on local disk; synthetic signatures (see the script)",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
                "results": sorted(merged, key=lambda x: (x["kind"], x["rows"])),
                "exponents": exponents(merged),
            }
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(doc, indent=1))
    print(json.dumps(exponents(results), indent=1))
    print(f"wrote {out_path}")
    ray.shutdown()


if __name__ == "__main__":
    main()
