"""`curate stats` on real shards: the tables' numbers are the report's, `--json` parses, the PNG
plots and a self-contained HTML report are written; tables never open a tar; a curated table
works as input too."""

from __future__ import annotations

import base64
import io
import json
import math
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import _mixcorpus
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from curate.cli import app
from mixtures.pool import COST_KEYS
from mixtures.stats import collect, print_tables, run_stats

runner = CliRunner()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, ray_local):
    return _mixcorpus.build(tmp_path_factory)


def _rendered(doc: dict) -> str:
    console = Console(record=True, width=250, force_terminal=False)
    print_tables(doc, console)
    return console.export_text()


def _row(text: str, first: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.strip("│┃ ").startswith(first + " "))
    return [c.strip() for c in line.strip().strip("│").split("│")]


def test_tables_are_the_reports_numbers(mixed, tmp_path):
    root, report = mixed["premixed"], mixed["reports"]["premixed"]
    doc = run_stats(root, sample_shards=3, output=tmp_path / "out")
    assert doc["consistent_with_report"] == {"groups_match_report": True, "shards_match_report": True, "samples_match_report": True}
    assert doc["unit"] == report.unit == "tokens" and doc["shard_count"] == report.shards
    for k in COST_KEYS:
        assert math.isclose(doc["totals"][k], report.totals[k], abs_tol=1e-6)
    assert sorted(doc["groups"]) == sorted(report.groups)
    for g, r in report.groups.items():
        d = doc["groups"][g]
        for k in COST_KEYS:
            assert math.isclose(d["achieved"][k], r.achieved[k], abs_tol=1e-6), (g, k)
        assert math.isclose(d["achieved_share"], r.achieved_share, abs_tol=1e-9)
        assert d["target_share"] == r.target_share and d["planned_share"] == r.planned_share
    assert [s["drift"] for s in doc["shards"]] == [d.max_abs_drift for d in report.shard_drift]
    assert doc["max_shard_drift"] == report.max_shard_drift
    assert doc["prefix_drift"] == report.to_json()["prefix_drift"]
    assert sum(doc["by_layout"].values()) == report.totals["samples"]
    # the guarantee the mixer checked before writing, as report.json has it
    assert doc["guarantee"] == report.to_json()["guarantee"] and doc["guarantee"]["held"] == report.guarantee.held
    assert all("sources" not in g for g in doc["groups"].values())  # pre-mixed: sources are mixed across groups

    text = _rendered(doc)
    assert ("guarantee held: every full shard" in text) == report.guarantee.held
    for g, r in report.groups.items():
        cells = _row(text, g)
        assert cells[1:4] == [f"{100 * v:.1f}" for v in (r.target_share, r.planned_share, r.achieved_share)], (g, cells)
    for s, d in zip(doc["shards"], report.shard_drift, strict=True):
        cells = _row(text, s["shard"])
        assert cells[1] == str(s["samples"]) and cells[3] == f"{d.max_abs_drift:.3f}"
    assert _row(text, "image-text")[1] == str(doc["by_layout"]["image-text"])


def test_per_group_stats(mixed, tmp_path):
    root, report = mixed["pergroup"], mixed["reports"]["pergroup"]
    doc = run_stats(root, sample_shards=10, output=tmp_path / "out")
    assert doc["mode"] == "per_group" and all("expected" not in s for s in doc["shards"])
    assert all(doc["consistent_with_report"].values())
    # a per-group shard's drift is the report's: of its sources' shares inside its group
    assert {s["shard"]: s["drift"] for s in doc["shards"]} == {d.shard: d.max_abs_drift for d in report.shard_drift}
    assert doc["guarantee"] == report.to_json()["guarantee"] and doc["max_full_shard_drift"] == report.max_full_shard_drift
    for g, r in report.groups.items():
        d = doc["groups"][g]
        assert d["achieved"]["samples"] == r.achieved["samples"]
        assert d["shards"] == len(list((root / g).glob("*.tar")))
        # per group: its sources, planned (the report's quotas) against achieved (the shards')
        assert set(d["sources"]) == set(r.sources)
        quota = sum(x.quota for x in r.sources.values())
        for src, x in d["sources"].items():
            assert x["planned_share"] == pytest.approx(r.sources[src].quota / quota, abs=1e-6)
            assert x["drift"] == pytest.approx(abs(x["achieved_share"] - x["planned_share"]), abs=2e-6)
        assert sum(x["amount"] for x in d["sources"].values()) == pytest.approx(r.achieved["samples"])
        full = [s["drift"] for s in doc["shards"] if s["shard"].startswith(f"{g}/")][:-1]
        assert d.get("max_source_drift") == (max(full) if full else None)
    # the sample is spread over the group folders: every group is in the distributions
    assert set(doc["distributions"]["by_group"]) == set(report.groups)
    text = _rendered(doc)
    assert "per-group shards" in text and "sources inside each group" in text
    assert report.guarantee is not None and ("guarantee held" in text) == report.guarantee.held
    if not report.guarantee.held:
        assert f"the shards hold {report.guarantee.achievable:.4f}" in text
    # the JSON reads back to the same report
    from mixtures.stats.model import report_of

    assert report_of(doc).to_json() == doc


