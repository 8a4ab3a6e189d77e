"""Exact dedup's grouping, survivor policies and text absorption, in process (one test runs
through the engine on Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curate.global_phase import run_in_process
from operators.dedup.components import group_edges
from operators.dedup.exact import ExactDedup
from operators.dedup.near import PARTIAL_SCHEMA
from schemas.record import content_hash, from_table, new_media, new_record, to_table


def img(locator, sha, seq, *, source="s", layout="image", scores=None, **fields):
    r = new_record(
        source=source, locator=locator, layout=layout, media=[new_media("image", locator, sha256=sha)], seq=seq,
        scores=scores or {}, **fields,
    )  # fmt: skip
    r["content_hash"] = content_hash(r)
    r["id"] = f"id-{locator}"
    return r


def captioned(locator, sha, seq, caption, language, source="s", **fields):
    return img(locator, sha, seq, source=source, layout="image-text", caption=caption, language=language, **fields)


def run(op, rows):
    """The engine's steps (summarize, hash partitions, decide, apply) in one process."""
    return {r["locator"]: r for r in from_table(run_in_process(op, to_table(rows)).table)}


def meta(row):
    return json.loads(row["meta"]) if row["meta"] else {}


EN, ZH = "A red bicycle leaning on a wall.", "一辆靠在墙上的红色自行车。"


def three_copies():
    """One image three times: (a) no caption, seen first; (b) an English caption; (c) a Chinese one."""
    return [
        img("a", "h", 1, source="crawl"),
        captioned("b", "h", 2, EN, "en", source="coco"),
        captioned("c", "h", 3, ZH, "zh", source="coco-cn"),
    ]


def resolve(op, rows):
    """summarize -> decide -> apply in one process, as the engine does across workers."""
    table = to_table(rows)
    return from_table(op.apply(table, op.decide(op.summarize(table))))


def test_first_seen_survives_and_duplicates_point_to_it():
    out = resolve(ExactDedup(), [img("b", "h1", 2), img("a", "h1", 1), img("c", "h2", 3)])
    by = {r["locator"]: r for r in out}
    assert by["a"]["status"] == "kept" and by["a"]["scores"]["dup_count"] == 2
    assert (by["b"]["status"], by["b"]["status_reason"], by["b"]["duplicate_of"]) == ("duplicate", "exact_duplicate", "id-a")
    assert by["c"]["status"] == "kept" and by["c"]["scores"]["dup_count"] == 1


def test_highest_resolution_policy():
    out = resolve(
        ExactDedup({"policy": "highest_resolution"}),
        [img("a", "h", 1, scores={"pixels": 10}), img("b", "h", 2, scores={"pixels": 99})],
    )
    assert {r["locator"]: r["status"] for r in out} == {"a": "duplicate", "b": "kept"}
    best = ExactDedup({"policy": "best_score", "score_key": "aesthetic"})
    out = resolve(best, [img("a", "h", 1, scores={"aesthetic": 9.0}), img("b", "h", 2, scores={"aesthetic": 5.0}), img("c", "h", 3)])
    assert {r["locator"]: r["status"] for r in out} == {"a": "kept", "b": "duplicate", "c": "duplicate"}
    assert {r["duplicate_of"] for r in out if r["status"] == "duplicate"} == {"id-a"}


def test_decisions_only_for_duplicate_groups():
    op = ExactDedup()
    summary = op.summarize(to_table([img("a", "h1", 1), img("b", "h2", 2), img("c", "h1", 3), img("d", "h1", 0)]))
    decisions = op.decide(summary).to_pylist()
    assert sorted((d["id"], d["duplicate_of"], d["group_size"]) for d in decisions) == [
        ("id-a", "id-d", 3),
        ("id-c", "id-d", 3),
        ("id-d", None, 3),
    ]


def test_non_kept_rows_never_group():
    bad = img("q", "h", 0)
    bad["status"] = "quarantined"
    out = resolve(ExactDedup(), [bad, img("a", "h", 1)])
    assert {r["locator"]: r["status"] for r in out} == {"q": "quarantined", "a": "kept"}


