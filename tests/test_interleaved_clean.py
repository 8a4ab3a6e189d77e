"""interleaved_clean on documents read from real HTML and probed, and on hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from curate.demo import synth
from operators.ingest.html_docs import HtmlReader
from operators.ingest.manifests import ObelicsReader
from operators.probe import Probe
from operators.registry import OPERATORS
from operators.text.interleaved import InterleavedClean
from schemas.record import from_table, new_media, new_record, to_table


def run(rows: list[dict[str, Any]], **params: Any) -> list[dict[str, Any]]:
    return from_table(InterleavedClean(params)(to_table(rows)))


def text(t: str) -> dict[str, Any]:
    return {"kind": "text", "text": t, "media_index": None}


def image(i: int) -> dict[str, Any]:
    return {"kind": "media", "text": None, "media_index": i}


def test_registered() -> None:
    assert OPERATORS["interleaved_clean"] is InterleavedClean
    for key in ("num_images_kept", "images_dropped", "images_missing", "text_tokens", "image_text_ratio"):
        assert InterleavedClean.writes[key]


def test_html_page_end_to_end_with_probe(tmp_path: Path) -> None:
    """A real page: photos kept, a 16 px icon, a 400x2 spacer, a logo by name and a missing file dropped."""
    site = tmp_path / "site"
    synth.make_image(site / "photo1.jpg", 320, 240, seed=1)
    synth.make_image(site / "icons" / "share.png", 16, 16)
    synth.make_image(site / "rule.png", 400, 2)
    synth.make_image(site / "site-logo.png", 200, 120)
    synth.make_image(site / "photo2.jpg", 256, 256, seed=2)
    srcs = ["photo1.jpg", "icons/share.png", "rule.png", "site-logo.png", "gone.jpg", "photo2.jpg"]
    paragraphs = ["Intro paragraph about bread.", "Knead the dough.", "Let it rest.", "", "Bake it hot.", "Eat it warm."]
    synth.make_html_doc(site / "page.html", images=srcs, paragraphs=paragraphs, title="Bread",
                        alts=["a loaf", "share", "", "logo", "missing", "crumb"])  # fmt: skip
    reader = HtmlReader(source="docs", path=str(site))
    (unit,) = list(reader.plan())
    (row,) = list(reader.read(unit["payload"]))
    row["id"] = "doc"
    probed = from_table(Probe({})(to_table([row])))
    assert probed[0]["status"] == "kept" and probed[0]["scores"]["media_errors"] == 1.0

    out = run(probed)[0]
    kept_uris = [Path(m["uri"]).name for m in out["media"]]
    assert kept_uris == ["photo1.jpg", "photo2.jpg"]
    seq = [(s["kind"], s["text"] if s["kind"] == "text" else s["media_index"]) for s in out["interleaved"]]
    assert seq == [
        ("text", "Bread\n\nIntro paragraph about bread."),
        ("media", 0),
        ("text", "Knead the dough.\n\nLet it rest.\n\nBake it hot.\n\nEat it warm."),  # 4 images and an empty <p> gone
        ("media", 1),
    ]
    assert out["text"] == "\n\n".join(s["text"] for s in out["interleaved"] if s["kind"] == "text")
    meta = json.loads(out["meta"])
    assert meta["alt_texts"] == ["a loaf", "crumb"]
    reasons = {Path(d["uri"]).name: d["reason"] for d in meta["dropped_images"]}
    assert reasons == {"share.png": "icon", "rule.png": "spacer", "site-logo.png": "name", "gone.jpg": "missing"}
    assert [d["alt"] for d in meta["dropped_images"]] == ["share", "", "logo", "missing"]
    s = out["scores"]
    assert (s["num_images_kept"], s["images_dropped"]) == (2.0, 4.0)
    tokens = sum(-(-len(t["text"]) // 4) for t in out["interleaved"] if t["kind"] == "text")
    assert s["text_tokens"] == tokens
    assert s["image_text_ratio"] == pytest.approx(2 * 1000 / tokens)
    assert out["layout"] == "interleaved"


def test_media_index_remap_with_shared_and_out_of_order_references() -> None:
    media = [new_media("image", f"/img/{name}", width=w, height=h) for name, w, h in
             [("a.jpg", 300, 200), ("pixel.gif", 1, 1), ("b.jpg", 300, 300), ("sprite-sheet.png", 500, 500), ("c.jpg", 640, 480)]]  # fmt: skip
    segs = [image(4), text("one"), image(1), text("two"), image(0), image(3), text("  "), image(2), image(4)]
    row = new_record(source="t", locator="d", layout="interleaved", media=media, interleaved=segs, modalities=["text", "image"])
    out = run([row])[0]
    assert [Path(m["uri"]).name for m in out["media"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [(s["kind"], s["media_index"] if s["kind"] == "media" else s["text"]) for s in out["interleaved"]] == [
        ("media", 2), ("text", "one\n\ntwo"), ("media", 0), ("media", 1), ("media", 2)]  # fmt: skip
    for s in out["interleaved"]:
        if s["kind"] == "media":
            assert out["media"][s["media_index"]]["uri"] in {m["uri"] for m in media}
    assert out["scores"]["images_dropped"] == 2.0


def test_names_match_whole_words_only() -> None:
    names = ["logotype-study.jpg", "pixelart.png", "badges/gold.png", "https://cdn.x.com/assets/Icon_home.svg?v=2",
             "spacer.gif", "photo.jpg"]  # fmt: skip
    media = [new_media("image", n) for n in names]
    row = new_record(source="t", locator="d", layout="interleaved", media=media,
                     interleaved=[x for i in range(len(media)) for x in (text(f"p{i}"), image(i))])  # fmt: skip
    out = run([row])[0]
    assert [m["uri"] for m in out["media"]] == ["logotype-study.jpg", "pixelart.png", "photo.jpg"]


def test_remote_images_and_params() -> None:
    media = [new_media("image", "https://x.org/a.jpg", error="remote_media: not downloaded", error_reason="remote_media"), new_media("image", "b.jpg", width=40, height=40)]
    segs = [text("hello world"), image(0), image(1)]
    row = new_record(source="t", locator="d", layout="interleaved", media=media, interleaved=segs, modalities=["text", "image"])
    dropped_all = run([dict(row)])[0]
    assert dropped_all["layout"] == "text" and dropped_all["modalities"] == ["text"] and dropped_all["media"] == []
    assert dropped_all["scores"]["image_text_ratio"] == 0.0
    assert [d["reason"] for d in json.loads(dropped_all["meta"])["dropped_images"]] == ["remote", "icon"]
    kept = run([dict(row)], keep_remote=True, min_side=32, token_estimate="words")[0]
    assert len(kept["media"]) == 2 and kept["layout"] == "interleaved"
    assert kept["scores"]["text_tokens"] == 2.0 and kept["scores"]["image_text_ratio"] == 1000.0


def test_other_layouts_pass_untouched() -> None:
    row = new_record(source="t", locator="i", layout="image-text", media=[new_media("image", "icon.png")], caption="x")
    out = run([row])[0]
    assert out["media"][0]["uri"] == "icon.png" and out["scores"] == {}


def test_documents_whose_images_are_all_missing_are_dropped(tmp_path: Path) -> None:
    """OBELICS documents read and probed: one with every image missing, one with a single image left."""
    synth.make_image(tmp_path / "img" / "here.jpg", 96, 96)
    docs = [
        {"texts": ["Intro", None, "Body", None], "images": [None, "img/gone1.jpg", None, "img/gone2.jpg"]},
        {"texts": ["Intro", None, None], "images": [None, "img/gone1.jpg", "img/here.jpg"]},
    ]
    f = tmp_path / "docs.jsonl"
    f.write_text("".join(json.dumps(d) + "\n" for d in docs))
    reader = ObelicsReader(source="docs", path=str(f))
    rows = [r for u in reader.plan() for r in reader.read(u["payload"])]
    for i, r in enumerate(rows):
        r["id"] = f"doc{i}"
    probed = from_table(Probe({})(to_table(rows)))
    assert [r["status"] for r in probed] == ["kept", "kept"]

    gone, partial = run(probed)
    assert (gone["status"], gone["status_operator"], gone["status_reason"]) == (
        "dropped",
        "interleaved_clean",
        "all_media_missing",
    )
    assert "all 2 images of the document could not be read (missing_file: 2" in gone["status_detail"]
    assert str(tmp_path / "img/gone1.jpg") in gone["status_detail"]
    assert gone["scores"]["images_missing"] == 2.0
    assert [d["reason"] for d in json.loads(gone["meta"])["dropped_images"]] == ["missing", "missing"]
    assert partial["status"] == "kept" and partial["layout"] == "interleaved"
    assert [Path(m["uri"]).name for m in partial["media"]] == ["here.jpg"]
    assert partial["scores"]["images_missing"] == 1.0

    kept = run(probed, all_missing="keep")[0]
    assert (kept["status"], kept["layout"], kept["modalities"], kept["text"]) == (
        "kept",
        "text",
        ["text"],
        "Intro\n\nBody",
    )


def test_all_missing_counts_unfetched_web_images_but_not_decorative_ones() -> None:
    remote = new_media(
        "image", "https://x.org/a.jpg", error="remote_media: not downloaded", error_reason="remote_media"
    )
    row = new_record(source="t", locator="d", layout="interleaved", media=[remote], interleaved=[text("hi"), image(0)],
                     modalities=["text", "image"])  # fmt: skip
    out = run([dict(row)])[0]
    assert (out["status"], out["status_reason"]) == ("dropped", "all_media_missing")
    assert "remote_media: 1" in out["status_detail"]
    assert run([dict(row)], keep_remote=True)[0]["status"] == "kept"
    icon = new_media("image", "/site/icon.png", width=16, height=16)
    decorative = new_record(source="t", locator="e", layout="interleaved", media=[icon],
                            interleaved=[text("hi"), image(0)], modalities=["text", "image"])  # fmt: skip
    out = run([decorative])[0]
    assert (out["status"], out["layout"]) == ("kept", "text")
    assert out["scores"]["images_missing"] == 0.0
