"""Resume notices changed inputs (issue 14, item 8): a rerun into the same output reads again only
the units whose files changed (path, size, mtime) or are new, drops the unit files of inputs that
are gone, and gives the table a fresh run on the new inputs gives, ingest order (``seq``, which
picks dedup survivors) included."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from curate.config import load_pipeline
from curate.demo.synth import make_image
from curate.engine import Engine


def _pipeline(root: Path, units_per_file: int = 1) -> Path:
    cfg = {
        "name": "resume",
        "ray": {"units_per_file": units_per_file},
        "sources": [
            {"name": "imgs", "reader": "image_folder", "path": "imgs"},
            {"name": "lines", "reader": "jsonl", "path": "lines", "params": {"bytes_per_unit": 64}},
        ],
        "stages": [{"op": "probe"}, {"op": "dedup_exact"}, {"op": "filter", "params": {"rules": [{"field": "min_side", "min": 40}]}}],
    }
    (root / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    return root / "pipe.yaml"


def _corpus(root: Path) -> Path:
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    for i, (w, h) in enumerate([(64, 64), (80, 60), (96, 72), (30, 30), (50, 70)]):
        make_image(imgs / f"a{i}.jpg", w, h, seed=i)
    shutil.copy(imgs / "a2.jpg", imgs / "z_dup.jpg")  # a duplicate of a2, later in the plan: a2 survives
    lines = root / "lines"
    lines.mkdir()
    for name in ("one", "two"):
        (lines / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} line {i} with words"}) + "\n" for i in range(4)))
    return _pipeline(root)


def _run(pipe: Path, out: Path, overrides: list[str] | None = None) -> dict:
    return Engine(load_pipeline(pipe, overrides or []), out, progress=False).run()


def _table(out: Path) -> list[dict]:
    rows = []
    for folder in ("samples", "rejected"):
        for f in sorted((out / folder).rglob("*.parquet")):
            rows += [{**r, "_in": f.parent.name} for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: (r["id"], r["_in"]))


def test_rerun_after_inputs_changed_reads_only_those_and_equals_a_fresh_run(ray_local, tmp_path):
    pipe = _corpus(tmp_path / "c")
    out = tmp_path / "out"
    first = _run(pipe, out)
    # 6 images, one unit each; 2 manifests of 136 bytes, units of 64 bytes: 2 + 2 + 0 lines each
    assert first["run"]["units"] == {"total": 12, "done_before": 0, "ran": 12}
    assert first["counts"]["input"] == 6 + 8 and first["counts"]["duplicate"] == 1

    imgs, lines = tmp_path / "c" / "imgs", tmp_path / "c" / "lines"
    make_image(imgs / "a1.jpg", 120, 90, seed=11)  # changed content
    st = os.stat(imgs / "a3.jpg")
    os.utime(imgs / "a3.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched only
    make_image(imgs / "a0b.jpg", 70, 70, seed=12)  # added: every later unit moves one place
    shutil.copy(imgs / "a2.jpg", imgs / "a1x.jpg")  # added before a2: a fresh run keeps a1x, not a2
    (imgs / "a4.jpg").unlink()  # removed
    with (lines / "two.jsonl").open("a") as f:  # a manifest grows: its units change, its last is new
        f.write(json.dumps({"text": "two line 4, appended"}) + "\n")

    again = _run(pipe, out)
    fresh = _run(pipe, tmp_path / "fresh")
    assert again["counts"] == fresh["counts"]
    assert again["counts"]["input"] == 7 + 9 and again["counts"]["duplicate"] == 2  # nothing counted twice
    assert again["balanced"] and again["plan"]["planned_inputs"] == again["plan"]["accounted_inputs"] == 16
    assert _table(out) == _table(tmp_path / "fresh")
    survivors = {Path(r["locator"]).name for r in _table(out) if r["_in"] != "rejected" and r["source"] == "imgs"}
    assert "a1x.jpg" in survivors and "a2.jpg" not in survivors

    # read again: a1 (changed), a3 (touched), a0b and a1x (new), two.jsonl's 2 units (changed)
    # and its last (new). Reused: a0, a2, z_dup, one.jsonl's 2 units (and its empty one, known to
    # give no rows); a2, z_dup and one.jsonl's units moved in the plan and were renumbered.
    assert again["run"]["units"] == {"total": 13, "done_before": 6, "ran": 7}
    assert again["run"]["resume"] == {"reused": 5, "changed": 4, "stale": 1, "renumbered": 4}
    assert [s["ran"] for s in again["run"]["segments"]] == [True, True]

    # nothing changed since: nothing runs
    third = _run(pipe, out)
    assert third["run"]["units"] == {"total": 13, "done_before": 13, "ran": 0}
    assert third["run"]["resume"] == {"reused": 12, "changed": 0, "stale": 0, "renumbered": 0}
    assert [s["ran"] for s in third["run"]["segments"]] == [False, False]
    assert _table(out) == _table(tmp_path / "fresh")


def test_rechunked_units_are_never_counted_twice(ray_local, tmp_path):
    pipe = _corpus(tmp_path / "c")
    out = tmp_path / "out"
    first = _run(pipe, out)
    again = _run(pipe, out, ["ray.units_per_file=4"])  # other image units: every old one is stale
    assert again["run"]["resume"] == {"reused": 4, "changed": 0, "stale": 6, "renumbered": 4}  # lines moved up
    assert again["run"]["units"] == {"total": 8, "done_before": 6, "ran": 2}
    assert again["counts"] == first["counts"]
    assert again["balanced"] and again["plan"]["unplanned_units"] == 0
    files = {f.stem for f in (out / "_work" / "seg-0").glob("*.parquet")}
    assert len(files) == 6 and files <= _units(out)


def _units(out: Path) -> set[str]:
    return set(json.loads((out / "_work" / "units.json").read_text())["units"])