def test_text_rows_dedup_on_normalised_text():
    a = new_record(source="s", locator="t1", layout="text", text="Hello   World")
    b = new_record(source="s", locator="t2", layout="text", text="hello world")
    c = new_record(source="s", locator="t3", layout="text", text="hello there")
    assert content_hash(a) == content_hash(b) != content_hash(c)
    media_a = img("x", "same", 1)
    media_b = img("y", "same", 2)
    media_b["caption"] = "another caption"
    assert content_hash(media_a) == content_hash(media_b)  # same bytes: duplicates whatever the caption


def test_documents_and_conversations_are_not_duplicates_of_their_images():
    image = img("x", "same", 1)
    doc = new_record(
        source="s", locator="page.html", layout="interleaved", media=[new_media("image", "x", sha256="same")],
        interleaved=[{"kind": "text", "text": "A diagram:"}, {"kind": "media", "media_index": 0}],
    )  # fmt: skip
    copy = new_record(
        source="s", locator="mirror/page.html", layout="interleaved", media=[new_media("image", "x2", sha256="same")],
        interleaved=[{"kind": "text", "text": "a   DIAGRAM:"}, {"kind": "media", "media_index": 0}],
    )  # fmt: skip
    other_page = new_record(
        source="s", locator="other.html", layout="interleaved", media=[new_media("image", "x", sha256="same")],
        interleaved=[{"kind": "text", "text": "Another page quoting the diagram."}, {"kind": "media", "media_index": 0}],
    )  # fmt: skip
    assert content_hash(doc) == content_hash(copy)  # the same page twice
    assert len({content_hash(image), content_hash(doc), content_hash(other_page)}) == 3

    def chat(question: str) -> dict:
        return new_record(
            source="llava", locator=question, layout="image-text", media=[new_media("image", "coco.jpg", sha256="same")],
            conversation=[{"role": "user", "text": question}, {"role": "assistant", "text": "A cat."}],
        )  # fmt: skip

    # LLaVA asks several questions about one image: each conversation is its own sample
    assert content_hash(chat("What is this?")) != content_hash(chat("Describe the image.")) != content_hash(image)
    assert content_hash(chat("What is this?")) == content_hash(chat("what is   this?"))


# ----------------------------------------------------------------------------- texts of duplicates


def test_captioned_copy_survives_and_absorbs_the_other_captions():
    out = run(ExactDedup(), three_copies())
    survivor = out["b"]  # first seen among the rows with text (the uncaptioned "a" was seen first)
    assert (survivor["status"], survivor["caption"], survivor["language"]) == ("kept", EN, "en")
    assert survivor["scores"]["dup_count"] == 3
    assert meta(survivor) == {"alt_captions": [{"field": "caption", "text": ZH, "source": "coco-cn", "language": "zh", "id": "id-c"}]}
    assert {(out[k]["status"], out[k]["duplicate_of"]) for k in "ac"} == {("duplicate", "id-b")}
    assert out["c"]["caption"] == ZH and out["c"]["meta"] is None  # duplicates keep their own texts


def test_uncaptioned_survivor_takes_a_caption_when_the_policy_picks_it():
    """prefer_text off: the first seen row survives; it has no text, so it takes its best
    duplicate's caption and language (a router asking for a caption keeps it) and the rest in meta."""
    out = run(ExactDedup({"prefer_text": False}), three_copies())
    survivor = out["a"]
    assert (survivor["status"], survivor["caption"], survivor["language"]) == ("kept", EN, "en")
    assert meta(survivor) == {
        "absorbed_fields": {"caption": {"id": "id-b", "source": "coco", "language": "en"}},
        "alt_captions": [{"field": "caption", "text": ZH, "source": "coco-cn", "language": "zh", "id": "id-c"}],
    }
    # a policy number still comes first: the bigger (uncaptioned) copy wins and takes the caption
    rows = three_copies()
    rows[0]["scores"] = {"aesthetic": 7.0}
    out = run(ExactDedup({"policy": "best_score", "score_key": "aesthetic"}), rows)
    assert out["a"]["status"] == "kept" and out["a"]["caption"] == EN


