"""The mixer at corpus scale: load the pool, plan, order and cut a stage over a synthetic curated
table of N rows, write a few of its shards; peak RSS, bytes per pool row and time per row.

The table is what `curate run` writes (SAMPLE_SCHEMA Parquet files under samples/bucket=<b>/,
250k rows a file): image-text (LAION/COYO/CC12M-like, a fifth of them also in the generation
bucket, so stored twice as curate stores a row eligible for two buckets), text, interleaved
documents with two or three images, video-text and audio-text rows; captions, texts and segments
of realistic lengths; scores (clip_score, aesthetic, text_tokens); 2% rows not kept. Media are
references to three tiny shared files (a JPEG, an MP4, a WAV) with the probed width, height,
duration and byte size of real ones, so costs and ``max_bytes`` are realistic and writing is fast.

The stage is counted in tokens with a budget of about 80% of the pool's tokens: video and audio
repeat (max_repeat 3), the big image sources are cut, shards of 10,000 samples' worth. Each size
runs in a fresh process (peak RSS is ru_maxrss of that process; bytes per row are the resident
growth while the pool is held, over its rows).

    python benchmarks/bench_mix_scale.py --rows 1000000 3000000 10000000
    python benchmarks/bench_mix_scale.py --rows 1000000 --code /tmp/mix_before --tag before
    python benchmarks/bench_mix_scale.py --rows 1000000 --write-shards 4 --data /tmp/mixscale

``--code`` runs another checkout's ``mixtures`` (the mixer before a change) on the same table.
Writes benchmarks/results/mix_scale[_TAG].json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_FILE = 250_000

#: layout -> (share of rows, [(source, share within the layout)])
LAYOUTS = {
    "image-text": (0.50, [("laion", 0.70), ("coyo", 0.25), ("cc12m", 0.05)]),
    "text": (0.20, [("fineweb", 0.9), ("wiki", 0.1)]),
    "interleaved": (0.12, [("obelics", 1.0)]),
    "video-text": (0.11, [("webvid", 0.8), ("panda", 0.2)]),
    "audio-text": (0.07, [("audiocaps", 0.6), ("clotho", 0.4)]),
}
_TEXT = (
    "a photo of the small red house near river with two dogs running across green field under blue sky "
    "people walking street city night lights reflection water mountain snow forest tree bird flying over "
    "old man reading book table cup coffee window morning sun cat sleeping sofa child playing ball beach"
)
WORDS = _TEXT.split(" ")


def mixture(budget: float) -> dict[str, Any]:
    return {
        "name": "scale",
        "seed": 11,
        "stages": [
            {
                "name": "pretrain",
                "unit": "tokens",
                "budget": budget,
                "max_repeat": 3,
                "temperature": 2.0,
                "tolerance": 0.02,
                "shards": {"max_samples": 10000},
                "groups": [
                    {
                        "name": "understanding",
                        "weight": 0.7,
                        "buckets": ["understanding"],
                        "groups": [
                            {"name": "image-text", "weight": 0.35, "where": {"layout": ["image-text"]}},
                            {"name": "interleaved", "weight": 0.2, "where": {"layout": ["interleaved"]}},
                            {"name": "video", "weight": 0.2, "where": {"layout": ["video-text"]}},
                            {"name": "audio", "weight": 0.1, "where": {"layout": ["audio-text"]}},
                            {"name": "text", "weight": 0.15, "where": {"layout": ["text"]}},
                        ],
                    },
                    {"name": "generation", "weight": 0.3, "buckets": ["generation"], "text_first": 0.8},
                ],
            }
        ],
    }


# --------------------------------------------------------------------------- the synthetic table


def _strings(rng, n: int, lo: int, hi: int, base: str):
    """n strings of lo..hi characters: consecutive slices of one long text (no Python loop)."""
    import numpy as np
    import pyarrow as pa

    lengths = rng.integers(lo, hi + 1, n)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    reps = int(offsets[-1] // len(base)) + 1
    data = (base * reps)[: int(offsets[-1])].encode()
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def _list(offsets, values):
    import numpy as np
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), values)


def _media(n_items: int, fields: dict[str, Any]):
    """A struct array of MEDIA_TYPE with ``fields`` set (others null)."""
    import pyarrow as pa

    from schemas.record import MEDIA_TYPE

    cols = [fields[f.name] if f.name in fields else pa.nulls(n_items, f.type) for f in MEDIA_TYPE]
    cols = [c if isinstance(c, pa.Array) else pa.array(c, type=f.type) for c, f in zip(cols, MEDIA_TYPE, strict=True)]
    return pa.StructArray.from_arrays(cols, fields=list(MEDIA_TYPE))


def make_file(path: Path, start: int, n: int, seed: int, media: dict[str, str], generation_only: bool = False):
    """Rows start..start+n of the table (a pure function of the row numbers), as one Parquet file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from schemas.record import SAMPLE_SCHEMA, SEGMENT_TYPE

    rng = np.random.default_rng([seed, start])
    base = " ".join(rng.choice(WORDS, 4000))
    idx = np.arange(start, start + n)
    layout_names = list(LAYOUTS)
    shares = np.array([LAYOUTS[k][0] for k in layout_names])
    # row number -> layout and source: a hash of the number, so a row is the same in any file
    u = ((idx * 2654435761 + seed) % 2**32) / 2**32
    lay = np.searchsorted(np.cumsum(shares), u, side="right").clip(0, len(layout_names) - 1)
    v = ((idx * 40503 + 7 * seed + 1) % 65536) / 65536
    src = np.empty(n, dtype=object)
    for li, name in enumerate(layout_names):
        m = lay == li
        names = [s for s, _ in LAYOUTS[name][1]]
        cum = np.cumsum([w for _, w in LAYOUTS[name][1]])
        src[m] = np.asarray(names, dtype=object)[np.searchsorted(cum, v[m], side="right").clip(0, len(names) - 1)]
    rr = np.random.default_rng([seed, 1, int(idx[0]) if n else 0])
    ids = pa.array([f"{(i * 0x9E3779B97F4A7C15 + seed) % 2**96:024x}" for i in idx.tolist()])
    layouts = pa.array(np.asarray(layout_names, dtype=object)[lay], pa.string())
    is_img, is_txt, is_doc, is_vid, is_aud = (lay == k for k in range(5))
    gen = is_img & (((idx * 97 + seed) % 5) == 0) & (src != "cc12m")
    # media lists: image 1, interleaved 2-3, video 1, audio 1, text 0
    n_media = np.where(is_img | is_vid | is_aud, 1, 0) + np.where(is_doc, 2 + (idx % 2), 0)
    moff = np.concatenate(([0], np.cumsum(n_media)))
    k = int(moff[-1])
    owner = np.repeat(np.arange(n), n_media)
    olay = lay[owner]
    modality = np.where(olay == 3, "video", np.where(olay == 4, "audio", "image"))
    uri = np.where(olay == 3, media["video"], np.where(olay == 4, media["audio"], media["image"]))
    fmt = np.where(olay == 3, "mp4", np.where(olay == 4, "wav", "jpeg"))
    w = rr.integers(256, 2048, k).astype(np.int32)
    h = (w * rr.uniform(0.5, 1.5, k)).astype(np.int32)
    dur = np.where(olay == 3, rr.uniform(2, 60, k), np.where(olay == 4, rr.uniform(1, 30, k), np.nan))
    nbytes = np.where(olay == 3, rr.integers(500_000, 20_000_000, k), np.where(olay == 4, rr.integers(30_000, 1_000_000, k), rr.integers(20_000, 600_000, k)))
    visual = olay != 4
    mfields = {
        "role": pa.array(np.full(k, "input", dtype=object), pa.string()),
        "modality": pa.array(modality.astype(object), pa.string()),
        "uri": pa.array(uri.astype(object), pa.string()),
        "bytes": pa.array(nbytes, pa.int64()),
        "format": pa.array(fmt.astype(object), pa.string()),
        "width": pa.array(w, pa.int32(), mask=~visual),
        "height": pa.array(h, pa.int32(), mask=~visual),
        "duration_s": pa.array(dur, pa.float64(), mask=np.isnan(dur)),
        "fps": pa.array(np.full(k, 24.0), pa.float64(), mask=olay != 3),
        "has_audio": pa.array(rr.random(k) < 0.5, pa.bool_(), mask=olay != 3),
        "sample_rate": pa.array(np.full(k, 16000), pa.int32(), mask=olay != 4),
        "channels": pa.array(np.full(k, 1), pa.int32(), mask=olay != 4),
    }
    media_arr = _list(moff, _media(k, mfields))
    caption = _strings(rr, n, 20, 200, base)
    text = _strings(rr, n, 400, 6000, base)
    transcript = _strings(rr, n, 20, 300, base)
    # interleaved: text, image, text, image (, text, image)
    nseg = np.where(is_doc, 2 * n_media, 0)
    soff = np.concatenate(([0], np.cumsum(nseg)))
    ks = int(soff[-1])
    pos = np.arange(ks) - np.repeat(soff[:-1], nseg)
    is_text_seg = pos % 2 == 0
    seg = pa.StructArray.from_arrays(
        [
            pa.array(np.where(is_text_seg, "text", "media").astype(object), pa.string()),
            pc.if_else(pa.array(is_text_seg), _strings(rr, ks, 100, 1500, base), pa.scalar(None, pa.string())),
            pa.array((pos // 2).astype(np.int32), pa.int32(), mask=is_text_seg),
        ],
        fields=list(SEGMENT_TYPE),
    )
    kept = rr.random(n) >= 0.02
    score_keys = pa.array(np.tile(["clip_score", "aesthetic", "text_tokens"], n).astype(object), pa.string())
    score_vals = pa.array(np.stack([rr.uniform(0.15, 0.4, n), rr.uniform(3, 7, n), rr.integers(5, 2000, n).astype(float)], 1).ravel())
    scores = pa.MapArray.from_arrays(pa.array(np.arange(0, 3 * n + 1, 3, dtype=np.int32)), score_keys, score_vals)
    buckets = np.where(gen, "understanding,generation", "understanding")
    tasks = np.asarray(["captioning", "text", "interleaved_understanding", "video_captioning", "asr"], dtype=object)[lay]
    modalities = np.asarray(["image,text", "text", "image,text", "video,text", "audio,text"], dtype=object)[lay]

    def split_list(values: np.ndarray):
        return pc.split_pattern(pa.array(values.astype(object), pa.string()), ",")

    cols = {
        "id": ids,
        "content_hash": ids,
        "source": pa.array(src, pa.string()),
        "locator": pc.binary_join_element_wise(pa.array(src, pa.string()), pa.array(idx.astype(str).astype(object), pa.string()), ":"),
        "license": pa.array(np.full(n, "cc-by-4.0", dtype=object), pa.string()),
        "seq": pa.array(idx, pa.int64()),
        "modalities": split_list(modalities),
        "layout": layouts,
        "media": media_arr,
        "caption": pc.if_else(pa.array(is_img | is_vid), caption, pa.scalar(None, pa.string())),
        "transcript": pc.if_else(pa.array(is_aud), transcript, pa.scalar(None, pa.string())),
        "text": pc.if_else(pa.array(is_txt), text, pa.scalar(None, pa.string())),
        "language": pa.array(np.full(n, "en", dtype=object), pa.string()),
        "interleaved": _list(soff, seg),
        "tasks": split_list(tasks),
        "buckets": split_list(buckets),
        "scores": scores,
        "status": pa.array(np.where(kept, "kept", "dropped").astype(object), pa.string()),
    }
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in SAMPLE_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=SAMPLE_SCHEMA)
    if generation_only:
        table = table.filter(pa.array(gen))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=50_000)
    return table.num_rows, int(gen.sum())


