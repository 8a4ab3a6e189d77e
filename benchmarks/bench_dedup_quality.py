"""Near-duplicate dedup quality: precision and recall per modality and per planted variant kind.

A ground-truth set is generated locally (curate/demo/synth_variants.py) into benchmarks/_data/:
- images: photo-like originals (gradients, soft shapes, texture, grain) and copies resized
  (0.5-1.5x), JPEG re-encoded (quality 35-65), cropped 2-5% per side (crop) or 4-10% towards one
  corner (crop_corner), brightened +-15%, and
  mirrored (mirrors count as duplicates only in the run with ``flip: true``); unrelated images
  as distractors;
- videos: panning two-scene clips and copies re-encoded (crf 38), resized (160x120 -> 96x72) and
  with the first 1, 0.5 or 0.25 s trimmed; unrelated clips;
- audio: melodies of harmonic notes and copies re-encoded to MP3 48 kb/s, resampled to 16 kHz
  FLAC, and re-encoded to AAC 32 kb/s at 11.025 kHz; other melodies, speech-like audio and noise;
- text: documents and copies with two typos, one word changed or removed, a sentence appended,
  or case/spacing changes; unrelated documents (also used for the semantic operator).
Each operator runs with its defaults through summarize / decide per partition / combine /
apply in one process (``curate.global_phase.run_in_process``).

Recall of a kind: the share of its copies that end in the same duplicate group as their
original. Precision of a kind: of the predicted same-group pairs that involve a row of that
kind, the share that are true (original with its copies, or copies of one original).

    python benchmarks/bench_dedup_quality.py              # all modalities (~3 minutes on 2 cores)
    python benchmarks/bench_dedup_quality.py --only image text --scale 0.5

Prints a table and writes benchmarks/results/dedup_quality.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.demo.synth import make_audio  # noqa: E402
from curate.demo.synth_variants import (  # noqa: E402
    edit_text,
    image_variant,
    make_music,
    make_scene_video,
    natural_image,
    random_document,
    transcode_audio,
    transcode_video,
)
from curate.global_phase import run_in_process  # noqa: E402
from schemas.record import from_table, new_media, new_record, to_table  # noqa: E402

DATA = ROOT / "benchmarks" / "_data" / "dedup_quality"


def _row(i: int, name: str, truth: str, kind: str, *, modality: str | None = None, path: Path | None = None, text: str | None = None) -> dict:
    layout = modality or "text"
    media = [new_media(modality, str(path))] if modality else []
    r = new_record(source="bench", locator=name, id=f"r{i:06d}", layout=layout, media=media, text=text, seq=i)
    r["_truth"], r["_kind"] = truth, kind
    return r


def image_set(n_orig: int, n_distract: int, flip: bool) -> list[dict]:
    d = DATA / "images"
    d.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    kinds = ["resize", "reencode", "crop", "crop_corner", "brightness"] + (["flip"] if flip else [])
    for s in range(n_orig):
        p = d / f"o{s:04d}.jpg"
        img = natural_image(s, 320 + 16 * (s % 5), 240)
        if not p.exists():
            img.save(p, quality=90)
        rows.append(_row(len(rows), p.name, f"o{s}", "original", modality="image", path=p))
        for k in kinds:
            q = d / f"o{s:04d}_{k}.jpg"
            if not q.exists():
                v, opt = image_variant(img, k, seed=s)
                v.save(q, **opt)
            rows.append(_row(len(rows), q.name, f"o{s}", k, modality="image", path=q))
    for s in range(n_distract):
        p = d / f"x{s:04d}.jpg"
        if not p.exists():
            natural_image(100_000 + s, 320, 240).save(p, quality=90)
        rows.append(_row(len(rows), p.name, f"x{s}", "distractor", modality="image", path=p))
    return rows


def video_set(n_orig: int, n_distract: int) -> list[dict]:
    d = DATA / "videos"
    d.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for s in range(n_orig):
        p = d / f"o{s:03d}.mp4"
        if not p.exists():
            make_scene_video(p, seed=s, seconds=6)
        rows.append(_row(len(rows), p.name, f"o{s}", "original", modality="video", path=p))
        variants = (
            ("reencode", {"crf": 38}),
            ("resize", {"width": 96, "height": 72}),
            ("trim_1s", {"trim_start_s": 1.0}),
            ("trim_0.5s", {"trim_start_s": 0.5}),
            ("trim_0.25s", {"trim_start_s": 0.25}),  # samples fall between the original's
        )
        for k, kw in variants:
            q = d / f"o{s:03d}_{k}.mp4"
            if not q.exists():
                transcode_video(p, q, **kw)
            rows.append(_row(len(rows), q.name, f"o{s}", k, modality="video", path=q))
    for s in range(n_distract):
        p = d / f"x{s:03d}.mp4"
        if not p.exists():
            make_scene_video(p, seed=10_000 + s, seconds=6)
        rows.append(_row(len(rows), p.name, f"x{s}", "distractor", modality="video", path=p))
    return rows


def audio_set(n_orig: int, n_distract: int) -> list[dict]:
    d = DATA / "audio"
    d.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for s in range(n_orig):
        p = d / f"o{s:03d}.flac"
        if not p.exists():
            make_music(p, seed=s, seconds=8)
        rows.append(_row(len(rows), p.name, f"o{s}", "original", modality="audio", path=p))
        for k, name, kw in (
            ("reencode_mp3", "mp3.mp3", {"bit_rate": 48000}),
            ("resample_16k", "16k.flac", {"sample_rate": 16000}),
            ("aac_11k", "aac.m4a", {"sample_rate": 11025, "bit_rate": 32000}),
        ):
            q = d / f"o{s:03d}_{name}"
            if not q.exists():
                transcode_audio(p, q, **kw)
            rows.append(_row(len(rows), q.name, f"o{s}", k, modality="audio", path=q))
    for s in range(n_distract):
        p = d / f"x{s:03d}.flac"
        if not p.exists():
            if s % 4 == 3:
                make_audio(p, seconds=8, kind="speechlike" if s % 8 == 3 else "noise", seed=s)
            else:
                make_music(p, seed=10_000 + s, seconds=8)
        rows.append(_row(len(rows), p.name, f"x{s}", "distractor", modality="audio", path=p))
    return rows


def text_set(n_orig: int, n_distract: int) -> list[dict]:
    rows: list[dict] = []
    for s in range(n_orig):
        doc = random_document(s)
        rows.append(_row(len(rows), f"d{s}", f"d{s}", "original", text=doc))
        for k in ("typo", "word_edit", "append", "case_space"):
            rows.append(_row(len(rows), f"d{s}_{k}", f"d{s}", k, text=edit_text(doc, k, seed=s)))
    for s in range(n_distract):
        rows.append(_row(len(rows), f"x{s}", f"x{s}", "distractor", text=random_document(100_000 + s)))
    return rows


def score(rows: list[dict], out: list[dict]) -> dict[str, dict]:
    """Recall and precision per variant kind (see the module docstring)."""
    truth = {r["id"]: r["_truth"] for r in rows}
    kind = {r["id"]: r["_kind"] for r in rows}
    group = {}
    for r in out:
        group[r["id"]] = r["duplicate_of"] or r["id"]
    orig_of = {r["_truth"]: r["id"] for r in rows if r["_kind"] == "original"}
    per: dict[str, dict] = defaultdict(lambda: {"n": 0, "found": 0, "pairs": 0, "true_pairs": 0})
    for r in rows:
        k = r["_kind"]
        per[k]["n"] += 1
        if k not in ("original", "distractor"):
            per[k]["found"] += int(group[r["id"]] == group[orig_of[r["_truth"]]])
    members = defaultdict(list)
    for i, g in group.items():
        members[g].append(i)
    total = {"pairs": 0, "true_pairs": 0}
    for ids in members.values():
        for a, b in itertools.combinations(ids, 2):
            ok = truth[a] == truth[b]
            total["pairs"] += 1
            total["true_pairs"] += ok
            for k in {kind[a], kind[b]}:
                per[k]["pairs"] += 1
                per[k]["true_pairs"] += ok
    result = {}
    for k, v in per.items():
        result[k] = {
            "rows": v["n"],
            "recall": round(v["found"] / v["n"], 4) if k not in ("original", "distractor") else None,
            "precision": round(v["true_pairs"] / v["pairs"], 4) if v["pairs"] else None,
            "predicted_pairs": v["pairs"],
        }
    result["all"] = {
        "rows": len(rows),
        "recall": None,
        "precision": round(total["true_pairs"] / total["pairs"], 4) if total["pairs"] else None,
        "predicted_pairs": total["pairs"],
    }
    return result


def run(modality: str, config: str, op, rows: list[dict]) -> dict:
    table = to_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    t0 = time.perf_counter()
    done = run_in_process(op, table)  # fits first when the operator has a fit step
    out = from_table(done.table)
    seconds = time.perf_counter() - t0
    res = {"modality": modality, "config": config, "seconds": round(seconds, 2), "thresholds": op.thresholds(),
           "stats": done.report["stats"], "kinds": score(rows, out)}  # fmt: skip
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=["image", "video", "audio", "text", "semantic"])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the set sizes")
    args = ap.parse_args()

    def n(x: int) -> int:
        return max(2, round(x * args.scale))

    results = []
    if "image" in args.only:
        from operators.dedup.image_phash import ImagePhashDedup

        results.append(run("image", "defaults", ImagePhashDedup(), image_set(n(150), n(300), flip=False)))
        results.append(run("image", "flip: true", ImagePhashDedup({"flip": True}), image_set(n(150), n(300), flip=True)))
        results.append(run("image", "bands: 8", ImagePhashDedup({"bands": 8}), image_set(n(150), n(300), flip=False)))
        results.append(run("image", "crop_bands: 6", ImagePhashDedup({"crop_bands": 6}), image_set(n(150), n(300), flip=False)))
        results.append(run("image", "crops: false", ImagePhashDedup({"crops": False}), image_set(n(150), n(300), flip=False)))
    if "video" in args.only:
        from operators.dedup.video import VideoDedup

        results.append(run("video", "defaults", VideoDedup(), video_set(n(24), n(40))))
        results.append(run("video", "step_s: 0.5", VideoDedup({"step_s": 0.5, "max_frames": 48}), video_set(n(24), n(40))))
    if "audio" in args.only:
        from operators.dedup.audio import AudioDedup

        results.append(run("audio", "defaults", AudioDedup(), audio_set(n(30), n(60))))
    if "text" in args.only:
        from operators.dedup.text_minhash import TextMinhashDedup

        results.append(run("text", "minhash defaults", TextMinhashDedup(), text_set(n(300), n(600))))
    if "semantic" in args.only:
        from operators.dedup.semantic import SemanticDedup

        results.append(run("text", "semantic defaults", SemanticDedup({"clusters": 8}), text_set(n(60), n(120))))
    print(f"{'modality':<9} {'config':<18} {'kind':<13} {'rows':>5} {'recall':>7} {'precision':>9} {'pairs':>6}")
    for r in results:
        for kind, v in r["kinds"].items():
            rec = "" if v["recall"] is None else f"{v['recall']:.3f}"
            prec = "" if v["precision"] is None else f"{v['precision']:.3f}"
            print(f"{r['modality']:<9} {r['config']:<18} {kind:<13} {v['rows']:>5} {rec:>7} {prec:>9} {v['predicted_pairs']:>6}")
        print(f"{'':<9} {'':<18} ({r['seconds']} s, {r['stats'].get('candidate_pairs')} candidate pairs verified)")
    out = {
        "benchmark": "dedup_quality",
        "note": "in-process summarize/decide/combine/apply on locally generated ground truth",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
    }
    path = ROOT / "benchmarks" / "results" / "dedup_quality.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # --only re-runs some modalities: keep the others' last results
        rerun = {r["modality"] for r in results}
        kept = [r for r in json.loads(path.read_text()).get("results", []) if r["modality"] not in rerun]
        out["results"] = sorted(kept + results, key=lambda r: ["image", "video", "audio", "text"].index(r["modality"]))
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
