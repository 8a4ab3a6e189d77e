"""CLIP-backed scoring (clip_score, aesthetic_score, clip_tags) through the real open_clip loading
path: a tiny architecture with random weights is saved to a file by the test and loaded through
the same params a user writes (model + config_file + pretrained path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("open_clip")
pytest.importorskip("torch")

from _tinyclip import TINY_NAME, tiny_params, write_tiny_clip  # noqa: E402

from curate.config import ConfigError, load_pipeline  # noqa: E402
from curate.demo.synth import make_image, make_video  # noqa: E402
from operators.base import OperatorError  # noqa: E402
from operators.clip.aesthetic import AestheticScore, load_head  # noqa: E402
from operators.clip.score import ClipScore  # noqa: E402
from operators.clip.tags import ClipTags  # noqa: E402
from schemas.record import new_media, new_record  # noqa: E402

CAPTIONS = ["a red square on a blue field", "two dogs running on the beach", "a plate of pasta with basil"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_clip(tmp_path_factory.mktemp("tinyclip"), seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("imgs")
    out = [make_image(d / f"im{i}.jpg", 320, 240, seed=i, pattern="shapes") for i in range(3)]
    out.append(make_image(d / "big.png", 900, 700, seed=9, pattern="noise"))
    return out


def image_row(path: Path, caption: str | None, i: int = 0, **fields) -> dict:
    return new_record(
        source="s", locator=f"l{i}", id=f"id{i}", layout="image-text", caption=caption,
        media=[new_media("image", str(path))], **fields,
    )  # fmt: skip


def score(op, rows):
    op.process_batch(rows)
    return rows


def test_same_weights_same_scores_across_loads_and_range(tiny, images):
    cfg, w = tiny
    a = score(ClipScore(tiny_params(cfg, w)), [image_row(p, c, i) for i, (p, c) in enumerate(zip(images, CAPTIONS, strict=False))])
    b = score(ClipScore(tiny_params(cfg, w)), [image_row(p, c, i) for i, (p, c) in enumerate(zip(images, CAPTIONS, strict=False))])
    for ra, rb in zip(a, b, strict=True):
        assert ra["status"] == "kept"
        s = ra["scores"]["clip_score"]
        assert -1.0 <= s <= 1.0
        assert s == pytest.approx(rb["scores"]["clip_score"], abs=1e-6)
        assert ra["scores"]["clip_score_scaled"] == pytest.approx(100 * max(s, 0.0))
        assert ra["scores"]["clip_images"] == 1.0
    # different weights give different scores: the file is what is loaded, not a fresh init
    cfg1, w1 = write_tiny_clip(w.parent / "other", seed=1)
    c = score(ClipScore(tiny_params(cfg1, w1)), [image_row(images[0], CAPTIONS[0])])
    assert c[0]["scores"]["clip_score"] != pytest.approx(a[0]["scores"]["clip_score"], abs=1e-4)


def test_own_caption_vs_other_caption_and_text_fallbacks(tiny, images):
    cfg, w = tiny
    op = ClipScore(tiny_params(cfg, w))
    own = score(op, [image_row(images[0], CAPTIONS[0])])[0]["scores"]["clip_score"]
    other = score(op, [image_row(images[0], CAPTIONS[1])])[0]["scores"]["clip_score"]
    again = score(op, [image_row(images[0], CAPTIONS[1])])[0]["scores"]["clip_score"]
    assert own != pytest.approx(other, abs=1e-4)
    assert other == pytest.approx(again, abs=1e-6)
    # the text is caption, else alt_text, else instruction, else the first user turn
    alt = score(op, [image_row(images[0], None, alt_text=CAPTIONS[0])])[0]["scores"]["clip_score"]
    conv = [{"role": "user", "text": "<image>\n" + CAPTIONS[0]}, {"role": "assistant", "text": "ok"}]
    turn = score(op, [image_row(images[0], None, conversation=conv)])[0]["scores"]["clip_score"]
    assert alt == pytest.approx(own, abs=1e-5) and turn == pytest.approx(own, abs=1e-5)
    # no text: no score, the row is untouched and kept
    bare = score(op, [image_row(images[0], None)])[0]
    assert "clip_score" not in bare["scores"] and bare["status"] == "kept"


def test_batch_equals_single_and_png_is_reduced(tiny, images):
    cfg, w = tiny
    op = ClipScore(tiny_params(cfg, w, batch_size=2, decode_workers=2))
    rows = [image_row(p, CAPTIONS[i % 3], i) for i, p in enumerate(images)]
    batched = [r["scores"]["clip_score"] for r in score(op, rows)]
    single = [score(op, [image_row(p, CAPTIONS[i % 3], i)])[0]["scores"]["clip_score"] for i, p in enumerate(images)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_keep_embedding_multi_image_min_and_broken_image(tiny, images, tmp_path):
    cfg, w = tiny
    op = ClipScore(tiny_params(cfg, w, keep_embedding=True, aggregate="max"))
    multi = new_record(
        source="s", locator="m", id="m", layout="multi-image-text", caption=CAPTIONS[0],
        media=[new_media("image", str(images[0])), new_media("image", str(images[1]))],
    )  # fmt: skip
    broken = image_row(tmp_path / "gone.jpg", "x", 5)
    score(op, [multi, broken])
    s = multi["scores"]
    assert s["clip_images"] == 2.0 and s["clip_score_min"] <= s["clip_score"]
    meta = json.loads(multi["meta"])
    emb = np.array(meta["clip_embedding"])
    assert emb.shape == (32,) and abs(np.linalg.norm(emb) - 1) < 1e-2
    assert meta["clip_embedding_model"] == f"{TINY_NAME}:{w.name}"
    assert all(len(str(x)) <= 12 for x in meta["clip_embedding"])  # float16-rounded, short JSON
    assert broken["status"] == "quarantined" and broken["status_reason"] == "missing_file"


def test_video_keyframes_or_middle_frame_and_documents(tiny, images, tmp_path):
    cfg, w = tiny
    op = ClipScore(tiny_params(cfg, w))
    video = make_video(tmp_path / "v.mp4", seconds=2.0, fps=10, width=96, height=64, seed=3)
    plain = new_record(source="s", locator="v", id="v", layout="video-text", caption=CAPTIONS[0],
                       media=[new_media("video", str(video), duration_s=2.0)])  # fmt: skip
    keyed = new_record(
        source="s", locator="k", id="k", layout="video-text", caption=CAPTIONS[0],
        media=[new_media("video", str(video)), new_media("image", str(images[0]), role="keyframe"),
               new_media("image", str(images[1]), role="keyframe")],
    )  # fmt: skip
    doc = new_record(
        source="s", locator="d", id="d", layout="interleaved",
        media=[new_media("image", str(images[0])), new_media("image", str(tmp_path / "missing.jpg")),
               new_media("image", str(images[1]))],
        interleaved=[
            {"kind": "text", "text": CAPTIONS[0], "media_index": None},
            {"kind": "media", "text": None, "media_index": 0},
            {"kind": "media", "text": None, "media_index": 1},
            {"kind": "text", "text": "filler paragraph", "media_index": None},
            {"kind": "media", "text": None, "media_index": 2},
            {"kind": "text", "text": CAPTIONS[1], "media_index": None},
        ],
    )  # fmt: skip
    score(op, [plain, keyed, doc])
    assert plain["scores"]["clip_images"] == 1.0 and -1 <= plain["scores"]["clip_score"] <= 1
    assert keyed["scores"]["clip_images"] == 2.0  # the two keyframes, not the video
    own = score(op, [image_row(images[0], CAPTIONS[0])])[0]["scores"]["clip_score"]
    assert keyed["scores"]["clip_score_min"] <= own + 1e-6 or keyed["scores"]["clip_score"] >= own - 1e-6
    # a document keeps going past a missing image; each image meets its nearest text segment
    assert doc["status"] == "kept" and doc["scores"]["clip_images"] == 2.0
    im1_vs_caption1 = score(op, [image_row(images[1], CAPTIONS[1])])[0]["scores"]["clip_score"]
    assert doc["scores"]["clip_score"] == pytest.approx((own + im1_vs_caption1) / 2, abs=1e-5)


def _pipeline(tmp_path: Path, stages: list[dict]) -> Path:
    d = tmp_path / "imgs"
    d.mkdir(exist_ok=True)
    cfg = {"name": "clip", "sources": [{"name": "imgs", "reader": "image_folder", "path": str(d)}], "stages": stages}
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_missing_weights_fail_at_validation_with_what_to_configure(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    tag = {"op": "clip_score", "params": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "cache_dir": str(tmp_path / "c")}}
    with pytest.raises(ConfigError) as e:
        load_pipeline(_pipeline(tmp_path, [tag]))
    msg = str(e.value)
    assert "clip_score.params.pretrained" in msg and "laion2b_s34b_b79k" in msg
    assert "not in the open_clip cache" in msg and "local checkpoint path" in msg
    assert "stages[0]" in msg  # the loader names the stage
    missing = {"op": "clip_score", "params": {"model": "ViT-B-32", "pretrained": str(tmp_path / "nope.pt")}}
    with pytest.raises(ConfigError, match=r"no such checkpoint file: .*nope\.pt"):
        load_pipeline(_pipeline(tmp_path, [missing]))
    unset = {"op": "clip_score", "name": "clip", "params": {"model": "ViT-B-32"}}
    with pytest.raises(ConfigError, match=r"clip\.params\.pretrained is not set"):
        load_pipeline(_pipeline(tmp_path, [unset]))
    # weights of another architecture: caught by shapes, before any work
    cfg, w = tiny
    wrong = {"op": "clip_score", "params": {"model": "ViT-B-32", "pretrained": str(w)}}
    with pytest.raises(ConfigError, match=r"does not fit model 'ViT-B-32'"):
        load_pipeline(_pipeline(tmp_path, [wrong]))
    ok = {"op": "clip_score", "params": tiny_params(cfg, w)}
    load_pipeline(_pipeline(tmp_path, [ok]))


def test_cached_tag_resolves_without_download(tiny, tmp_path, monkeypatch):
    """A tag in the Hugging Face cache layout is found where open_clip would look, offline."""
    import open_clip

    hub = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"]
    repo, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub[:-1], "")
    cache = tmp_path / "hf"
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    (snap / (filename or "open_clip_pytorch_model.bin")).write_bytes(b"not really weights")
    from operators.clip.weights import resolve_spec

    op = ClipScore({"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "cache_dir": str(cache)})
    spec = resolve_spec(op.params, "clip_score.params")
    assert spec.weights_file.startswith(str(snap)) and spec.pretrained == "laion2b_s34b_b79k"
    with pytest.raises(OperatorError, match="cannot read checkpoint"):
        op.validate_setup()  # the cached file is not a checkpoint: said before the run


def test_engine_runs_clip_score_as_actor_pool(ray_local, tiny, tmp_path):
    from curate.engine import Engine

    cfg, w = tiny
    path = _pipeline(tmp_path, [
        {"op": "probe"},
        {"op": "clip_score", "params": tiny_params(cfg, w, keep_embedding=True),
         "resources": {"concurrency": 1, "batch_size": 4, "num_cpus": 1}},
    ])  # fmt: skip
    d = tmp_path / "imgs"
    for i in range(5):
        make_image(d / f"im{i}.jpg", 160, 120, seed=i, pattern="shapes")
        (d / f"im{i}.txt").write_text(CAPTIONS[i % 3])
    summary = Engine(load_pipeline(path), tmp_path / "out", progress=False).run()
    assert summary["counts"]["kept"] == 5
    import pyarrow.dataset as pads

    from schemas.record import from_table

    rows = from_table(pads.dataset(str(tmp_path / "out" / "samples"), format="parquet").to_table())
    assert len(rows) == 5
    op = ClipScore(tiny_params(cfg, w))
    for r in rows:
        assert "clip_score" in r["scores"] and "clip_score" in r["lineage"]
        alone = score(op, [image_row(Path(r["media"][0]["uri"]), r["caption"])])[0]["scores"]["clip_score"]
        assert r["scores"]["clip_score"] == pytest.approx(alone, abs=1e-5)  # same model in the actor
        assert len(json.loads(r["meta"])["clip_embedding"]) == 32


# ----------------------------------------------------------------------------- aesthetic, tags


def _linear_head(path: Path, dim: int, seed: int = 0) -> Path:
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.save({"weight": torch.randn(1, dim, generator=g), "bias": torch.tensor([5.0])}, path)
    return path


def _mlp_head(path: Path, dims: list[int], seed: int = 0) -> Path:
    """LAION improved-predictor layout: layers.0, layers.2 ... with gaps where dropout sat."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    t = {}
    for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
        t[f"layers.{2 * i}.weight"] = rng.normal(size=(b, a)).astype(np.float32) / np.sqrt(a)
        t[f"layers.{2 * i}.bias"] = rng.normal(size=(b,)).astype(np.float32)
    save_file(t, str(path))
    return path


