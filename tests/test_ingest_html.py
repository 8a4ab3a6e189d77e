"""HTML reader: document-order segments, image resolution, skipped elements, decoding errors."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from operators.ingest.html_docs import HtmlReader
from schemas.record import to_table

PAGE = """<!DOCTYPE html>
<html lang="en">
<head><title>  My   page </title><style>p { color: red }</style><script>var x = "<p>no</p>";</script></head>
<body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<h1>Big   <b>title</b></h1>
loose text
<p>First <a href="#">para</a>.<img src="img/a%20b.png?v=2" alt=" An A "></p>
<div>Div text<script>skip()</script> after script</div>
<figure><img src="/static/logo.png"><figcaption>The logo</figcaption></figure>
<img src="https://cdn.example.com/x.jpg" alt="">
<img src="//cdn.example.com/y.jpg">
<img src="data:image/png;base64,iVBORw0KGgo=">
<img alt="no source">
<ul><li>one</li><li>two<br>lines</li></ul>
<pre>  keep
    spacing</pre>
<table><tr><td>cell 1</td><td>cell 2</td></tr></table>
<noscript>enable js</noscript>
<!-- a comment --> tail after comment
</body></html>
"""


def _read(reader) -> list[dict]:
    return [rec for u in reader.plan() for rec in reader.read(u["payload"])]


def test_document_order_and_fields(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "blog").mkdir(parents=True)
    page = site / "blog" / "post.html"
    page.write_text(PAGE, encoding="utf-8")
    (rec,) = _read(HtmlReader(source="s", path=str(site)))
    assert (rec["status"], rec["locator"]) == ("kept", str(page))
    assert rec["layout"] == "interleaved" and rec["modalities"] == ["image", "text"]
    assert rec["language"] == "en"
    seg = [(s["kind"], s["text"] if s["kind"] == "text" else s["media_index"]) for s in rec["interleaved"]]
    assert seg == [
        ("text", "Big title"),
        ("text", "loose text"),
        ("text", "First para."),
        ("media", 0),
        ("text", "Div text after script"),
        ("media", 1),
        ("text", "The logo"),
        ("media", 2),
        ("media", 3),
        ("text", "one"),
        ("text", "two lines"),
        ("text", "  keep\n    spacing"),
        ("text", "cell 1"),
        ("text", "cell 2"),
        ("text", "tail after comment"),
    ]
    assert [(m["modality"], m["role"], m["uri"]) for m in rec["media"]] == [
        ("image", "inline", str(site / "blog" / "img" / "a b.png")),
        ("image", "inline", str(site / "static" / "logo.png")),  # root-relative: against the source folder
        ("image", "inline", "https://cdn.example.com/x.jpg"),
        ("image", "inline", "https://cdn.example.com/y.jpg"),
    ]
    assert rec["text"] == "\n\n".join(s["text"] for s in rec["interleaved"] if s["kind"] == "text")
    assert json.loads(rec["meta"]) == {
        "title": "My page",
        "alt_texts": ["An A", None, "", None],
        "data_uri_images": 1,
        "img_without_src": 1,
    }
    to_table([rec])


def test_text_only_page_and_site_root(tmp_path: Path) -> None:
    page = tmp_path / "a.htm"
    page.write_text("<html><body><p>Hello</p><img src='/i.png'></body></html>", encoding="utf-8")
    plain = tmp_path / "b.html"
    plain.write_text("<p>Just <i>text</i></p>", encoding="utf-8")
    a, b = _read(HtmlReader(source="s", path=str(tmp_path / "*.htm*"), params={"site_root": str(tmp_path / "www")}))
    assert a["media"][0]["uri"] == str(tmp_path / "www" / "i.png")
    assert (b["layout"], b["modalities"], b["text"], b["media"], b["meta"]) == ("text", ["text"], "Just text", [], None)
    assert b["interleaved"] == [{"kind": "text", "text": "Just text", "media_index": None}]


def test_folder_skips_assets_and_chunks_units(tmp_path: Path) -> None:
    for name in ("b.html", "a.HTML", "sub/c.htm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"<p>{name}</p>", encoding="utf-8")
    Image.new("RGB", (2, 2)).save(tmp_path / "pic.png")
    (tmp_path / "style.css").write_text("p {}")
    (tmp_path / ".hidden.html").write_text("<p>hidden</p>")
    reader = HtmlReader(source="s", path=str(tmp_path), units_per_file=2)
    units = list(reader.plan())
    assert [u["payload"]["files"] for u in units] == [
        [str(tmp_path / "a.HTML"), str(tmp_path / "b.html")],
        [str(tmp_path / "sub" / "c.htm")],
    ]
    assert units == list(HtmlReader(source="s", path=str(tmp_path), units_per_file=2).plan())
    assert [r["text"] for r in _read(reader)] == ["a.HTML", "b.html", "sub/c.htm"]


def test_declared_charset_and_encoding_param(tmp_path: Path) -> None:
    latin = tmp_path / "latin.html"
    latin.write_bytes('<meta charset="iso-8859-1"><p>café</p>'.encode("latin-1"))
    (rec,) = _read(HtmlReader(source="s", path=str(latin)))
    assert rec["text"] == "café"
    undeclared = tmp_path / "undeclared.html"
    undeclared.write_bytes("<p>naïve</p>".encode("cp1252"))
    (rec,) = _read(HtmlReader(source="s", path=str(undeclared), params={"encoding": "cp1252"}))
    assert rec["text"] == "naïve"


def test_undecodable_and_empty_files_are_unreadable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_bytes(b"<p>caf\xe9 \xff\xfe</p>")  # not UTF-8, no charset declared
    empty = tmp_path / "empty.html"
    empty.write_bytes(b"   ")
    good = tmp_path / "good.html"
    good.write_text("<p>fine</p>", encoding="utf-8")
    recs = _read(HtmlReader(source="s", path=str(tmp_path)))
    assert [(r["locator"], r["status"], r["status_reason"]) for r in recs] == [
        (str(bad), "quarantined", "unreadable"),
        (str(empty), "quarantined", "unreadable"),
        (str(good), "kept", None),
    ]
    assert recs[0]["status_detail"].startswith("UnicodeDecodeError")
    assert recs[0]["status_operator"] == "ingest:html"


def test_lazy_loading_and_srcset_images_resolve_to_the_real_file(tmp_path: Path) -> None:
    page = tmp_path / "lazy.html"
    page.write_text(
        "<html><body><p>Intro</p>"
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="img/real.png" alt="lazy">'
        '<img srcset="img/small.png 480w, img/big.png 1080w" alt="set">'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-original="img/orig.jpg">'
        '<img src="data:image/png;base64,iVBORw0KGgo=">'
        "</body></html>",
        encoding="utf-8",
    )
    (rec,) = _read(HtmlReader(source="s", path=str(page)))
    assert [m["uri"] for m in rec["media"]] == [str(tmp_path / "img" / n) for n in ("real.png", "small.png", "orig.jpg")]
    assert json.loads(rec["meta"])["data_uri_images"] == 1


def test_main_content_leaves_site_chrome_out(tmp_path: Path) -> None:
    page = tmp_path / "doc.html"
    page.write_text(
        "<html><body><div class='menu-bar'>Rust 1.95 <img src='logo.png'></div>"
        "<div id='sidebar'><ol><li>Chapter 1</li><li>Chapter 2</li></ol></div>"
        "<main><h1>Ownership</h1><p>Each value has an owner.</p><img src='img/trpl04-01.svg' alt='diagram'></main>"
        "<footer>Copyright</footer></body></html>",
        encoding="utf-8",
    )
    (rec,) = _read(HtmlReader(source="s", path=str(page)))
    assert rec["text"] == "Ownership\n\nEach value has an owner."
    assert [m["uri"] for m in rec["media"]] == [str(tmp_path / "img" / "trpl04-01.svg")]
    (whole,) = _read(HtmlReader(source="s", path=str(page), params={"content": "body"}))
    assert whole["text"].startswith("Rust 1.95") and "Copyright" in whole["text"] and len(whole["media"]) == 2
    page.write_text("<html><body><div role='main'><p>Sphinx body</p></div><p>footer</p></body></html>", encoding="utf-8")
    assert _read(HtmlReader(source="s", path=str(page)))[0]["text"] == "Sphinx body"
