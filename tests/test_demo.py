"""End to end: `curate demo` makes a corpus with planted duplicates and corrupt files, runs the
example pipeline on Ray, and accounts for every input exactly as planted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate.demo import run_demo


def test_demo_accounts_for_every_planted_input(ray_local, tmp_path):
    summary = run_demo(tmp_path, progress=False)
    planted = json.loads((tmp_path / "data" / "PLANTED.json").read_text())
    totals = planted["totals"]

    counts = summary["counts"]
    assert summary["balanced"]
    assert counts["input"] == totals["rows"]
    assert counts["duplicate"] == totals["duplicates"]
    assert counts["quarantined"] == totals["quarantined"]
    for name, src in planted["sources"].items():
        assert summary["by_source"][name]["input"] == src["rows"], name

    rejected = pq.read_table(tmp_path / "run" / "rejected").to_pylist()
    dup_files = sorted(Path(r["locator"]).name for r in rejected if r["status"] == "duplicate" and r["source"] != "text")
    planted_dups = sorted(d["file"] for s in planted["sources"].values() for d in s["duplicates"] if "." in d["file"])
    assert dup_files == planted_dups
    corrupt = sorted(Path(r["locator"]).name for r in rejected if r["status_reason"] in ("corrupt_media", "truncated"))
    assert corrupt == sorted(c for s in planted["sources"].values() for c in s["corrupt"])
    bad_lines = [r for r in rejected if r["status_reason"] == "bad_manifest_row"]
    assert len(bad_lines) == totals["malformed_lines"]

    # every bucket is fed, and a sample can feed several; rows no rule matches (uncaptioned media)
    # are kept, unassigned, for later captioning: the example drops nothing for want of a route
    assert set(summary["by_bucket"]) == {"understanding", "generation", "interaction", "preference", "unassigned"}
    assert "route" not in summary["dropped"]
    samples = pads.dataset(tmp_path / "run" / "samples", partitioning="hive")
    assert samples.count_rows() == sum(summary["by_bucket"].values())
    ids = samples.to_table(columns=["id"])["id"].to_pylist()
    assert len(set(ids)) == counts["kept"]

    # the document with a missing image is kept, with the image flagged
    docs = {d["id"]: d for d in samples.to_table(filter=pads.field("source") == "docs").to_pylist()}
    flagged = [m for d in docs.values() for m in d["media"] if m["error"]]
    assert len(flagged) == totals["missing_media"] and flagged[0]["error"].startswith("missing_file")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["counts"] == counts


def test_demo_kinds_run_their_example_pipelines(ray_local, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    r = CliRunner().invoke(app, ["demo", "--kind", "audio", "-o", str(tmp_path), "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "audio_run" / "summary.json").read_text())
    assert summary["balanced"] and summary["counts"]["derived"] > 0
    assert summary["hours"]["total"]["audio"] > 0
    bad = CliRunner().invoke(app, ["demo", "--kind", "nope", "-o", str(tmp_path)])
    assert bad.exit_code == 2 and "--kind must be one of audio, mixed, video" in bad.output