def test_aesthetic_head_deterministic_and_formats(tiny, images, tmp_path):
    cfg, w = tiny
    lin = _linear_head(tmp_path / "lin.pt", 32)
    mlp = _mlp_head(tmp_path / "mlp.safetensors", [32, 16, 8, 1])
    rows = lambda: [image_row(p, None, i) for i, p in enumerate(images)]  # noqa: E731
    a = score(AestheticScore(tiny_params(cfg, w, head=str(lin))), rows())
    b = score(AestheticScore(tiny_params(cfg, w, head=str(lin))), rows())
    assert [r["scores"]["aesthetic_score"] for r in a] == pytest.approx([r["scores"]["aesthetic_score"] for r in b])
    assert len({round(r["scores"]["aesthetic_score"], 5) for r in a}) == len(images)  # the head sees the image
    # the linear head is exactly w . normalised embedding + b
    op = ClipScore(tiny_params(cfg, w, keep_embedding=True))
    r0 = score(op, [image_row(images[0], "x")])[0]
    import torch

    sd = torch.load(lin)
    expect = float(np.array(json.loads(r0["meta"])["clip_embedding"]) @ sd["weight"][0].numpy() + 5.0)
    assert a[0]["scores"]["aesthetic_score"] == pytest.approx(expect, abs=5e-3)
    m = score(AestheticScore(tiny_params(cfg, w, head=str(mlp), activation="relu")), rows())
    assert all(np.isfinite(r["scores"]["aesthetic_score"]) for r in m)
    np.savez(tmp_path / "lin.npz", weight=sd["weight"].numpy(), bias=sd["bias"].numpy())
    n = score(AestheticScore(tiny_params(cfg, w, head=str(tmp_path / "lin.npz"))), rows())
    assert [r["scores"]["aesthetic_score"] for r in n] == pytest.approx([r["scores"]["aesthetic_score"] for r in a], abs=1e-5)


