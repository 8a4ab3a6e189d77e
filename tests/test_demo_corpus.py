"""make_demo_corpus writes exactly what PLANTED.json says it planted."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from curate.demo.corpus import PLANTED_NAME, SMALL_SIDE, make_demo_corpus
from operators.probe import Probe
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, normalise_text, to_table

MEDIA_SUFFIXES = {".jpg": "image", ".png": "image", ".webp": "image", ".mp4": "video", ".wav": "audio"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    root = tmp_path_factory.mktemp("demo")
    paths = make_demo_corpus(root, seed=0)
    return root, paths, json.loads((root / PLANTED_NAME).read_text())


def media_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in MEDIA_SUFFIXES)


def read_jsonl(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_returns_every_source(corpus) -> None:
    root, paths, planted = corpus
    assert set(paths) == set(planted["sources"]) == {
        "images", "videos", "audio", "docs", "llava", "preference", "trajectories", "obelics", "text", "shards",
    }  # fmt: skip
    for name, path in paths.items():
        assert path.exists(), name
        assert path == root / planted["sources"][name]["path"]
    totals = planted["totals"]
    assert totals["rows"] == sum(s["rows"] for s in planted["sources"].values())
    assert totals["quarantined"] == totals["corrupt"] + totals["malformed_lines"] == 5
    assert totals["duplicates"] == 5


@pytest.mark.parametrize("name", ["images", "videos", "audio"])
def test_folder_sources_match_planted(corpus, name: str) -> None:
    root, paths, planted = corpus
    entry = planted["sources"][name]
    files = media_files(paths[name])
    assert len(files) == entry["media_files"] == entry["rows"]
    with_sidecar = [p for p in files if p.with_suffix(".txt").exists() or p.with_suffix(".json").exists()]
    assert len(with_sidecar) == entry["sidecars"]
    assert sorted(p.name for p in set(files) - set(with_sidecar)) == sorted(entry["no_sidecar"])
    for dup in entry["duplicates"]:
        assert (paths[name] / dup["file"]).read_bytes() == (paths[name] / dup["of"]).read_bytes()


def probe_folder(folder: Path) -> dict[str, dict[str, Any]]:
    rows = [
        new_record(source="demo", locator=p.name, layout=MEDIA_SUFFIXES[p.suffix], media=[new_media(MEDIA_SUFFIXES[p.suffix], str(p))])
        for p in media_files(folder)
    ]  # fmt: skip
    return {r["locator"]: r for r in from_table(Probe()(to_table(rows)))}


@pytest.mark.parametrize("name", ["images", "videos", "audio"])
def test_probe_quarantines_exactly_the_planted_corrupt_files(corpus, name: str) -> None:
    _, paths, planted = corpus
    entry = planted["sources"][name]
    probed = probe_folder(paths[name])
    bad = {loc for loc, r in probed.items() if r["status"] == Status.QUARANTINED}
    assert bad == set(entry["corrupt"])
    assert {probed[n]["status_reason"] for n in bad} <= {ReasonCode.CORRUPT_MEDIA, ReasonCode.TRUNCATED}
    if name == "images":
        small = {loc for loc, r in probed.items() if r["scores"].get("min_side", 1e9) < SMALL_SIDE}
        assert small == set(entry["small"])
    if name == "audio":
        low = {loc for loc, r in probed.items() if r["scores"].get("sample_rate", 1e9) < 16000}
        assert low == set(entry["low_sample_rate"])
    if name == "videos":
        with_audio = {loc for loc, r in probed.items() if r["scores"].get("has_audio") == 1.0}
        assert with_audio == set(entry["with_audio"]) | {d["file"] for d in entry["duplicates"]}
        durations = [r["scores"]["duration_s"] for r in probed.values() if r["status"] == Status.KEPT]
        assert all(1.0 <= d <= 2.0 for d in durations)


def test_no_accidental_byte_duplicates(corpus) -> None:
    root, _, planted = corpus
    groups: dict[str, list[str]] = defaultdict(list)
    for p in root.rglob("*"):
        if p.suffix in MEDIA_SUFFIXES:
            groups[hashlib.sha256(p.read_bytes()).hexdigest()].append(str(p.relative_to(root)))
    found = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    expected = sorted(
        sorted([f"{e['path']}/{d['file']}", f"{e['path']}/{d['of']}"])
        for e in planted["sources"].values()
        if e["kind"] == "folder"
        for d in e["duplicates"]
    )
    assert found == expected


def test_llava_manifest(corpus) -> None:
    _, paths, planted = corpus
    entry = planted["sources"]["llava"]
    lines = read_jsonl(paths["llava"])
    assert len(lines) == entry["rows"]
    parsed = []
    for number, line in enumerate(lines, start=1):
        if number in entry["malformed_lines"]:
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        row = json.loads(line)
        parsed.append(row)
        assert [t["from"] for t in row["conversations"]] == ["human", "gpt"]
        if "image" in row:
            assert (paths["llava"].parent / row["image"]).is_file()
            assert row["conversations"][0]["value"].startswith("<image>\n")
    assert sum("image" not in r for r in parsed) == entry["text_only"]


def test_preference_trajectory_and_obelics_references_exist(corpus) -> None:
    _, paths, planted = corpus
    base = paths["preference"].parent
    prefs = [json.loads(line) for line in read_jsonl(paths["preference"])]
    assert len(prefs) == planted["sources"]["preference"]["rows"]
    generation = [r for r in prefs if "chosen_image" in r]
    assert len(generation) == planted["sources"]["preference"]["generation_pairs"]
    for r in prefs:
        for key in ("image", "chosen_image", "rejected_image"):
            if key in r:
                assert (base / r[key]).is_file()
        assert r["prompt"]
    trajs = [json.loads(line) for line in read_jsonl(paths["trajectories"])]
    assert len(trajs) == planted["sources"]["trajectories"]["rows"]
    assert sum(len(t["steps"]) for t in trajs) == planted["sources"]["trajectories"]["steps"]
    for t in trajs:
        assert t["environment"] == "web" and t["goal"]
        for step in t["steps"]:
            assert (base / step["screenshot"]).is_file()
            assert step["action"]["type"] in {"click", "type", "scroll"}
    docs = [json.loads(line) for line in read_jsonl(paths["obelics"])]
    assert len(docs) == planted["sources"]["obelics"]["rows"]
    images = 0
    for d in docs:
        assert len(d["texts"]) == len(d["images"])
        assert all((t is None) != (i is None) for t, i in zip(d["texts"], d["images"], strict=True))
        for i in filter(None, d["images"]):
            assert (base / i).is_file()
            images += 1
    assert images == planted["sources"]["obelics"]["images"]


def test_html_docs_and_missing_image(corpus) -> None:
    root, paths, planted = corpus
    entry = planted["sources"]["docs"]
    pages = sorted(paths["docs"].glob("*.html"))
    assert len(pages) == entry["rows"]
    srcs = [s.split('"')[0] for page in pages for s in page.read_text().split('src="')[1:]]
    missing = [f"docs/{s}" for s in srcs if not (paths["docs"] / s).is_file()]
    assert missing == entry["missing_media"]
    assert len(srcs) - len(missing) == entry["images"]


def test_text_manifest_plants_one_normalised_duplicate(corpus) -> None:
    _, paths, planted = corpus
    texts = [json.loads(line)["text"] for line in read_jsonl(paths["text"])]
    assert len(texts) == planted["sources"]["text"]["rows"]
    assert len(texts) - len({normalise_text(t) for t in texts}) == len(planted["sources"]["text"]["duplicates"])
    assert len(set(texts)) == len(texts)  # the duplicate differs before normalisation


def test_webdataset_shard(corpus) -> None:
    _, paths, planted = corpus
    tars = sorted(paths["shards"].glob("*.tar"))
    assert len(tars) == planted["sources"]["shards"]["tars"]
    with tarfile.open(tars[0]) as tar:
        names = tar.getnames()
    keys = {n.split(".", 1)[0] for n in names}
    assert len(keys) == planted["sources"]["shards"]["rows"]
    assert all(n.count(".") == 1 for n in names)
    for key in keys:
        assert f"{key}.jpg" in names
        assert (f"{key}.txt" in names) != (f"{key}.json" in names)


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_deterministic_given_seed(tmp_path: Path) -> None:
    make_demo_corpus(tmp_path / "a", seed=7)
    make_demo_corpus(tmp_path / "b", seed=7)
    make_demo_corpus(tmp_path / "c", seed=8)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_scale_multiplies_ordinary_samples(tmp_path: Path) -> None:
    make_demo_corpus(tmp_path / "x2", scale=2)
    planted = json.loads((tmp_path / "x2" / PLANTED_NAME).read_text())
    assert planted["sources"]["images"]["rows"] == 2 * 22 + 4
    assert len(media_files(tmp_path / "x2" / "images")) == planted["sources"]["images"]["media_files"]
    with pytest.raises(ValueError):
        make_demo_corpus(tmp_path / "bad", scale=0)