def make_table(root: Path, rows: int, seed: int = 0) -> Path:
    """ROOT/rows_<N>/run/samples/bucket=*/part-*.parquet (made once, reused)."""
    run = root / f"rows_{rows}" / "run"
    done = run / "_DONE"
    if done.exists():
        return run
    from curate.demo.synth import make_audio, make_image, make_video

    mdir = root / "media"
    mdir.mkdir(parents=True, exist_ok=True)
    media = {
        "image": str(mdir / "tiny.jpg") if (mdir / "tiny.jpg").exists() else str(make_image(mdir / "tiny.jpg", 64, 48, seed=1)),
        "video": str(mdir / "tiny.mp4") if (mdir / "tiny.mp4").exists() else str(make_video(mdir / "tiny.mp4", seconds=0.5, fps=4, width=64, height=48, seed=1)),
        "audio": str(mdir / "tiny.wav") if (mdir / "tiny.wav").exists() else str(make_audio(mdir / "tiny.wav", seconds=0.2, seed=1)),
    }
    t = time.perf_counter()
    for f, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, rows - start)
        make_file(run / "samples" / "bucket=understanding" / f"part-{f:05d}.parquet", start, n, seed, media)
        make_file(run / "samples" / "bucket=generation" / f"part-{f:05d}.parquet", start, n, seed, media, generation_only=True)
    done.write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - t}))
    return run