def test_aesthetic_head_shape_errors_caught_at_validate(tiny, tmp_path):
    cfg, w = tiny
    wrong_dim = _linear_head(tmp_path / "l768.pt", 768)
    with pytest.raises(OperatorError, match=r"head takes 768-dim embeddings but TinyCLIP-test makes 32-dim"):
        AestheticScore(tiny_params(cfg, w, head=str(wrong_dim))).validate_setup()
    from safetensors.numpy import save_file

    save_file({"a.weight": np.zeros((16, 32), np.float32), "b.weight": np.zeros((1, 8), np.float32)}, str(tmp_path / "gap.safetensors"))
    with pytest.raises(ValueError, match=r"'b.weight' takes 8 inputs but the layer before \('a'\) gives 16"):
        load_head(tmp_path / "gap.safetensors")
    save_file({"weight": np.zeros((3, 32), np.float32)}, str(tmp_path / "three.safetensors"))
    with pytest.raises(OperatorError, match="gives 3 outputs"):
        AestheticScore(tiny_params(cfg, w, head=str(tmp_path / "three.safetensors"))).validate_setup()
    with pytest.raises(OperatorError, match=r"aesthetic_score\.params\.head: no such file"):
        AestheticScore(tiny_params(cfg, w, head=str(tmp_path / "none.pt"))).validate_setup()


