"""The engine on Ray Data: accounting, outputs by bucket, resume, and a changed config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from curate.config import load_pipeline
from curate.demo.synth import make_corrupt, make_image
from curate.engine import Engine, RunError

PIPE = {
    "name": "t",
    "ray": {"units_per_file": 3},
    "sources": [{"name": "imgs", "reader": "image_folder", "path": "imgs", "license": "cc0"}],
    "stages": [
        {"op": "probe"},
        {"op": "dedup_exact"},
        {"op": "filter", "name": "size", "params": {"rules": [{"field": "min_side", "min": 64}]}},
        {
            "op": "route",
            "params": {
                "rules": [
                    {"name": "cap", "when": {"layout": "image-text"}, "tasks": ["captioning"], "buckets": ["understanding"]},
                    {"name": "t2i", "when": {"layout": "image-text", "rules": [{"field": "min_side", "min": 200}]}, "tasks": ["text_to_image"], "buckets": ["generation"]},
                ]
            },
        },
    ],
}


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (w, h) in enumerate([(320, 240), (100, 80), (256, 256), (40, 30), (90, 90)]):
        make_image(d / f"im{i}.jpg", w, h, seed=i)
        (d / f"im{i}.txt").write_text(f"caption number {i}")
    shutil.copy(d / "im0.jpg", d / "zz_copy_of_im0.jpg")  # planted duplicate, later in order
    make_corrupt(d / "broken.jpg", kind="truncated", source=d / "im2.jpg")
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(PIPE))
    return tmp_path


def run(corpus: Path, out: Path, **kw):
    return Engine(load_pipeline(corpus / "pipe.yaml"), out, progress=False, **kw).run()


def test_run_accounts_for_every_file_and_writes_buckets(ray_local, corpus, tmp_path):
    out = tmp_path / "out"
    s = run(corpus, out)
    assert s["counts"] == {"input": 7, "derived": 0, "kept": 4, "dropped": 1, "duplicate": 1, "quarantined": 1, "split": 0}
    assert s["balanced"] is True
    assert s["by_bucket"] == {"generation": 2, "understanding": 4}
    assert s["dropped"] == {"size": {"below_min": 1}}
    assert s["duplicate"] == {"dedup_exact": {"exact_duplicate": 1}}
    assert s["quarantined"] == {"probe": {"truncated": 1}}  # broken.jpg is a cut copy of im2.jpg

    understanding = pads.dataset(out / "samples", partitioning="hive").to_table(filter=pads.field("bucket") == "understanding")
    assert sorted(Path(p).name for p in understanding["locator"].to_pylist()) == ["im0.jpg", "im1.jpg", "im2.jpg", "im4.jpg"]
    assert set(understanding["license"].to_pylist()) == {"cc0"}
    gen = pq.read_table(out / "samples" / "bucket=generation").to_pylist()
    assert sorted(Path(r["locator"]).name for r in gen) == ["im0.jpg", "im2.jpg"]
    assert all(r["tasks"] == ["captioning", "text_to_image"] for r in gen)
    assert all(r["lineage"] == ["ingest:image_folder", "probe", "dedup_exact", "size", "route"] for r in gen)

    rejected = {Path(r["locator"]).name: r for r in pq.read_table(out / "rejected").to_pylist()}
    survivor = next(r for r in understanding.to_pylist() if r["locator"].endswith("im0.jpg"))
    assert rejected["zz_copy_of_im0.jpg"]["duplicate_of"] == survivor["id"]
    assert rejected["im3.jpg"]["status_detail"] == "min_side=30 < 64"
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [Path(q["locator"]).name for q in quarantine] == ["broken.jpg"]
    assert json.loads((out / "summary.json").read_text())["counts"] == s["counts"]
    index = json.loads((out / "explain" / "index.json").read_text())  # `curate explain` reads it
    assert index["rows"] == 7 and index["partitions"] == 1
    assert not (out / "_work" / "finalize").exists()


def test_rerun_resumes_finished_units_and_gives_the_same_table(ray_local, corpus, tmp_path):
    out = tmp_path / "out"
    first = run(corpus, out)
    assert first["run"]["units"]["ran"] == first["run"]["units"]["total"] == 3
    ids_before = sorted(pq.read_table(out / "samples")["id"].to_pylist())

    again = run(corpus, out)
    assert again["run"]["units"] == {"total": 3, "done_before": 3, "ran": 0}
    assert [seg["ran"] for seg in again["run"]["segments"]] == [False, False]

    # a crash that lost one unit's output: only that unit runs again, later segments rerun
    victim = sorted((out / "_work" / "seg-0").glob("*.parquet"))[0]
    victim.unlink()
    third = run(corpus, out)
    assert third["run"]["units"] == {"total": 3, "done_before": 2, "ran": 1}
    assert [seg["ran"] for seg in third["run"]["segments"]] == [True, True]
    assert third["counts"] == first["counts"]
    assert sorted(pq.read_table(out / "samples")["id"].to_pylist()) == ids_before


def test_changed_config_refuses_to_mix_runs(ray_local, corpus, tmp_path):
    out = tmp_path / "out"
    run(corpus, out)
    cfg = yaml.safe_load((corpus / "pipe.yaml").read_text())
    cfg["stages"][2]["params"]["rules"][0]["min"] = 10
    (corpus / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunError, match="different pipeline config"):
        run(corpus, out)
    fresh = run(corpus, out, fresh=True)
    assert fresh["counts"]["dropped"] == 0


def test_manifest_pointing_at_missing_media_is_quarantined(ray_local, tmp_path):
    make_image(tmp_path / "real.jpg", 80, 80)
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"image": "real.jpg", "caption": "a real image"}) + "\n"
        + json.dumps({"image": "never_written.jpg", "caption": "a ghost"}) + "\n"
        + "{not json\n"
    )
    cfg = {"name": "m", "sources": [{"name": "m", "reader": "jsonl", "path": "m.jsonl"}], "stages": [{"op": "probe"}]}
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    s = run(tmp_path, tmp_path / "out")
    assert s["counts"] == {"input": 3, "derived": 0, "kept": 1, "dropped": 0, "duplicate": 0, "quarantined": 2, "split": 0}
    reasons = sorted(r for op in s["quarantined"].values() for r in op)
    assert reasons == ["bad_manifest_row", "missing_file"]
    assert s["media_missing"] == {"m": {"referenced": 2, "missing": 1}}  # the manifest's media, as the reader counted them
