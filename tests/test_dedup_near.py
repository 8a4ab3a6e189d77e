"""Near-duplicate dedup: the shared LSH -> edges -> components machinery, images, text, and one
engine run (Ray) with probe + dedup_image_phash + dedup_text_minhash."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from curate.demo.synth_variants import edit_text, image_variant, natural_image, random_document
from curate.global_phase import run_in_process
from operators.dedup.image_phash import ImagePhashDedup, band_keys
from operators.dedup.lsh import bucket_pairs
from operators.dedup.near import PARTIAL_SCHEMA
from operators.dedup.text_minhash import MinHasher, TextMinhashDedup, lsh_threshold
from schemas.record import content_hash, from_table, new_media, new_record, to_table


def resolve(op, rows, partitions: int = 3):
    """summarize -> hash-partition -> decide per partition -> combine -> apply, in one process."""
    return {r["locator"]: r for r in from_table(run_in_process(op, to_table(rows), partitions).table)}


def image_row(path: Path, seq: int, **scores) -> dict:
    r = new_record(
        source="s", locator=path.name, layout="image", media=[new_media("image", str(path))], seq=seq, scores=scores
    )
    r["content_hash"] = content_hash(r)
    r["id"] = f"id-{path.stem}"
    return r


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three originals, their resized / re-encoded / brightened / mirrored copies, two strangers."""
    d = tmp_path_factory.mktemp("photos")
    for s in range(3):
        img = natural_image(s, 256, 192)
        img.save(d / f"orig{s}.jpg", quality=90)
        for kind in ("resize", "reencode", "brightness", "flip"):
            v, opt = image_variant(img, kind, seed=s)
            v.save(d / f"orig{s}_{kind}.jpg", **opt)
    for s in (100, 101):
        natural_image(s, 256, 192).save(d / f"stranger{s}.jpg", quality=90)
    return d


def photo_rows(d: Path) -> list[dict]:
    names = sorted(p.name for p in d.glob("*.jpg"))
    return [image_row(d / n, i, pixels=float(i)) for i, n in enumerate(names)]


# ----------------------------------------------------------------------------- images


def test_image_variants_point_to_their_original_and_strangers_stay(photos):
    out = resolve(ImagePhashDedup(), photo_rows(photos))
    for s in range(3):
        orig = out[f"orig{s}.jpg"]
        assert orig["status"] == "kept" and orig["scores"]["image_dup_group_size"] == 4.0
        for kind in ("resize", "reencode", "brightness"):
            dup = out[f"orig{s}_{kind}.jpg"]
            assert (dup["status"], dup["status_reason"], dup["duplicate_of"]) == ("duplicate", "near_duplicate", f"id-orig{s}")
            assert dup["status_operator"] == "dedup_image_phash"
            assert dup["status_detail"].startswith(f"near-duplicate of orig{s}.jpg: phash distance ")
        assert out[f"orig{s}_flip.jpg"]["status"] == "kept"  # mirrored copies only with flip: true
    for s in (100, 101):
        assert out[f"stranger{s}.jpg"]["status"] == "kept"
        assert out[f"stranger{s}.jpg"]["scores"]["image_dup_group_size"] == 1.0


def test_flip_option_finds_mirrored_copies(photos):
    out = resolve(ImagePhashDedup({"flip": True}), photo_rows(photos))
    for s in range(3):
        flip = out[f"orig{s}_flip.jpg"]
        assert flip["duplicate_of"] == f"id-orig{s}" and "mirrored" in flip["status_detail"]
    assert {r["status"] for k, r in out.items() if k.startswith("stranger")} == {"kept"}


def test_highest_resolution_policy_keeps_the_biggest_copy(photos):
    rows = photo_rows(photos)
    out = resolve(ImagePhashDedup({"policy": "highest_resolution"}), rows)
    # pixels = position in name order, so the last name of each group wins
    for s in range(3):
        group = [f"orig{s}.jpg", f"orig{s}_brightness.jpg", f"orig{s}_reencode.jpg", f"orig{s}_resize.jpg"]
        winner = max(group, key=lambda n: out[n]["scores"]["pixels"])
        assert out[winner]["status"] == "kept"
        assert {out[n]["duplicate_of"] for n in group if n != winner} == {f"id-{Path(winner).stem}"}