def test_clip_tags_softmax_and_cosine(tiny, images):
    cfg, w = tiny
    tags = {"watermark": "a watermark", "text": ["a screenshot of text", "a page of text"], "blurry": "a blurry photo"}
    rows = lambda: [image_row(p, None, i) for i, p in enumerate(images)]  # noqa: E731
    soft = score(ClipTags(tiny_params(cfg, w, tags=tags)), rows())
    again = score(ClipTags(tiny_params(cfg, w, tags=tags)), rows())
    for r, r2 in zip(soft, again, strict=True):
        vals = [r["scores"][f"tag_{n}"] for n in tags]
        assert all(0.0 <= v <= 1.0 for v in vals) and sum(vals) < 1.0  # the background takes the rest
        assert vals == pytest.approx([r2["scores"][f"tag_{n}"] for n in tags])
    cos = score(ClipTags(tiny_params(cfg, w, tags={"watermark": "a watermark"}, mode="cosine")), rows())
    op = ClipScore(tiny_params(cfg, w))
    direct = score(op, [image_row(images[0], "a watermark")])[0]["scores"]["clip_score"]
    assert cos[0]["scores"]["tag_watermark"] == pytest.approx(direct, abs=1e-5)
    with pytest.raises(Exception, match="lower-case"):
        ClipTags(tiny_params(cfg, w, tags={"Bad Name": "x"}))