def test_absorbing_off_is_the_old_behaviour():
    out = run(ExactDedup({"absorb_texts": False}), three_copies())
    assert out["b"]["status"] == "kept" and out["b"]["meta"] is None and out["b"]["caption"] == EN
    op = ExactDedup({"absorb_texts": False, "prefer_text": False})
    assert "texts" not in op.summarize(to_table(three_copies())).column_names  # nothing extra moves
    out = run(op, three_copies())
    assert (out["a"]["status"], out["a"]["caption"], out["a"]["meta"]) == ("kept", None, None)
    assert {out[k]["duplicate_of"] for k in "bc"} == {"id-a"}


def test_identical_texts_are_not_repeated_and_empty_fields_fill_in_the_same_language():
    rows = [
        captioned("a", "h", 1, EN, "en"),
        captioned("b", "h", 2, "a red bicycle  leaning on a WALL.", "en"),  # the same after folding
        captioned("c", "h", 3, ZH, "zh"),
        captioned("d", "h", 4, ZH, "zh", source="other"),  # the same translation again
        img("e", "h", 5, layout="image-text", alt_text="bike.jpg", language="en"),
        img("f", "h", 6, layout="image-text", alt_text=ZH),  # equal to a caption already taken
    ]
    out = run(ExactDedup(), rows)
    survivor = out["a"]
    assert (survivor["caption"], survivor["alt_text"]) == (EN, "bike.jpg")  # the empty alt_text filled (same language)
    m = meta(survivor)
    assert m["absorbed_fields"] == {"alt_text": {"id": "id-e", "source": "s", "language": "en"}}
    assert [(a["text"], a["id"]) for a in m["alt_captions"]] == [(ZH, "id-c")]
    decision = next(d for d in run_in_process(ExactDedup(), to_table(rows)).decisions.to_pylist() if d["id"] == "id-a")
    assert [t["from_id"] for t in json.loads(decision["texts"])] == ["id-c", "id-e"]  # decided once, in survivor order


def test_caps_bound_the_summary_and_the_absorbed_texts():
    long = "word " * 200  # 1000 bytes
    rows = [captioned("a", "h", 1, EN, "en"), captioned("b", "h", 2, long, "en", transcript="x" * 50)]
    rows += [captioned(f"t{i}", "h", 3 + i, f"caption number {i}", "de") for i in range(5)]
    op = ExactDedup({"max_text_bytes": 64, "max_absorbed_texts": 3})
    summary = op.summarize(to_table(rows))
    assert max(len(t["text"].encode()) for ts in summary["texts"].to_pylist() for t in ts) <= 64
    out = run(op, rows)
    m = meta(out["a"])
    cut = m["alt_captions"][0]
    assert (cut["id"], cut["truncated"], cut["text"]) == ("id-b", True, long[:64])
    assert out["a"]["transcript"] == "x" * 50  # a whole text of an empty field, same language
    assert [a["text"] for a in m["alt_captions"][1:]] == ["caption number 0"]
    assert m["alt_captions_omitted"] == 4  # 7 distinct texts, 3 absorbed


def test_a_cut_text_never_fills_a_field():
    rows = [img("a", "h", 1), captioned("b", "h", 2, "y" * 100, "en")]
    out = run(ExactDedup({"prefer_text": False, "max_text_bytes": 32}), rows)
    assert out["a"]["caption"] is None
    assert meta(out["a"])["alt_captions"] == [
        {"field": "caption", "text": "y" * 32, "source": "s", "language": "en", "id": "id-b", "truncated": True}
    ]