# --------------------------------------------------------------------------- one measured run


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    """Give freed memory back (Python's, glibc's and Arrow's allocators keep some) before reading RSS."""
    import ctypes

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(run: Path, rows: int, write_shards: int, out: Path) -> dict[str, Any]:
    """In this process: pool, plan, order + cut, shard jobs, then ``write_shards`` shards."""
    import inspect

    import numpy as np

    import mixtures
    import mixtures.mixer as mixer
    from mixtures.config import MixtureConfig
    from mixtures.planner import plan_stage
    from mixtures.pool import load_pool
    from mixtures.shards import write_shard

    res: dict[str, Any] = {"rows": rows, "code": str(Path(mixtures.__file__).resolve().parents[1])}
    import pyarrow.parquet  # noqa: F401 - imported before the baseline, as the mixer imports it

    _trim()
    base = _rss()
    res["rss_base"] = base
    probe = MixtureConfig.model_validate(mixture(1.0))
    stage = probe.stage("pretrain")
    t = time.perf_counter()
    kwargs = {"seed": probe.seed} if "seed" in inspect.signature(load_pool).parameters else {}
    pool = load_pool(run, stage, probe.estimators, **kwargs)
    res["load_s"] = time.perf_counter() - t
    _trim()
    res["pool_rows"] = len(pool)
    res["pool_bytes_per_row"] = (_rss() - base) / max(1, len(pool))
    if hasattr(pool, "nbytes"):  # the columnar pool: what its arrays hold
        res["pool_array_bytes_per_row"] = pool.nbytes() / max(1, len(pool))
    res["peak_after_load"] = _peak()
    costs = pool.costs["tokens"]
    budget = round(0.8 * float(np.sum(costs)), -3)
    cfg = MixtureConfig.model_validate(mixture(budget))
    stage = cfg.stage("pretrain")
    res["budget_tokens"] = budget
    t = time.perf_counter()
    plan = plan_stage(stage, pool, cfg.seed)
    res["plan_s"] = time.perf_counter() - t
    res["samples"] = int(sum(len(st.items) for st in plan.streams))
    _trim()
    res["rss_after_plan"] = _rss()
    t = time.perf_counter()
    folders, guarantee = mixer._cut(stage, plan, pool)
    res["order_cut_s"] = time.perf_counter() - t
    res["shards"] = sum(len(f.cuts) for f in folders)
    res["guarantee_held"] = guarantee.held
    _trim()
    res["rss_after_order"] = _rss()
    res["plan_order_bytes_per_sample"] = (res["rss_after_order"] - base - res["pool_bytes_per_row"] * len(pool)) / max(1, res["samples"])
    res["peak_after_order"] = _peak()
    t = time.perf_counter()
    extra = {"estimators": cfg.estimators} if "estimators" in inspect.signature(mixer._shard_jobs).parameters else {}
    layout = mixer._shard_jobs(stage, plan, pool, out, cfg.seed, folders, **extra)
    jobs = (j for leaf_jobs in layout.values() for j in leaf_jobs)
    first = [next(jobs) for _ in range(write_shards)]
    res["jobs_s"] = time.perf_counter() - t
    _trim()
    res["rss_after_jobs"] = _rss()
    res["held_bytes_per_sample"] = (res["rss_after_jobs"] - base - res["pool_bytes_per_row"] * len(pool)) / max(1, res["samples"])
    out.mkdir(parents=True, exist_ok=True)
    try:  # the mixer gathers the rows the shards draw, once, before writing them
        from mixtures.gather import gather, remove
    except ImportError:  # an older mixer: every shard reads the curated files itself
        gather = remove = None
    t = time.perf_counter()
    if gather is not None:
        first = gather(first, out / ".gather")
    res["gather_s"] = time.perf_counter() - t
    res["rss_after_gather"] = _rss()
    t = time.perf_counter()
    written = [write_shard(j) for j in first]
    res["write_s"] = time.perf_counter() - t
    if remove is not None:
        remove(out / ".gather")
    res["written_samples"] = sum(s.samples for s in written)
    res["written_bytes"] = sum(s.bytes for s in written)
    res["write_us_per_sample"] = 1e6 * res["write_s"] / max(1, res["written_samples"])
    res["sha256"] = [s.sha256 for s in written]
    res["peak_rss"] = _peak()
    res["peak_bytes_per_row"] = res["peak_rss"] / rows
    total = res["load_s"] + res["plan_s"] + res["order_cut_s"] + res["jobs_s"]
    res["plan_order_s"] = total
    res["us_per_row"] = 1e6 * total / rows
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--data", type=Path, default=Path("/tmp/nmm_mix_scale"), help="where the synthetic tables are made (reused)")
    ap.add_argument("--write-shards", type=int, default=2, help="shards written (in-process) after the cut")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose mixtures/ runs (default: this one)")
    ap.add_argument("--tag", default="", help="results/mix_scale_<tag>.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = ap.parse_args()
    sys.path.insert(0, str(args.code))
    if args.code != ROOT:
        sys.path.insert(1, str(ROOT))
    if args.one:
        run = make_table(args.data, args.one)
        res = measure(run, args.one, args.write_shards, args.data / f"shards_{args.one}_{args.tag or 'now'}")
        print("RESULT " + json.dumps(res))
        return
    results = []
    for n in args.rows:
        sys.path.insert(0, str(ROOT))
        t = time.perf_counter()
        make_table(args.data, n)
        made = time.perf_counter() - t
        cmd = [sys.executable, __file__, "--one", str(n), "--data", str(args.data), "--write-shards", str(args.write_shards), "--code", str(args.code), "--tag", args.tag]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
            results.append({"rows": n, "error": f"exit {p.returncode}", "stderr": p.stderr[-2000:]})
            continue
        res = json.loads(line[len("RESULT ") :])
        res["table_s"] = made
        results.append(res)
        print(
            f"{n:>11,} rows: load {res['load_s']:.1f} s, plan {res['plan_s']:.1f} s, order+cut {res['order_cut_s']:.1f} s, "
            f"jobs {res['jobs_s']:.1f} s ({res['us_per_row']:.1f} us/row); pool {res['pool_bytes_per_row']:.0f} B/row, "
            f"plan+order+jobs {res['held_bytes_per_sample']:.0f} B/sample; "
            f"peak RSS {res['peak_rss'] / 2**30:.2f} GiB ({res['peak_bytes_per_row']:.0f} B/row); {res['samples']:,} samples, "
            f"{res['shards']} shards; gather {res['gather_s']:.1f} s, write {res['write_us_per_sample']:.0f} us/sample",
            flush=True,
        )
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "command": " ".join(sys.argv),
        "results": results,
    }
    name = f"mix_scale_{args.tag}.json" if args.tag else "mix_scale.json"
    (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