def test_aesthetic_reuses_a_kept_one_image_embedding(tiny, images, tmp_path):
    cfg, w = tiny
    lin = _linear_head(tmp_path / "lin.pt", 32)
    kept = score(ClipScore(tiny_params(cfg, w, keep_embedding=True)), [image_row(p, "x", i) for i, p in enumerate(images)])
    assert all(json.loads(r["meta"])["clip_embedding_images"] == 1 for r in kept)
    fresh = score(AestheticScore(tiny_params(cfg, w, head=str(lin))), [image_row(p, None, i) for i, p in enumerate(images)])
    op = AestheticScore(tiny_params(cfg, w, head=str(lin)))
    reused = score(op, kept)
    assert op.reused_embeddings == len(images)
    # the same numbers up to the stored embedding's float16 rounding
    assert [r["scores"]["aesthetic_score"] for r in reused] == pytest.approx([r["scores"]["aesthetic_score"] for r in fresh], abs=5e-3)
    # a missing image file does not matter any more: nothing is decoded for a reused row
    gone = dict(kept[0], media=[dict(kept[0]["media"][0], uri=str(tmp_path / "gone.jpg"))])
    (r,) = score(AestheticScore(tiny_params(cfg, w, head=str(lin))), [gone])
    assert r["status"] == "kept" and r["scores"]["aesthetic_score"] == pytest.approx(reused[0]["scores"]["aesthetic_score"])
    # another model's embedding, or reuse switched off: the image is encoded
    other = dict(kept[0], meta=json.dumps({**json.loads(kept[0]["meta"]), "clip_embedding_model": "ViT-B-32:openai"}))
    op = AestheticScore(tiny_params(cfg, w, head=str(lin)))
    score(op, [other])
    assert op.reused_embeddings == 0
    op = AestheticScore(tiny_params(cfg, w, head=str(lin), reuse_embedding=False))
    score(op, [kept[0]])
    assert op.reused_embeddings == 0