def test_rows_keyed_on_their_text_carry_no_texts():
    a = new_record(source="s", locator="t1", layout="text", text="Hello   World", seq=1)
    b = new_record(source="s", locator="t2", layout="text", text="hello world", seq=2)
    for r in (a, b):
        r["content_hash"], r["id"] = content_hash(r), f"id-{r['locator']}"
    op = ExactDedup()
    assert op.summarize(to_table([a, b]))["texts"].null_count == 2
    out = run(op, [a, b])
    assert (out["t1"]["status"], out["t1"]["text"], out["t1"]["meta"]) == ("kept", "Hello   World", None)
    assert out["t2"]["duplicate_of"] == "id-t1"


def test_meta_of_the_survivor_is_extended_not_replaced():
    rows = three_copies()
    rows[1]["meta"] = json.dumps({"url": "http://x/b.jpg", "alt_captions": [{"text": "from the source"}]})
    m = meta(run(ExactDedup(), rows)["b"])
    assert m["url"] == "http://x/b.jpg"
    assert [a["text"] for a in m["alt_captions"]] == ["from the source", ZH]


def test_near_dup_survivor_prefers_text_too():
    """The near-duplicate operators share the survivor policy (they do not absorb texts)."""

    def edge(a, b, a_text, b_text):
        return {
            "entry": "edge", "a": a, "b": b, "score": 1.0, "a_primary": 0.0, "a_seq": 1, "a_locator": a, "a_file": "f",
            "b_primary": 0.0, "b_seq": 2, "b_locator": b, "b_file": "f", "a_has_text": a_text, "b_has_text": b_text,
        }  # fmt: skip

    def survivor(**kw):
        table = pa.Table.from_pylist([edge("a", "b", **kw)], schema=PARTIAL_SCHEMA)
        d = group_edges(table, higher_is_closer=False, score_name="distance").to_pylist()
        return next(x["id"] for x in d if x["duplicate_of"] is None)

    assert survivor(a_text=False, b_text=True) == "b"
    assert survivor(a_text=None, b_text=None) == "a"  # no has_text (prefer_text off): ingest order
    assert survivor(a_text=True, b_text=True) == "a"


def test_engine_run_keeps_every_caption(ray_local, tmp_path):
    from curate.config import load_pipeline
    from curate.demo.synth import make_image
    from curate.engine import Engine

    (tmp_path / "pics").mkdir()
    make_image(tmp_path / "pics" / "bike.jpg", 96, 64, seed=3)
    (tmp_path / "en.jsonl").write_text(json.dumps({"image": "pics/bike.jpg", "caption": EN, "language": "en"}) + "\n")
    (tmp_path / "zh.jsonl").write_text(json.dumps({"image": "pics/bike.jpg", "caption": ZH, "language": "zh"}) + "\n")
    cfg = {
        "name": "absorb",
        "sources": [
            {"name": "plain", "reader": "image_folder", "path": "pics"},  # the same image, no caption, first
            {"name": "coco", "reader": "jsonl", "path": "en.jsonl"},
            {"name": "coco-cn", "reader": "jsonl", "path": "zh.jsonl"},
        ],
        "stages": [{"op": "probe"}, {"op": "dedup_exact"}],
    }
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    s = Engine(load_pipeline(tmp_path / "pipe.yaml"), tmp_path / "out", progress=False).run()
    assert s["balanced"] is True and s["duplicate"] == {"dedup_exact": {"exact_duplicate": 2}}
    kept = pq.read_table(tmp_path / "out" / "samples").to_pylist()
    assert len(kept) == 1
    survivor = kept[0]
    alt = json.loads(survivor["meta"])["alt_captions"]
    assert survivor["source"] != "plain" and survivor["caption"] in (EN, ZH)
    by_text = {survivor["caption"]: (survivor["source"], survivor["language"])}
    by_text.update({a["text"]: (a["source"], a["language"]) for a in alt})
    assert by_text == {EN: ("coco", "en"), ZH: ("coco-cn", "zh")}
    rejected = pq.read_table(tmp_path / "out" / "rejected").to_pylist()
    assert {r["duplicate_of"] for r in rejected} == {survivor["id"]}
    assert Path(survivor["media"][0]["uri"]).name == "bike.jpg"
