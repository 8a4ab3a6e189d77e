"""`curate explain`: one sample of a finished run from the index finalize writes (a duplicate and
its evidence, a dropped, a quarantined and a kept row with its route rules), --reason listings,
shards that carry a sample, an older run without an index, and the summary's missing-media count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from typer.testing import CliRunner

from curate.cli import app
from curate.demo.synth import make_corrupt
from curate.demo.synth_variants import image_variant, natural_image
from curate.explain import explain, parse_duplicate_detail, shard_hits
from curate.spill import Spill, string_hash, string_hash_one

runner = CliRunner()

PIPE = {
    "name": "explained",
    "ray": {"units_per_file": 4},
    "sources": [
        {"name": "pics", "reader": "image_folder", "path": "pics"},
        {"name": "caps", "reader": "jsonl", "path": "corpus/annotations/train.jsonl"},
    ],
    "stages": [
        {"op": "probe"},
        {"op": "dedup_exact"},
        {"op": "dedup_image_phash"},
        {"op": "filter", "name": "size", "params": {"rules": [{"field": "min_side", "min": 64}]}},
        {
            "op": "route",
            "params": {
                "unmatched": "keep",
                "rules": [
                    {"name": "cap", "when": {"layout": "image-text"}, "tasks": ["captioning"], "buckets": ["understanding"]},
                    {"name": "t2i", "when": {"layout": "image-text", "rules": [{"field": "min_side", "min": 140}]}, "tasks": ["text_to_image"], "buckets": ["generation"]},
                ],
            },
        },
    ],
}


@pytest.fixture(scope="module")
def run(ray_local, tmp_path_factory) -> dict:
    from curate.config import load_pipeline
    from curate.engine import Engine

    root = tmp_path_factory.mktemp("explain")
    pics = root / "pics"
    pics.mkdir()
    for s in range(3):
        img = natural_image(s, 200, 150)
        img.save(pics / f"a{s}.jpg", quality=90)
        (pics / f"a{s}.txt").write_text(f"caption of picture {s}")
    v, opt = image_variant(natural_image(0, 200, 150), "resize", seed=0)
    v.save(pics / "b0_resized.jpg", **opt)
    shutil.copy(pics / "a1.jpg", pics / "zz_copy_of_a1.jpg")
    natural_image(9, 40, 30).save(pics / "small.jpg")
    make_corrupt(pics / "broken.jpg", kind="truncated", source=pics / "a2.jpg")
    # a manifest whose media paths are relative to the corpus root, not to its own folder
    corpus = root / "corpus"
    (corpus / "annotations").mkdir(parents=True)
    (corpus / "images").mkdir()
    for i in range(3):
        natural_image(20 + i, 64, 64).save(corpus / "images" / f"{i}.jpg")
    rows = [{"image": f"images/{i}.jpg", "caption": f"c{i}"} for i in range(3)]
    (corpus / "annotations" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pipe.yaml").write_text(yaml.safe_dump(PIPE))
    out = root / "out"
    summary = Engine(load_pipeline(root / "pipe.yaml"), out, progress=False).run()
    rows = pq.read_table(out / "rejected").to_pylist() + pq.read_table(out / "samples").to_pylist()
    return {"out": out, "summary": summary, "rows": rows, "root": root}


def _row(run: dict, name: str) -> dict:
    return next(r for r in run["rows"] if Path(r["locator"]).name == name)


def test_the_index_is_written_at_finalize(run):
    meta = json.loads((run["out"] / "explain" / "index.json").read_text())
    assert meta["rows"] == run["summary"]["counts"]["input"] + run["summary"]["counts"]["derived"]
    assert meta["repeated_ids"] == 0
    assert {s["name"] for s in meta["stages"]} >= {"probe", "dedup_exact", "route", "ingest:image_folder"}
    assert not (run["out"] / "_work" / "finalize").exists()  # runs and quarantine parts cleaned up


def test_an_exact_duplicate_names_its_survivor_and_the_equal_hash(run):
    copy, survivor = _row(run, "zz_copy_of_a1.jpg"), _row(run, "a1.jpg")
    doc = explain(run["out"], copy["id"])
    assert (doc["status"], doc["operator"], doc["reason"]) == ("duplicate", "dedup_exact", "exact_duplicate")
    assert doc["duplicate"]["survivor"]["id"] == survivor["id"]
    assert doc["duplicate"]["survivor"]["locator"] == survivor["locator"]
    ev = doc["duplicate"]["evidence"]
    assert ev["kind"] == "exact" and ev["content_hash_equal"] is True and ev["media_sha256_equal"] is True
    assert [s["stage"] for s in doc["lineage"]] == ["ingest:image_folder", "probe", "dedup_exact"]
    probe = doc["lineage"][1]
    assert probe["scores"]["min_side"] == 150.0  # the scores probe writes, under probe
    assert doc["source"] == "pics" and doc["record"]["file"].startswith("rejected/")


def test_a_near_duplicate_shows_its_distances(run):
    near, survivor = _row(run, "b0_resized.jpg"), _row(run, "a0.jpg")
    doc = explain(run["out"], near["id"])
    assert doc["reason"] == "near_duplicate" and doc["duplicate"]["survivor"]["id"] == survivor["id"]
    ev = doc["duplicate"]["evidence"]
    assert ev["kind"] == "near" and ev["metric"] == "phash distance"
    assert isinstance(ev["phash_distance"], float) and isinstance(ev["dhash_distance"], int)
    assert ev["survivor_locator"] == survivor["locator"]
    assert "dedup_image_phash" in [s["stage"] for s in doc["lineage"]]


def test_dropped_quarantined_and_kept_rows(run):
    small = explain(run["out"], _row(run, "small.jpg")["id"])
    assert (small["status"], small["operator"], small["reason"]) == ("dropped", "size", "below_min")
    assert small["detail"] == "min_side=30 < 64"
    broken = explain(run["out"], _row(run, "broken.jpg")["id"])
    assert (broken["status"], broken["operator"], broken["reason"]) == ("quarantined", "probe", "truncated")
    kept = explain(run["out"], _row(run, "a2.jpg")["id"])
    assert kept["status"] == "kept" and sorted(kept["buckets"]) == ["generation", "understanding"]
    (route,) = kept["route"]
    assert [m["rule"] for m in route["matched"]] == ["cap", "t2i"] and route["matched_when_routed"] == 2
    assert kept["texts"]["caption"] == "caption of picture 2"
    assert kept["media"][0]["width"] == 200 and kept["record"]["found"] is True
    assert kept["record"]["file"] == "samples/bucket=generation/" + Path(kept["record"]["file"]).name
    ghost = next(r for r in run["rows"] if r["source"] == "caps")
    doc = explain(run["out"], ghost["id"])
    assert doc["status"] == "quarantined" and doc["reason"] == "missing_file"
    assert doc["lineage"][0]["stage"] == "ingest:jsonl" and doc["lineage"][0]["scores"]["media_missing"] == 1.0


def test_cli_json_unknown_ids_prefixes_and_reasons(run):
    out, sid = str(run["out"]), _row(run, "small.jpg")["id"]
    r = runner.invoke(app, ["explain", out, sid, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reason"] == "below_min"
    r = runner.invoke(app, ["explain", out, sid[:10]])  # a unique prefix
    assert r.exit_code == 0, r.output
    assert "below_min" in r.output and "min_side=30 < 64" in r.output and "lineage" in r.output
    r = runner.invoke(app, ["explain", out, "0" * 24])
    assert r.exit_code == 1 and f"no sample with id '{'0' * 24}'" in r.output
    r = runner.invoke(app, ["explain", out, "--reason", "below_min", "--json"])
    assert r.exit_code == 0, r.output
    assert [x["id"] for x in json.loads(r.output)] == [sid]
    r = runner.invoke(app, ["explain", out, "--reason", "probe:truncated"])
    assert r.exit_code == 0 and "broken.jpg" in r.output
    r = runner.invoke(app, ["explain", out, "--reason", "no_such_reason"])
    assert r.exit_code == 1 and "size:below_min" in " ".join(r.output.split())
    r = runner.invoke(app, ["explain", out])
    assert r.exit_code == 2


def test_a_run_without_an_index_says_how_to_build_it(run, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(run["out"], older, ignore=shutil.ignore_patterns("_work"))
    shutil.rmtree(older / "explain")
    sid = _row(run, "zz_copy_of_a1.jpg")["id"]
    r = runner.invoke(app, ["explain", str(older), sid])
    assert r.exit_code == 1
    assert f"curate explain {older} --reindex" in " ".join(r.output.split())
    r = runner.invoke(app, ["explain", str(older), sid, "--reindex", "--json"])
    assert r.exit_code == 0, r.output
    rebuilt = json.loads(r.output[r.output.index("{") :])
    before = json.loads(json.dumps(explain(run["out"], sid), default=str))
    assert rebuilt == before
    for name in ("a2.jpg", "small.jpg", "broken.jpg"):
        i = _row(run, name)["id"]
        assert explain(older, i) == explain(run["out"], i)


def test_shards_that_carry_a_sample(run, tmp_path):
    sid = _row(run, "a2.jpg")["id"]
    shards = tmp_path / "shards"
    (shards / "g").mkdir(parents=True)
    for n, keys in enumerate([[sid, "other"], ["x", f"{sid}_1"]]):
        with wds.TarWriter(str(shards / "g" / f"train-{n:06d}.tar")) as w:
            for i, key in enumerate(keys):
                w.write({"__key__": key, "json": json.dumps({"stage": "sft", "group": "img", "repeat": i}).encode(), "txt": b"t"})
    hits = shard_hits(shards, sid)
    assert [(h["shard"], h["key"], h["repeat"], h["use"]) for h in hits] == [
        ("g/train-000000.tar", sid, 0, 0), ("g/train-000001.tar", f"{sid}_1", 1, 1),
    ]  # fmt: skip
    r = runner.invoke(app, ["explain", str(run["out"]), sid, "--shards", str(shards)])
    assert r.exit_code == 0 and "train-000001.tar" in r.output
    r = runner.invoke(app, ["explain", str(run["out"]), sid, "--shards", str(tmp_path / "nowhere")])
    assert r.exit_code == 1


def test_the_summary_counts_missing_media_and_suggests_a_media_root(run):
    from rich.console import Console

    from curate.report import print_summary

    s = run["summary"]
    assert s["media_missing"] == {"caps": {"referenced": 3, "missing": 3}}
    assert s["media_root_hints"] == {"caps": ".."}
    assert json.loads((run["out"] / "summary.json").read_text())["media_missing"] == s["media_missing"]
    console = Console(record=True, width=200)
    print_summary(s, console)
    text = console.export_text()
    assert "3 of 3 media missing in source caps; set sources.caps.params.media_root?" in text
    assert "media_root: '..'" in text


def test_summary_tables_are_not_squeezed_without_a_terminal(monkeypatch, capsys):
    from curate.report import PLAIN_WIDTH, print_summary, wide_console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = wide_console()
    assert console.width == PLAIN_WIDTH  # pytest's stdout is not a terminal
    src = "a_source_with_quite_a_long_name_understanding"
    counts = {"input": 1, "derived": 0, "kept": 1, "dropped": 0, "duplicate": 0, "quarantined": 0, "split": 0}
    summary = {
        "counts": counts, "balanced": True, "by_source": {src: counts}, "by_layout": {"image-text": counts},
        "by_bucket": {"understanding": 1}, "dropped": {"a_filter_stage_name": {"a_long_reason_name_for_dropping": 3}},
    }  # fmt: skip
    print_summary(summary, console)
    out = capsys.readouterr().out
    assert src in out and "a_long_reason_name_for_dropping" in out  # one piece, not folded over lines
    monkeypatch.setenv("COLUMNS", "120")
    assert wide_console().width == 120


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("detail", "survivor", "expected"),
    [
        ("same content as /d/a.jpg", "/d/a.jpg", {"kind": "exact", "evidence": "equal content hash", "survivor_locator": "/d/a.jpg"}),
        (
            "near-duplicate of /d/a: b.jpg: phash distance 3 (dhash distance 5, mirrored)",
            "/d/a: b.jpg",
            {"kind": "near", "survivor_locator": "/d/a: b.jpg", "metric": "phash distance", "phash_distance": 3.0, "dhash_distance": 5, "transform": "mirrored"},
        ),
        (
            "near-duplicate of s.wav: via m.wav: landmark match 0.412 (17 landmarks agree at offset -1.25 s)",
            None,
            {"kind": "near", "survivor_locator": "s.wav", "via": "m.wav", "metric": "landmark match", "landmark_score": 0.412, "matched_landmarks": 17, "offset_s": -1.25},
        ),
        (
            "near-duplicate of v.mp4: matched frames 0.875 (7/8 frames within 12 bits, duration ratio 0.98)",
            "v.mp4",
            {"kind": "near", "survivor_locator": "v.mp4", "metric": "matched frames", "matched_frames_fraction": 0.875, "matched_frames": 7, "compared_frames": 8, "frame_threshold_bits": 12, "duration_ratio": 0.98},
        ),
        ("near-duplicate of doc.jsonl:0: jaccard 0.812", None, {"kind": "near", "survivor_locator": "doc.jsonl:0", "metric": "jaccard", "jaccard": 0.812}),
        ("near-duplicate of x: cosine 0.971 (something new)", "x", {"kind": "near", "survivor_locator": "x", "metric": "cosine", "cosine": 0.971, "more": "something new"}),
        ("a format explain does not know", None, {"detail": "a format explain does not know"}),
        (None, None, {}),
    ],
)
def test_dedup_details_become_evidence_fields(detail, survivor, expected):
    assert parse_duplicate_detail(detail, survivor) == expected


def test_the_vectorised_hash_is_the_one_string_hash():
    values = ["", "a", "id1", "7c92a6e670b4ccbd69cda3de", "ünïcødé ✓", "x" * 300, None]
    arr = pa.array(values, pa.string())
    got = string_hash(arr)
    assert got.tolist() == [string_hash_one(v or "") for v in values]
    assert string_hash(arr.slice(2, 3)).tolist() == got[2:5].tolist()  # sliced arrays
    assert string_hash(pa.chunked_array([arr.slice(0, 3), arr.slice(3)])).tolist() == got.tolist()


def test_a_spill_gives_every_key_back_in_one_partition(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"k{int(k)}" for k in rng.integers(0, 500, 20_000)]
    with Spill(1000, key="id", fanout=4, directory=tmp_path) as spill:
        for lo in range(0, len(keys), 3000):
            spill.add(pa.table({"id": keys[lo : lo + 3000], "n": list(range(lo, min(lo + 3000, len(keys))))}))
        assert spill.spilled
        parts = list(spill.partitions())
    seen: dict[str, int] = {}
    for i, p in enumerate(parts):
        for k in set(p["id"].to_pylist()):
            assert seen.setdefault(k, i) == i
        n = p["n"].to_pylist()
        assert n == sorted(n)  # the order rows were added in
    assert sum(p.num_rows for p in parts) == len(keys) and max(p.num_rows for p in parts) <= 1000
    assert not list(tmp_path.iterdir())


def test_media_hours_count_each_id_once_when_spilled(tmp_path, monkeypatch):
    from curate import media_hours as mh
    from schemas.record import new_media, new_record, to_table

    rows = []
    for i in range(300):
        r = new_record(source="s", locator=f"l{i}", media=[new_media("audio", "a.wav", duration_s=36.0)], modalities=["audio"])
        r.update(id=f"id{i % 100}", status="kept")
        rows.append(r)
    files = []
    for j in range(3):
        files.append(tmp_path / f"f{j}.parquet")
        pq.write_table(to_table(rows[j * 100 : (j + 1) * 100]), files[-1])
    expected = {"total": {"audio": 1.0}, "by_source": {"s": {"audio": 1.0}}, "by_language": {"unknown": {"audio": 1.0}}, "rows": 100}
    assert mh.media_hours(files) == expected
    monkeypatch.setattr(mh, "SPILL_ROWS", 30)
    assert mh.media_hours(files) == expected