def test_unreadable_image_is_quarantined_not_lost(photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    rows = [*photo_rows(photos), image_row(bad, 99), image_row(tmp_path / "never_written.jpg", 100)]
    out = resolve(ImagePhashDedup(), rows)
    assert (out["broken.jpg"]["status"], out["broken.jpg"]["status_reason"]) == ("quarantined", "corrupt_media")
    assert out["never_written.jpg"]["status_reason"] == "missing_file"
    assert sum(r["status"] == "duplicate" for r in out.values()) == 9


def test_band_keys_pigeonhole_guarantee():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, (2000, 2), dtype=np.uint64)
    for bands in (4, 8, 16):
        near = words.copy()
        for i in range(len(near)):  # flip bands-1 random bits of the 128
            for bit in rng.choice(128, bands - 1, replace=False):
                near[i, bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
        a, b = band_keys(words, bands, 128), band_keys(near, bands, 128)
        assert (a == b).any(axis=1).all()


# ----------------------------------------------------------------------------- LSH mechanics


def test_bucket_pairs_only_pairs_inside_buckets():
    keys = np.array([1, 1, 1, 2, 5, 5, 9])
    chunks = list(bucket_pairs(keys, max_pairs=2))
    assert len(chunks) > 1  # chunked
    left = np.concatenate([c[0] for c in chunks]).tolist()
    right = np.concatenate([c[1] for c in chunks]).tolist()
    pairs = sorted(zip(left, right, strict=True))
    assert pairs == [(0, 1), (0, 2), (1, 2), (4, 5)]


def random_hash_rows(n: int, planted: int, bits: int = 3) -> list[dict]:
    """Rows whose signatures are given directly: random hashes, and `planted` near copies."""
    rng = np.random.default_rng(1)
    ph = rng.integers(0, 2**63, n, dtype=np.uint64)
    dh = rng.integers(0, 2**63, n, dtype=np.uint64)
    ph[n - planted :] = ph[:planted] ^ np.uint64((1 << bits) - 1)  # `bits` bits away from row i
    dh[n - planted :] = dh[:planted]
    return ph, dh


def summary_of(op: ImagePhashDedup, ph: np.ndarray, dh: np.ndarray) -> pa.Table:
    from operators.dedup.near import Signatures

    n = len(ph)
    live = to_table([new_record(source="s", locator=f"r{i}", id=f"r{i:06d}", seq=i) for i in range(n)])
    keys = band_keys(np.stack([ph, dh], axis=1), op.params.bands, 128)
    sig = Signatures(
        keys=list(keys),
        columns={"phash": pa.array(ph.view(np.int64)), "dhash": pa.array(dh.view(np.int64))},
    )
    return op.summary_from_signatures(live, sig)


def test_lsh_verifies_only_bucket_pairs_never_all_pairs():
    n, planted = 3000, 50
    ph, dh = random_hash_rows(n, planted)
    op = ImagePhashDedup()
    partials = op.decide(summary_of(op, ph, dh))
    decisions = op.combine(partials)
    pairs = op.report(partials, decisions)["stats"]["candidate_pairs"]
    all_pairs = n * (n - 1) // 2
    assert planted <= pairs < all_pairs / 1000  # ~0.3 expected random collisions + planted
    dups = {d["id"]: d["duplicate_of"] for d in decisions.to_pylist() if d["duplicate_of"]}
    assert dups == {f"r{n - planted + i:06d}": f"r{i:06d}" for i in range(planted)}


def test_each_candidate_pair_is_verified_once_across_bands():
    ph, dh = np.full(10, 12345, np.uint64), np.full(10, 678, np.uint64)  # ten twins: they share all 8 bands
    op = ImagePhashDedup()
    partials = op.decide(summary_of(op, ph, dh))
    assert op.report(partials, op.combine(partials))["stats"]["candidate_pairs"] == 10 * 9 // 2


def edge(a: str, b: str, score: float, seq: dict[str, int], primary: dict[str, float] | None = None) -> dict:
    primary = primary or {}
    return {
        "entry": "edge", "a": a, "b": b, "score": score, "detail": None, "reason": None,
        "a_primary": primary.get(a, 0.0), "a_seq": seq[a], "a_locator": a, "a_file": "f1",
        "b_primary": primary.get(b, 0.0), "b_seq": seq[b], "b_locator": b, "b_file": "f2",
        "candidates": None,
    }  # fmt: skip


def test_combine_forms_transitive_groups_across_partitions():
    seq = {"a": 3, "b": 1, "c": 2, "x": 4, "y": 5}
    part1 = pa.Table.from_pylist([edge("a", "b", 2, seq)], schema=PARTIAL_SCHEMA)
    part2 = pa.Table.from_pylist([edge("b", "c", 3, seq), edge("x", "y", 1, seq)], schema=PARTIAL_SCHEMA)
    op = ImagePhashDedup()
    partials = pa.concat_tables([part1, part2])
    decisions = op.combine(partials)
    d = {r["id"]: r for r in decisions.to_pylist()}
    assert {k: v["duplicate_of"] for k, v in d.items()} == {"a": "b", "b": None, "c": "b", "x": None, "y": "x"}
    assert d["a"]["group_size"] == d["b"]["group_size"] == d["c"]["group_size"] == 3
    assert d["x"]["group_size"] == 2
    assert d["a"]["detail"] == "phash distance 2" and d["c"]["detail"] == "phash distance 3"
    stats = op.report(partials, decisions)["stats"]
    assert (stats["groups"], stats["duplicates"], stats["edges"]) == (2, 3, 3)
    # a chain a~b~c with c first seen: a reaches the survivor c only through b
    seq2 = {"a": 3, "b": 2, "c": 1}
    chain = pa.Table.from_pylist([edge("a", "b", 2, seq2), edge("b", "c", 3, seq2)], schema=PARTIAL_SCHEMA)
    d = {r["id"]: r for r in op.combine(chain).to_pylist()}
    assert d["a"]["duplicate_of"] == "c" and d["a"]["detail"] == "via b: phash distance 2"


@pytest.mark.parametrize(
    ("params", "primary", "survivor"),
    [
        ({}, {}, "b"),  # first_seen: lowest seq
        ({"policy": "highest_resolution"}, {"a": 10.0, "b": 5.0, "c": 7.0}, "a"),
        ({"policy": "longest"}, {"a": 1.0, "b": 2.0, "c": 9.0}, "c"),
        ({"policy": "best_score", "score_key": "aesthetic"}, {"a": 1.0, "b": 1.0, "c": 0.5}, "b"),  # tie -> first seen
    ],
)
def test_survivor_policies(params, primary, survivor):
    seq = {"a": 3, "b": 1, "c": 2}
    edges = pa.Table.from_pylist([edge("a", "b", 1, seq, primary), edge("b", "c", 1, seq, primary)], schema=PARTIAL_SCHEMA)
    d = {r["id"]: r["duplicate_of"] for r in ImagePhashDedup(params).combine(edges).to_pylist()}
    assert d == {k: (None if k == survivor else survivor) for k in "abc"}


def test_policy_numbers_come_from_scores(photos):
    """longest: duration_s, else text_chars (the same ranking as dedup_exact)."""
    rows = []
    for i, chars in enumerate([10.0, 500.0, 20.0]):
        base = random_document(7)
        text = base if i == 0 else edit_text(base, "typo", seed=i)
        rows.append(new_record(source="s", locator=f"t{i}", id=f"t{i}", layout="text", text=text, seq=i, scores={"text_chars": chars}))
    out = resolve(TextMinhashDedup({"policy": "longest"}), rows)
    assert {k: r["duplicate_of"] for k, r in out.items()} == {"t0": "t1", "t1": None, "t2": "t1"}


# ----------------------------------------------------------------------------- text


def text_rows() -> list[dict]:
    rows = []
    for s in range(20):
        doc = random_document(s)
        rows.append(new_record(source="s", locator=f"doc{s}", id=f"doc{s}", layout="text", text=doc, seq=10 * s))
        if s < 5:
            for j, kind in enumerate(("typo", "word_edit", "append", "case_space")):
                rows.append(
                    new_record(
                        source="s", locator=f"doc{s}_{kind}", id=f"doc{s}_{kind}", layout="text",
                        text=edit_text(doc, kind, seed=s), seq=10 * s + j + 1,
                    )
                )  # fmt: skip
    return rows


def test_text_edits_become_duplicates_of_their_document():
    op = TextMinhashDedup()
    out = resolve(op, text_rows())
    for s in range(20):
        assert out[f"doc{s}"]["status"] == "kept"
    for s in range(5):
        assert out[f"doc{s}"]["scores"]["text_dup_group_size"] == 5.0
        for kind in ("typo", "word_edit", "append", "case_space"):
            r = out[f"doc{s}_{kind}"]
            assert (r["status"], r["status_reason"], r["duplicate_of"]) == ("duplicate", "near_duplicate", f"doc{s}")
            assert re.fullmatch(rf"near-duplicate of doc{s}: jaccard (0\.[789]\d\d|1\.000)", r["status_detail"])
    assert op.thresholds()["lsh_threshold"] == round(lsh_threshold(20, 6), 4) == 0.607


def test_text_layouts_scope():
    """Captions of image rows are not deduplicated as text unless their layout is configured."""
    doc = random_document(3)
    rows = [
        new_record(source="s", locator="c1", id="c1", layout="image-text", caption=doc, seq=1),
        new_record(source="s", locator="c2", id="c2", layout="image-text", caption=doc + " again", seq=2),
    ]
    assert {r["status"] for r in resolve(TextMinhashDedup(), rows).values()} == {"kept"}
    out = resolve(TextMinhashDedup({"layouts": ["image-text"]}), rows)
    assert out["c2"]["duplicate_of"] == "c1"


def test_minhash_estimates_jaccard():
    h = MinHasher(num_perm=256, shingle="word", shingle_size=1)
    a = " ".join(f"w{i}" for i in range(100))
    b = " ".join(f"w{i}" for i in range(50, 150))  # |A&B| = 50, |A|B| = 150: J = 1/3
    sig, ok = h.signatures([a, b, ""])
    assert ok.tolist() == [True, True, False]
    assert abs((sig[0] == sig[1]).mean() - 1 / 3) < 0.08
    again, _ = MinHasher(num_perm=256, shingle="word", shingle_size=1).signatures([a])
    assert (again[0] == sig[0]).all()  # deterministic across instances (and processes)


# ----------------------------------------------------------------------------- engine


PIPE = {
    "name": "neardup",
    "ray": {"units_per_file": 4},
    "sources": [
        {"name": "pics", "reader": "image_folder", "path": "pics"},
        {"name": "docs", "reader": "jsonl", "path": "docs.jsonl"},
    ],
    "stages": [
        {"op": "probe"},
        {"op": "dedup_image_phash"},
        {"op": "dedup_text_minhash"},
    ],
}


def test_engine_runs_near_dup_stages_and_the_ledger_balances(ray_local, tmp_path):
    from curate.config import load_pipeline
    from curate.engine import Engine

    pics = tmp_path / "pics"
    pics.mkdir()
    for s in range(4):
        img = natural_image(s, 200, 150)
        img.save(pics / f"a{s}.jpg", quality=90)
        v, opt = image_variant(img, "resize", seed=s)
        v.save(pics / f"b{s}_resized.jpg", **opt)
    natural_image(50, 200, 150).save(pics / "c_stranger.jpg", quality=90)
    (pics / "d_broken.jpg").write_bytes(b"not an image")
    docs = [{"text": random_document(s)} for s in range(6)]
    docs += [{"text": edit_text(docs[0]["text"], "typo", seed=1)}, {"text": edit_text(docs[1]["text"], "append", seed=2)}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(PIPE))

    out = tmp_path / "out"
    s = Engine(load_pipeline(tmp_path / "pipe.yaml"), out, progress=False).run()
    assert s["balanced"] is True
    assert s["counts"] == {"input": 18, "derived": 0, "kept": 11, "dropped": 0, "duplicate": 6, "quarantined": 1, "split": 0}
    assert s["duplicate"] == {"dedup_image_phash": {"near_duplicate": 4}, "dedup_text_minhash": {"near_duplicate": 2}}

    rejected = pq.read_table(out / "rejected").to_pylist()
    kept = pq.read_table(out / "samples").to_pylist()
    by_id = {r["id"]: r for r in kept}
    pairs = sorted(
        (Path(r["locator"]).name, Path(by_id[r["duplicate_of"]]["locator"]).name)
        for r in rejected
        if r["status"] == "duplicate" and r["status_operator"] == "dedup_image_phash"
    )
    assert pairs == [(f"b{s}_resized.jpg", f"a{s}.jpg") for s in range(4)]
    text_dups = [r for r in rejected if r["status_operator"] == "dedup_text_minhash"]
    assert sorted(by_id[r["duplicate_of"]]["text"] for r in text_dups) == sorted([docs[0]["text"], docs[1]["text"]])
    report = json.loads((out / "artifacts" / "dedup_image_phash" / "dedup.json").read_text())
    assert report["thresholds"]["phash_threshold"] == 10 and report["stats"]["duplicates"] == 4
    text_report = json.loads((out / "artifacts" / "dedup_text_minhash" / "dedup.json").read_text())
    assert text_report["thresholds"]["lsh_threshold"] == 0.607
    lineage = next(r for r in kept if r["locator"].endswith("a0.jpg"))["lineage"]
    assert lineage == ["ingest:image_folder", "probe", "dedup_image_phash", "dedup_text_minhash"]

    from curate.dedup_report import write_dedup_report

    stats = write_dedup_report(out, tmp_path / "dedup.html")
    assert stats["duplicates"] == 6
    image_stats = stats["operators"]["dedup_image_phash"]
    assert (image_stats["groups"], image_stats["group_sizes"]) == (4, {"2": 4})
    assert image_stats["thresholds"]["bands"] == 6 and stats["operators"]["dedup_text_minhash"]["duplicates"] == 2
    page = (tmp_path / "dedup.html").read_text()
    assert page.count('<img src="data:image/jpeg;base64,') == 8  # 4 groups of survivor + copy
    assert "b0_resized.jpg" in page and "near-duplicate of" in page and "lsh_threshold" in page


def test_integer_keys_partition_deterministically_and_evenly():
    from schemas.hashing import partition_of

    keys = pa.array(np.arange(100_000, dtype=np.int64) << 48)  # band keys: only the high bits vary
    part = np.asarray(partition_of(keys, 8))
    assert part.min() == 0 and part.max() == 7
    assert np.bincount(part).min() > 100_000 / 8 * 0.9  # mixed, not key % 8
    assert (np.asarray(partition_of(keys, 8)) == part).all()
    assert list(partition_of(pa.array(["a", "b"]), 4)) == [zlib.crc32(b"a") % 4, zlib.crc32(b"b") % 4]  # strings as before


@pytest.fixture(scope="module")
def cropped(tmp_path_factory) -> Path:
    """Originals, copies cropped 2-5% per side and 4-10% towards one corner, and strangers."""
    d = tmp_path_factory.mktemp("cropped")
    for s in range(4):
        img = natural_image(s, 320, 240)
        img.save(d / f"orig{s}.jpg", quality=90)
        for kind in ("crop", "crop_corner"):
            v, opt = image_variant(img, kind, seed=s)
            v.save(d / f"orig{s}_{kind}.jpg", **opt)
    for s in range(100, 104):
        natural_image(s, 320, 240).save(d / f"stranger{s}.jpg", quality=90)
    return d


def test_crop_views_find_cropped_copies(cropped):
    rows = photo_rows(cropped)
    out = resolve(ImagePhashDedup(), rows)
    for s in range(4):
        for kind in ("crop", "crop_corner"):
            dup = out[f"orig{s}_{kind}.jpg"]
            assert (dup["status"], dup["duplicate_of"]) == ("duplicate", f"id-orig{s}"), dup["status_detail"]
    assert {r["status"] for k, r in out.items() if k.startswith("stranger")} == {"kept"}
    assert sum("cropped" in (r["status_detail"] or "") for r in out.values()) >= 4
    # the full view alone misses most of them (pHash moves 8-20 bits under a few percent of crop)
    plain = resolve(ImagePhashDedup({"crops": False}), rows)
    assert sum(r["status"] == "duplicate" for r in plain.values()) < 8
    assert ImagePhashDedup().thresholds()["crop_bands"] == 5
    with pytest.raises(ValidationError):
        ImagePhashDedup({"lsh_bits": "phash", "crop_bands": 65})


# ----------------------------------------------------------------------------- scale: hot buckets, references


def decisions_of(op, ph, dh) -> tuple[dict[str, dict], dict]:
    partials = op.decide(summary_of(op, ph, dh))
    decisions = op.combine(partials)
    return {d["id"]: d for d in decisions.to_pylist()}, op.report(partials, decisions)["stats"]


def test_a_hot_bucket_of_identical_rows_makes_star_edges_and_one_group():
    """5000 identical signatures share all their LSH keys: each key's bucket is hot (more than
    max_bucket members), so every row is checked against a representative, not all 12.5M pairs."""
    g, strangers = 5000, 200
    rng = np.random.default_rng(3)
    ph = np.concatenate([np.full(g, 0xF0F0_1234_5678_9ABC, np.uint64), rng.integers(0, 2**63, strangers, dtype=np.uint64)])
    dh = np.concatenate([np.full(g, 0x0FF0_4321_8765_CBA9, np.uint64), rng.integers(0, 2**63, strangers, dtype=np.uint64)])
    op = ImagePhashDedup({"crops": False})
    d, stats = decisions_of(op, ph, dh)
    assert stats["edges"] <= g - 1  # a star, once per pair although the rows share all 6 keys
    assert stats["candidate_pairs"] <= op.params.bands * g  # checks: a few per row, not g^2/2
    assert stats["hot_buckets"] == op.params.bands and stats["hot_unverified"] == 0
    assert {r["duplicate_of"] for r in d.values()} == {None, "r000000"}
    assert len(d) == g and {r["group_size"] for r in d.values()} == {g}
    assert not any(f"r{i:06d}" in d for i in range(g, g + strangers))


def test_near_identical_rows_in_hot_buckets_join_one_group():
    """3000 "blank" images a few bits apart: their buckets are hot, their key sets differ a little,
    and they still end in one group through the representatives. (The buckets of the bands a
    flipped bit touches hold ~80 rows each: max_bucket 50 makes them hot too; buckets up to
    max_bucket are checked pair by pair.) A row's buckets have different representatives, so it
    gets at most one star edge per key: linear, not g^2/2."""
    g = 3000
    rng = np.random.default_rng(4)
    noise = np.zeros(g, np.uint64)
    for _ in range(2):  # two random bits of the 128 flipped per row
        noise |= np.uint64(1) << rng.integers(0, 64, g).astype(np.uint64)
    ph = np.full(g, 0, np.uint64) ^ noise
    dh = np.full(g, 0, np.uint64) ^ np.roll(noise, 7)
    op = ImagePhashDedup({"crops": False, "max_bucket": 50})
    d, stats = decisions_of(op, ph, dh)
    assert stats["hot_buckets"] >= 6 and stats["hot_unverified"] == 0
    assert stats["edges"] <= op.params.bands * g and stats["candidate_pairs"] <= op.params.bands * g * 2
    assert len(d) == g and {r["group_size"] for r in d.values()} == {g}


def test_pairs_that_share_a_hot_key_are_still_found_by_their_other_keys():
    """A hot bucket of unrelated rows (a band value many rows share by chance) is checked only
    against representatives, but two real copies inside it share other keys and are found there."""
    n, planted = 3000, 40
    rng = np.random.default_rng(5)
    ph = rng.integers(0, 2**63, n, dtype=np.uint64)
    dh = rng.integers(0, 2**63, n, dtype=np.uint64)
    ph &= ~np.uint64((1 << 64) - (1 << 42))  # the first 22 bits equal: every row shares band 0
    ph[n - planted :] = ph[:planted] ^ np.uint64(0b101)  # near copies
    dh[n - planted :] = dh[:planted]
    op = ImagePhashDedup({"crops": False, "max_bucket": 1000})
    d, stats = decisions_of(op, ph, dh)
    assert stats["hot_buckets"] == 1 and stats["hot_members"] == n
    assert stats["hot_unverified"] > 0  # the unrelated members are not checked pair by pair
    assert {k: v["duplicate_of"] for k, v in d.items() if v["duplicate_of"]} == {
        f"r{n - planted + i:06d}": f"r{i:06d}" for i in range(planted)
    }
    assert stats["candidate_pairs"] < 10 * n


def reference(op, rows: list[dict]) -> dict[str, dict]:
    """What the old path decided, by brute force: every pair of rows sharing at least
    min_shared_keys of their (capped) keys is verified once, then the same components."""
    from operators.dedup.near import _entries, _partial

    table = to_table(rows)
    live = table.filter(pa.array(op.eligible(table)))
    summary = op.summary_from_signatures(live, op.signatures(live))
    t = summary.rows
    keys = [set(k) for k in t["_keys"].to_pylist()]
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if len(keys[i] & keys[j]) >= op.min_shared_keys]
    parts = [_entries("counts", 1, candidates=pa.array([len(pairs)], pa.int64()))]
    if pairs:
        left, right = (np.array(x) for x in zip(*pairs, strict=True))
        ok, score, detail = op.verifier(t)(left, right)
        keep = np.flatnonzero(ok)
        parts.append(
            _partial("edge", t.select(["id", "primary", "seq", "locator", "has_text"]), left[keep], right[keep],
                     score=np.asarray(score)[keep], detail=[detail[i] for i in keep] if detail else None)
        )  # fmt: skip
    return {d["id"]: d for d in op.combine(pa.concat_tables(parts)).to_pylist()}