def test_tables_never_open_a_tar(mixed, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a tar was opened")

    monkeypatch.setattr(tarfile, "open", boom)
    doc, _ = collect(mixed["premixed"], sample_shards=0)
    assert doc["sampled_shards"] == [] and doc["consistent_with_report"]["groups_match_report"]
    assert "target vs achieved" in _rendered(doc)


def test_json_output_parses(mixed, tmp_path):
    root = mixed["premixed"]
    r = runner.invoke(app, ["stats", str(root), "--json", "--sample-shards", "2", "--output", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "shards" and len(doc["sampled_shards"]) == 2
    assert set(doc["groups"]) == set(mixed["reports"]["premixed"].groups)
    assert Path(doc["html"]).is_file()
    r = runner.invoke(app, ["stats", str(root), "--no-plots", "--sample-shards", "1"])
    assert r.exit_code == 0, r.output
    assert "target vs achieved" in r.output
    r = runner.invoke(app, ["stats", str(tmp_path / "nothing-here")])
    assert r.exit_code == 1


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append((tag, k, v or ""))


def _check_html(path: Path) -> _Refs:
    page = path.read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "no embedded images"
    for tag, attr, value in parser.refs:
        assert value.startswith("data:image/"), (tag, attr, value[:60])
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    for _, _, value in parser.refs:
        Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1]))).verify()
    return parser


def test_plots_and_self_contained_html(mixed, tmp_path):
    out = tmp_path / "stats"
    doc = run_stats(mixed["premixed"], sample_shards=12, thumbs=2, output=out)
    expected = {"target_vs_achieved", "shares_by_unit", "drift", "resolution", "duration", "tokens", "scores"}
    assert set(doc["plots"]) == expected
    for p in doc["plots"].values():
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert Image.open(io.BytesIO(data)).size[0] >= 500
    refs = _check_html(Path(doc["html"]))
    plots = [v for t, _, v in refs.refs if v.startswith("data:image/png")]
    thumbs = [v for t, _, v in refs.refs if v.startswith("data:image/jpeg")]
    assert len(plots) == len(expected)
    # all shards sampled: thumbnails for every group with pictures, video ones from the first frame
    assert doc["distributions"]["thumbnails"] == {g: 2 for g in ("paired/image-text", "paired/video-text", "docs/interleaved")}
    assert len(thumbs) == 6
    d = doc["distributions"]
    assert d["min_side"]["image"]["n"] > 0 and d["duration_s"]["video"]["n"] > 0 and d["duration_s"]["audio"]["n"] > 0
    assert {"aesthetic", "clip_score", "snr_db"} <= set(d["scores"])
    assert d["samples"] == doc["totals"]["samples"]


def test_curated_table_input(mixed, tmp_path):
    curated = mixed["curated"]
    summary = {
        "counts": {"input": 32, "derived": 0, "kept": 32, "dropped": 0, "duplicate": 0, "quarantined": 0, "split": 0},
        "balanced": True,
        "by_source": {"web": {"input": 5, "kept": 5}},
        "by_layout": {"image-text": {"input": 10, "kept": 10}, "text": {"input": 6, "kept": 6}},
        "by_bucket": {"understanding": 32, "generation": 10},
        "dropped": {},
        "duplicate": {},
        "quarantined": {},
    }
    (curated / "summary.json").write_text(json.dumps(summary))
    try:
        doc = run_stats(curated, sample_shards=4, output=tmp_path / "stats")
        # `curate stats` prints the run's summary tables (curate's printer), then the sampled ones
        cli = runner.invoke(app, ["stats", str(curated), "--no-plots", "--sample-shards", "4"])
    finally:
        (curated / "summary.json").unlink()
    assert doc["kind"] == "curated" and doc["summary"] == summary
    assert doc["distributions"]["samples"] == 32
    assert doc["sampled_by_layout"] == {"audio-text": 5, "image-text": 10, "interleaved": 6, "text": 6, "video-text": 5}
    assert {"counts", "resolution", "duration", "tokens", "scores"} == set(doc["plots"])
    _check_html(Path(doc["html"]))
    assert cli.exit_code == 0, cli.output
    text = cli.output
    assert "Rows by layout" in text and "sampled 32 kept rows" in " ".join(text.split())
    assert "sampled 32 kept rows" in " ".join(_rendered(doc).split())
