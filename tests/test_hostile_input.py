"""Hostile input (issue 14): reads stay inside the corpus, URL schemes come from an allowlist, and
one bad input is one bad row with its own reason, never a crash, a hang or a lost neighbour.

One corpus holds every trap at once and runs through the engine on Ray; each trap is then looked
up by its locator. Nothing outside the corpus may reach a kept row (captions, media, sizes)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curate.config import load_pipeline
from curate.demo.synth import make_image
from curate.engine import Engine
from operators.confine import Confinement, schemes_of
from operators.media_io import open_image
from schemas.config_file import ConfigError
from schemas.text import repair_text

SECRET = "root:x:0:0:root:/root:/bin/bash"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    make_image(outside / "x.png", 64, 64, seed=9)
    imgs = base / "corpus" / "imgs"
    imgs.mkdir(parents=True)
    for name in ("good", "cap", "deep", "good2"):
        make_image(imgs / f"{name}.jpg", 80, 60, seed=len(name))
    (imgs / "good.txt").write_text("a good caption")
    os.symlink(outside / "secret.txt", imgs / "cap.txt")  # a caption that is /etc/passwd
    os.symlink(outside / "x.png", imgs / "link.jpg")  # media outside the corpus
    os.symlink("/dev/zero", imgs / "zero.jpg")  # endless, and outside
    os.mkfifo(imgs / "pipe.jpg")  # reading it would hang forever
    (imgs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json
    make_image(imgs / os.fsdecode(b"bad\xff.jpg"), 50, 50, seed=3)  # a name that is not UTF-8
    (imgs / "huge.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="2e4" height="2e4"><rect width="9" height="9"/></svg>')
    docs = base / "corpus" / "docs"
    docs.mkdir()
    make_image(docs / "ok.png", 40, 40, seed=1)
    (docs / "page.html").write_text(
        "<html><body><p>Intro text of the page.</p>"
        '<img src="../../outside/x.png" alt="up"><img src="file://' + str(outside / "x.png") + '" alt="abs">'
        '<img src="ok.png" alt="fine"><p>More text.</p></body></html>'
    )
    lines = [
        {"image": str(outside / "x.png"), "caption": "absolute path outside"},
        {"image": "ftp://example.org/x.jpg", "caption": "ftp"},
        {"image": "simplecache::http://127.0.0.1:9/x.jpg", "caption": "chained"},
        {"image": "s3://bucket/x.jpg", "caption": "s3 not allowed"},
        {"image": "hf://datasets/x/y.jpg", "caption": "hf"},
        {"image": "zip://x.jpg::/etc/passwd", "caption": "zip over a local file"},
        {"image": "HTTP://example.org/x.jpg", "caption": "upper-case scheme"},
        {"image": "gs://bucket/x.jpg", "caption": "gs, whose filesystem is not installed"},
        {"image": "imgs/good2.jpg", "caption": "a fine row"},
    ]
    body = "".join(json.dumps(x) + "\n" for x in lines)
    body += '{"image": "imgs/good.jpg", "caption": "lone \\ud800 surrogate"}\n'  # valid JSON, invalid Unicode
    (base / "corpus" / "m.jsonl").write_text(body)
    pipe = {
        "name": "hostile",
        "sources": [
            {"name": "imgs", "reader": "image_folder", "path": "corpus/imgs"},
            {"name": "docs", "reader": "html", "path": "corpus/docs"},
            {"name": "rows", "reader": "jsonl", "path": "corpus/m.jsonl"},
        ],
        "stages": [{"op": "probe"}],
    }
    (base / "pipe.yaml").write_text(yaml.safe_dump(pipe))
    return base


@pytest.fixture(scope="module")
def result(hostile, ray_local):
    out = hostile / "out"
    summary = Engine(load_pipeline(hostile / "pipe.yaml"), out, progress=False).run()
    rows = pq.read_table(out / "samples").to_pylist() + pq.read_table(out / "rejected").to_pylist()
    by_loc: dict[str, dict] = {}
    for r in rows:
        by_loc[r["locator"]] = r
    return summary, by_loc


def _reason(by_loc: dict[str, dict], ending: str) -> tuple[str, str | None]:
    hits = [r for loc, r in by_loc.items() if loc.endswith(ending)]
    assert len(hits) == 1, (ending, sorted(by_loc))
    return hits[0]["status"], hits[0]["status_reason"]


def test_every_input_is_one_row_and_nothing_outside_reaches_a_kept_row(result):
    summary, by_loc = result
    assert summary["balanced"]
    # 9 folder media (their 3 sidecars fold into them) + 1 page + 10 manifest lines
    assert summary["counts"]["input"] == len(by_loc) == 20
    kept = [r for r in by_loc.values() if r["status"] == "kept"]
    for r in kept:
        assert SECRET not in json.dumps(r, default=str)
        for m in r["media"] or []:
            assert "outside" not in m["uri"] or m["error_reason"] == "outside_root"


def test_folder_traps(result):
    _, by_loc = result
    assert _reason(by_loc, "imgs/good.jpg")[0] == "kept"
    assert _reason(by_loc, "imgs/cap.jpg") == ("quarantined", "outside_root")  # its caption is outside
    assert _reason(by_loc, "imgs/link.jpg") == ("quarantined", "outside_root")
    assert _reason(by_loc, "imgs/zero.jpg") == ("quarantined", "outside_root")
    assert _reason(by_loc, "imgs/pipe.jpg") == ("quarantined", "unreadable")  # refused, not hung
    deep = next(r for loc, r in by_loc.items() if loc.endswith("imgs/deep.jpg"))
    assert deep["status"] == "kept" and "RecursionError" in json.dumps(json.loads(deep["meta"]))
    assert _reason(by_loc, "bad\\udcff.jpg") == ("quarantined", "invalid_text")
    svg = next(r for loc, r in by_loc.items() if loc.endswith("huge.svg"))
    assert svg["status"] == "kept", svg["status_detail"]


def test_document_keeps_its_confined_images_only(result):
    _, by_loc = result
    doc = next(r for loc, r in by_loc.items() if loc.endswith("page.html"))
    assert doc["status"] == "kept"
    reasons = [m["error_reason"] for m in doc["media"]]
    assert reasons == ["outside_root", "outside_root", None]


def test_manifest_urls_need_an_allowed_scheme(result):
    _, by_loc = result
    rows = sorted((r for r in by_loc.values() if r["source"] == "rows"), key=lambda r: r["seq"])
    got = [(r["caption"], r["status"], r["status_reason"]) for r in rows]
    assert got == [
        ("absolute path outside", "quarantined", "outside_root"),
        ("ftp", "quarantined", "scheme_not_allowed"),
        ("chained", "quarantined", "scheme_not_allowed"),
        ("s3 not allowed", "quarantined", "scheme_not_allowed"),
        ("hf", "quarantined", "scheme_not_allowed"),
        ("zip over a local file", "quarantined", "scheme_not_allowed"),
        ("upper-case scheme", "quarantined", "remote_media"),
        ("gs, whose filesystem is not installed", "quarantined", "scheme_not_allowed"),
        ("a fine row", "kept", None),
        ("lone \\ud800 surrogate", "quarantined", "invalid_text"),
    ]


def test_allow_roots_and_bad_schemes_in_the_config(hostile, tmp_path):
    cfg = yaml.safe_load((hostile / "pipe.yaml").read_text())
    cfg["sources"][2]["allow_roots"] = [str(hostile / "outside")]
    cfg["sources"][2]["allow_schemes"] = ["S3"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    reader = load_pipeline(path).sources[2].reader
    conf = reader.confinement
    assert conf.check(str(hostile / "outside" / "x.png")) is None
    assert conf.check("s3://bucket/x.jpg") is None and conf.check("S3://bucket/x.jpg") is None
    assert conf.check("hf://d/x.jpg").reason == "scheme_not_allowed"
    cfg["sources"][2]["allow_schemes"] = ["nosuchscheme"]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as e:
        load_pipeline(path)
    assert "allow_schemes" in str(e.value) and "nosuchscheme" in str(e.value) and "p.yaml" in str(e.value)


def test_schemes_of_matches_how_media_are_opened():
    assert schemes_of("/a/b::c.jpg") == [] and schemes_of("FILE:///a/b.jpg") == []
    assert schemes_of("simplecache::HTTPS://x/y") == ["simplecache", "https"]
    assert schemes_of("zip://m.jpg::/etc/passwd") == ["zip", "file"]
    c = Confinement(["/data"], ["zip"])
    assert c.check("zip://m.jpg::/etc/passwd").reason == "scheme_not_allowed"  # the local part needs "file"
    assert c.check("/data/../etc/passwd").reason == "outside_root"


def test_svg_external_references_are_never_followed(hostile):
    png = hostile / "outside" / "x.png"
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">'
        f'<image href="{png}" width="64" height="64"/><image xlink:href="file://{png}" width="64" height="64"/>'
        '<image href="x.png" width="64" height="64"/></svg>'
    )
    im = open_image(io.BytesIO(svg.encode())).convert("RGB")
    assert im.size == (64, 64)
    assert im.getextrema() == ((255, 255), (255, 255), (255, 255))  # all white: nothing was drawn
    big = open_image(io.BytesIO(b'<svg xmlns="http://www.w3.org/2000/svg" width="2E4" height="1e4"/>'))
    assert big.size == (4096, 2048)


def test_repair_text_names_the_first_bad_field():
    rec = {"locator": "ok", "caption": "a\ud800b", "meta": {"k": ["x", "y\udcff"]}}
    assert repair_text(rec) == "caption is not valid Unicode: a lone surrogate (U+D800) at character 1"
    assert rec["caption"] == "a\\ud800b" and rec["meta"]["k"][1] == "y\\udcff"
    assert repair_text({"a": "fine é"}) is None