@pytest.mark.parametrize("corpus", ["photos", "cropped", "text"])
def test_row_references_decide_as_the_old_path_did(corpus, request):
    """The engine's steps in one process (hot-key pass, references, star buckets) give the same
    decisions as verifying every candidate pair of the old self-contained summaries."""
    if corpus == "text":
        cases = [(TextMinhashDedup(), text_rows()), (TextMinhashDedup({"threshold": 0.5, "policy": "longest"}), text_rows())]
    else:
        rows = photo_rows(request.getfixturevalue(corpus))
        cases = [(ImagePhashDedup(), rows), (ImagePhashDedup({"flip": True, "crops": False}), rows)]
    for op, rows in cases:
        want = reference(op, [dict(r) for r in rows])
        for partitions in (1, 4):
            got = {d["id"]: d for d in run_in_process(op, to_table([dict(r) for r in rows]), partitions).decisions.to_pylist()}
            assert set(got) == set(want)
            for k, w in want.items():
                g = got[k]
                assert (g["duplicate_of"], g["group_size"], g["survivor_locator"]) == (w["duplicate_of"], w["group_size"], w["survivor_locator"])
                assert g["score"] == w["score"] or (np.isnan(g["score"]) and np.isnan(w["score"]))
                if w["detail"] and not w["detail"].startswith("via "):
                    assert g["detail"] == w["detail"]
