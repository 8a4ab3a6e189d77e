"""CLIP image throughput: decode + preprocess vs. model encode, and the clip_score operator end to end.

The model is open_clip ViT-B-32 with RANDOM weights (seeded; the compute of real weights, none of
their meaning), saved to a checkpoint file and loaded through clip_score's params exactly as a
user's weights are. Images are synthetic JPEGs at two sizes (640x480 and 2048x1536, the second to
show what Pillow's draft decode saves).

    python benchmarks/bench_clip.py                        # 96 images, CPU, 1 and all torch threads
    python benchmarks/bench_clip.py --images 256 --batch 64

Measured: decode + preprocess alone (1 thread; with JPEG draft and without), model encode alone
(pre-made tensors; 1 torch thread = per core, and all cores), and ``clip_score.process_batch``
(decode in a thread pool overlapping the encode, plus
encoding each row's caption: the text tower costs about as much as the image tower), and
``aesthetic_score`` after a ``clip_score`` with ``keep_embedding: true``, encoding the images
again or reusing the kept embeddings. Prints a table; writes benchmarks/results/clip.json.
GPU: not measured here (no accelerator on the developers' machines or CI; this task was not lent
one); on a GPU worker the same operator runs with ``resources: {num_gpus: 1}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def random_vit_b32(path: Path) -> Path:
    import open_clip
    import torch

    if not path.exists():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        torch.save(model.state_dict(), path)
    return path


def make_images(folder: Path, n: int) -> list[Path]:
    from curate.demo.synth import make_image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        w, h = (2048, 1536) if i % 2 else (640, 480)
        p = folder / f"im{i:04d}_{w}.jpg"
        if not p.exists():
            make_image(p, w, h, seed=i, pattern="shapes")
        out.append(p)
    return out


def timed(fn, *a, **kw) -> tuple[float, object]:
    t = time.perf_counter()
    r = fn(*a, **kw)
    return time.perf_counter() - t, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "nmm-bench-clip"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clip.json"))
    args = ap.parse_args()

    import torch
    from PIL import Image

    from operators.clip.inputs import decode_image
    from operators.clip.score import ClipScore
    from schemas.record import new_media, new_record

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = random_vit_b32(work / "vit-b-32-random.pt")
    paths = make_images(work / "images", args.images)
    cores = os.cpu_count() or 1
    res: dict = {
        "model": "open_clip ViT-B-32, random weights (seed 0), fp32",
        "images": args.images,
        "image_sizes": ["640x480", "2048x1536"],
        "batch": args.batch,
        "cpus": cores,
        "machine": f"{platform.machine()}, {cores} cores",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "gpu": "not measured: no accelerator on this machine or CI, and this task was not lent one",
    }

    params = {"model": "ViT-B-32", "pretrained": str(ckpt), "device": "cpu", "batch_size": args.batch}
    load_s, op = timed(lambda: ClipScore(params, stage="clip_score"))
    op.validate_setup()
    load_s, bundle = timed(lambda: op.bundle)
    res["load_s"] = round(load_s, 3)
    medias = [new_media("image", str(p)) for p in paths]

    # decode + preprocess, one thread
    torch.set_num_threads(1)
    t, tensors = timed(lambda: [bundle.preprocess(decode_image(m, bundle.image_size)) for m in medias])
    res["decode_preprocess_draft_1thread_img_s"] = round(len(medias) / t, 2)

    def full_decode(m):
        with Image.open(m["uri"]) as im:
            return bundle.preprocess(im.convert("RGB"))

    t, _ = timed(lambda: [full_decode(m) for m in medias])
    res["decode_preprocess_full_1thread_img_s"] = round(len(medias) / t, 2)

    # model encode alone, on ready tensors
    x = torch.stack(tensors)
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        bundle.encode_images(x[: args.batch])  # warm-up
        t, _ = timed(lambda: [bundle.encode_images(x[i : i + args.batch]) for i in range(0, len(x), args.batch)])
        res[f"encode_{threads}thread_img_s"] = round(len(x) / t, 2)
    res["encode_img_s_per_core"] = res["encode_1thread_img_s"]

    texts = [f"a photo number {i}" for i in range(len(x))]
    bundle.encode_texts(texts[:8])
    t, _ = timed(bundle.encode_texts, texts)
    res[f"text_encode_{cores}thread_txt_s"] = round(len(texts) / t, 2)

    # the operator end to end (one distinct caption per image, so texts are encoded too) (decode threads overlap the encode), all cores
    torch.set_num_threads(cores)
    rows = [new_record(source="b", locator=str(p), caption=f"a photo number {i}", media=[m])
            for i, (p, m) in enumerate(zip(paths, medias, strict=True))]  # fmt: skip
    t, _ = timed(op.process_batch, rows)
    assert all("clip_score" in r["scores"] for r in rows)
    res["clip_score_op_img_s"] = round(len(rows) / t, 2)
    res["decode_vs_encode"] = round(res["decode_preprocess_draft_1thread_img_s"] / res["encode_1thread_img_s"], 1)

    # aesthetic_score after clip_score: encoding again vs reusing the embedding clip_score kept
    import numpy as np

    from operators.clip.aesthetic import AestheticScore

    head = work / "aesthetic-linear-512.npz"
    rng = np.random.default_rng(0)
    np.savez(head, weight=rng.normal(size=(1, 512)).astype(np.float32), bias=np.array([5.0], np.float32))
    keep = ClipScore({**params, "keep_embedding": True}, stage="clip_score")
    keep.process_batch(rows)
    for reuse in (False, True):
        aes = AestheticScore({**params, "head": str(head), "reuse_embedding": reuse}, stage="aesthetic_score")
        aes.validate_setup()
        t, _ = timed(aes.process_batch, [dict(r) for r in rows])
        res[f"aesthetic_op_{'reuse' if reuse else 'encode'}_img_s"] = round(len(rows) / t, 2)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
