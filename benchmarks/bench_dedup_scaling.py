"""Near-duplicate dedup at growing scale: does the LSH map-reduce stay near-linear?

Synthetic signatures with planted near-duplicates go through the very functions the engine runs
(``summary_from_signatures`` = the map step after signing, hash partitioning on ``_key`` like
``curate.global_phase``, the hot-key pass, ``decide_partition`` per partition reading rows by
reference, ``combine_refs``), in one process, one reducer's share at a time: the curve is the
algorithm's, without Ray's scheduling or files (bench_scale_dedup.py runs the engine's own path
on Ray over files).
Signing itself (decoding media, hashing) is linear and measured by bench_dedup_quality.py.

- image: random 64-bit pHash and dHash per row, plus five random crop-view pairs (the default
  ``crops: true``); 1% of rows are copies of an earlier row with 3 bits of its pHash flipped;
  dedup_image_phash defaults (6 bands of ~21 bits over pHash+dHash for the full view; the crop
  table: 4 bands of 32 bits over the full view and the five crop views).
  image_nocrops: the same with ``crops: false`` (the full view only).
- minhash: random 128-value MinHash signatures; 1% are copies with 10% of their values changed
  (Jaccard about 0.9); dedup_text_minhash defaults (20 bands x 6 rows).
It also compares our vectorised MinHash with datasketch's on real shingled documents (speed, and
the error of the Jaccard estimate against the exact Jaccard).

    python benchmarks/bench_dedup_scaling.py                      # 10k, 100k, 1M
    python benchmarks/bench_dedup_scaling.py --sizes 10000 100000 # quicker

Prints tables and writes benchmarks/results/dedup_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.dedup.image_phash import CROP_VIEWS, ImagePhashDedup, lsh_keys  # noqa: E402
from operators.dedup.lsh import hot_keys  # noqa: E402
from operators.dedup.near import Signatures, TableRows  # noqa: E402
from schemas.hashing import partition_of  # noqa: E402

KEY_ROWS_PER_PARTITION = 1_000_000
from operators.dedup.text_minhash import MinHasher, TextMinhashDedup  # noqa: E402

PLANTED = 0.01


def live_table(n: int) -> pa.Table:
    ids = pa.array([f"r{i:08d}" for i in range(n)])
    return pa.table({"id": ids, "seq": pa.array(np.arange(n, dtype=np.int64)), "locator": ids})


def planted(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(copy rows, their originals): 1% of rows copy an earlier, distinct row."""
    k = int(n * PLANTED)
    copies = rng.choice(np.arange(n // 2, n), k, replace=False)
    originals = rng.choice(np.arange(0, n // 2), k, replace=False)
    return copies, originals


def image_signatures(n: int, rng: np.random.Generator, op: ImagePhashDedup):
    ph = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    dh = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2)
    copies, originals = planted(n, rng)
    flips = np.zeros(len(copies), np.uint64)
    for _ in range(3):
        flips |= np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
    ph[copies] = ph[originals] ^ flips
    dh[copies] = dh[originals]
    cols = {"phash": pa.array(ph.view(np.int64)), "dhash": pa.array(dh.view(np.int64))}
    views = None
    if op.params.crops:  # five random sub-view hashes per row; a copy's views are its original's
        phv = rng.integers(0, 2**63, (n, len(CROP_VIEWS)), dtype=np.uint64) * np.uint64(2)
        dhv = rng.integers(0, 2**63, (n, len(CROP_VIEWS)), dtype=np.uint64) * np.uint64(2)
        phv[copies], dhv[copies] = phv[originals], dhv[originals]
        views = (phv, dhv)
        cols["phash_crops"] = pa.FixedSizeListArray.from_arrays(pa.array(phv.view(np.int64).reshape(-1)), len(CROP_VIEWS))
        cols["dhash_crops"] = pa.FixedSizeListArray.from_arrays(pa.array(dhv.view(np.int64).reshape(-1)), len(CROP_VIEWS))
    keys = lsh_keys(op.params, ph, dh, None, views)
    return Signatures(keys=keys, columns=cols), copies, originals


def minhash_signatures(n: int, rng: np.random.Generator, op: TextMinhashDedup):
    sig = rng.integers(0, 2**32, (n, op.params.num_perm), dtype=np.uint64).astype(np.uint32)
    copies, originals = planted(n, rng)
    sig[copies] = sig[originals]
    change = rng.random((len(copies), op.params.num_perm)) < 0.10
    sig[copies] = np.where(change, rng.integers(0, 2**32, change.shape, dtype=np.uint64).astype(np.uint32), sig[copies])
    out = op.signatures_from_minhash(sig)
    out.keys = np.stack(out.keys)  # the vectorised (rows, bands) path
    return out, copies, originals


def run(kind: str, n: int, seed: int = 0) -> dict:
    """One size: sign, then for each reducer build only its share of the key rows (as the map
    step's files would hold), decide it, and combine all partials."""
    rng = np.random.default_rng(seed)
    op = {
        "image": lambda: ImagePhashDedup({"flip": False}),
        "image_nocrops": lambda: ImagePhashDedup({"crops": False, "flip": False}),
        "minhash": TextMinhashDedup,
    }[kind]()
    live = live_table(n)
    t0 = time.perf_counter()
    sig, copies, originals = (minhash_signatures if kind == "minhash" else image_signatures)(n, rng, op)
    t1 = time.perf_counter()
    t2 = time.perf_counter()
    summary = op.summary_from_signatures(live, sig)
    rows = TableRows([summary.rows])
    key = summary.keys["_key"].to_numpy()
    ref = summary.keys["_row"].to_numpy().astype(np.int64)
    rank = summary.keys["_rank"].to_numpy()
    partitions = max(1, math.ceil(len(key) / KEY_ROWS_PER_PARTITION))
    part = np.asarray(partition_of(summary.keys["_key"].combine_chunks(), partitions))
    hot = hot_keys(key, op.bucket_cap())
    t3 = time.perf_counter()
    results, decide_s = [], []
    for p in range(partitions):
        m = time.perf_counter()
        sel = part == p
        results.append(op.decide_partition(key[sel], ref[sel], rows, hot, rank[sel]))
        decide_s.append(time.perf_counter() - m)
    t4 = time.perf_counter()
    decisions = op.combine_refs([(lambda cols, r=r: r.edges.select(cols)) for r in results], rows)
    t5 = time.perf_counter()
    counts = {k: sum(r.counts[k] for r in results) for k in results[0].counts}
    stats = op.report_stats(counts, decisions)["stats"]
    key_rows = len(key)
    map_s = t3 - t2
    found = {d["id"]: d["duplicate_of"] for d in decisions.to_pylist() if d["duplicate_of"]}
    truth = {f"r{c:08d}": f"r{o:08d}" for c, o in zip(copies, originals, strict=True)}
    hit = sum(found.get(c) == o for c, o in truth.items())
    return {
        "kind": kind,
        "rows": n,
        "key_rows": key_rows,
        "partitions": partitions,
        "candidate_pairs": stats["candidate_pairs"],
        "edges": stats["edges"],
        "planted": len(truth),
        "recall": round(hit / max(1, len(truth)), 4),
        "false_duplicates": len(set(found) - set(truth)),
        "map_s": round(map_s, 3),
        "decide_s": round(sum(decide_s), 3),
        "decide_max_partition_s": round(max(decide_s), 3),
        "combine_s": round(t5 - t4, 3),
        "total_s": round(t5 - t1, 3),
        "us_per_row": round(1e6 * (t5 - t1) / n, 2),
        "signature_gen_s": round(t1 - t0, 3),
    }


def compare_minhash(docs: int = 2000) -> dict:
    """Our numpy MinHash vs datasketch on the same word 5-gram shingles of synthetic documents."""
    from curate.demo.synth_variants import edit_text, random_document

    texts = []
    for s in range(docs // 2):
        d = random_document(s)
        texts += [d, edit_text(d, "word_edit", seed=s)]
    ours = MinHasher(num_perm=128, shingle="word", shingle_size=5)
    t0 = time.perf_counter()
    sig, _ = ours.signatures(texts)
    t_ours = time.perf_counter() - t0
    shingles = [ours.shingles(t) for t in texts]
    exact = np.array([len(np.intersect1d(shingles[i], shingles[i + 1])) / len(np.union1d(shingles[i], shingles[i + 1])) for i in range(0, docs, 2)])
    est_ours = (sig[0::2] == sig[1::2]).mean(axis=1)
    out = {"docs": docs, "ours_s": round(t_ours, 3), "ours_mae": round(float(np.abs(est_ours - exact).mean()), 4)}
    try:
        from datasketch import MinHash
    except ImportError:
        out["datasketch"] = "not installed (pip install datasketch)"
        return out
    import re

    word = re.compile(r"\w+")
    t0 = time.perf_counter()
    ds = []
    for t in texts:
        words = word.findall(" ".join(t.casefold().split()))
        grams = {" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))}
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(list(grams))
        ds.append(m)
    t_ds = time.perf_counter() - t0
    est_ds = np.array([ds[i].jaccard(ds[i + 1]) for i in range(0, docs, 2)])
    out.update(datasketch_s=round(t_ds, 3), datasketch_mae=round(float(np.abs(est_ds - exact).mean()), 4))
    out["speedup"] = round(t_ds / t_ours, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--kinds", nargs="+", default=["image", "image_nocrops", "minhash"])
    args = ap.parse_args()
    import scipy.sparse.csgraph  # noqa: F401  (imported once, outside the timings)

    results = []
    cols = ["kind", "rows", "key_rows", "candidate_pairs", "edges", "recall", "false_duplicates", "map_s", "decide_s", "combine_s", "total_s", "us_per_row"]
    print(" ".join(f"{c:>15}" for c in cols))
    for kind in args.kinds:
        for n in args.sizes:
            r = run(kind, n)
            results.append(r)
            print(" ".join(f"{r[c]!s:>15}" for c in cols), flush=True)
    mh = compare_minhash()
    print("\nMinHash implementations (128 perms, word 5-grams, 2000 docs):", json.dumps(mh))
    out = {
        "benchmark": "dedup_scaling",
        "note": "in-process run of summary_from_signatures / partition / decide / combine (no Ray)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
        "minhash_impl": mh,
    }
    path = ROOT / "benchmarks" / "results" / "dedup_scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
