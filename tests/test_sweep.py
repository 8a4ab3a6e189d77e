"""Mixture sweeps (`curate sweep`): Dirichlet variants of a stage's weights, level by level of the
group tree; the weight tables; the cap check from the plan; proxy shards per variant."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from _mixcorpus import make_curated
from typer.testing import CliRunner

from curate.cli import app
from mixtures.config import load_mixture
from mixtures.planner import plan_stage
from mixtures.pool import load_pool
from mixtures.report_model import read_report
from mixtures.sweep import SweepError, run_sweep
from mixtures.sweep_draw import draw_variant, sibling_sets, variant_rng
from schemas.config_file import ConfigError

runner = CliRunner()

#: rows of the curated table of tests/_mixcorpus.py per layout (the capacity of a leaf at max_repeat 1)
ROWS = {"image-text": 10, "video-text": 5, "audio-text": 5, "interleaved": 6, "text": 6}
LEAVES = ["paired/image-text", "paired/video-text", "paired/audio-text", "paired/never", "docs/interleaved", "text"]

SWEEP_MIX = {
    "name": "sweep-test",
    "seed": 5,
    "stages": [
        {
            "name": "pre",
            "unit": "samples",
            "budget": 1000,
            "max_repeat": 1,
            "shards": {"max_samples": 8},
            "groups": [
                {
                    "name": "paired",
                    "weight": 0.6,
                    "groups": [
                        {"name": "image-text", "weight": 0.5, "where": {"layout": ["image-text"]}},
                        {"name": "video-text", "weight": 0.3, "where": {"layout": ["video-text"]}},
                        {"name": "audio-text", "weight": 0.2, "where": {"layout": ["audio-text"]}},
                        {"name": "never", "weight": 0.0, "where": {"layout": ["text"]}},  # zero stays zero
                    ],
                },
                # one child: nothing to draw below docs
                {"name": "docs", "weight": 0.25, "groups": [{"name": "interleaved", "weight": 2.0, "where": {"layout": ["interleaved"]}}]},
                {"name": "text", "weight": 0.15, "where": {"layout": ["text"]}},
            ],
        },
        {
            # an absolute amount and a schedule: shares must follow the planner's reading
            "name": "sched",
            "unit": "samples",
            "budget": 40,
            "max_repeat": 3,
            "groups": [
                {"name": "fixed", "amount": 4, "where": {"layout": ["text"]}},
                {
                    "name": "media",
                    "weight": 0.7,
                    "groups": [
                        {"name": "image-text", "weight": 0.6, "where": {"layout": ["image-text"]}},
                        {"name": "video-text", "weight": 0.4, "where": {"layout": ["video-text"]}},
                    ],
                },
                {"name": "docs", "weight": 0.3, "where": {"layout": ["interleaved"]}},
            ],
            "schedule": [{"at": 0.5, "weights": {"media": 0.2, "docs": 0.8}}],
        },
    ],
}


@pytest.fixture
def mixture(tmp_path: Path) -> Path:
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump(SWEEP_MIX, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    return make_curated(tmp_path_factory.mktemp("sweepcorpus"))


def _groups_by_path(groups: list[dict], prefix: str = "") -> dict[str, dict]:
    out = {}
    for g in groups:
        path = prefix + g["name"]
        out[path] = g
        out.update(_groups_by_path(g.get("groups") or [], path + "/"))
    return out


def _siblings(groups: list[dict], prefix: str = "") -> list[list[str]]:
    out = [[prefix + g["name"] for g in groups if g.get("amount") is None]]
    for g in groups:
        if g.get("groups"):
            out += _siblings(g["groups"], prefix + g["name"] + "/")
    return out


def _yaml_stage(path: Path, stage: str = "pre") -> dict:
    return next(s for s in yaml.safe_load(path.read_text())["stages"] if s["name"] == stage)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_variants_load_and_every_sibling_set_sums_to_one(mixture, tmp_path):
    r = run_sweep(mixture, "pre", tmp_path / "sw", n=12, seed=7)
    original = load_mixture(mixture)
    assert [v.file for v in r.variants] == [f"variant_{i:03d}.yaml" for i in range(12)]
    for v in r.variants:
        cfg = load_mixture(tmp_path / "sw" / v.file)  # a valid mixture file
        assert cfg.stage("sched") == original.stage("sched")  # other stages as they were
        assert cfg.stage("pre").budget == 1000 and cfg.name == "sweep-test"
        stage = _yaml_stage(tmp_path / "sw" / v.file)
        by_path = _groups_by_path(stage["groups"])
        for sibs in _siblings(stage["groups"]):
            assert sum(by_path[p]["weight"] for p in sibs) == pytest.approx(1.0, abs=1e-12)
        assert by_path["paired/never"]["weight"] == 0.0  # zero stays zero
        assert by_path["docs/interleaved"]["weight"] == 1.0  # one child: nothing drawn (normalised)
        assert all(0 < by_path[p]["weight"] < 1 for p in ("paired", "docs", "text", "paired/image-text", "paired/audio-text"))
    assert len({v.weights["paired"] for v in r.variants}) == 12  # drawn, not copied


def test_mean_approaches_the_base_and_concentration_sets_the_spread(mixture):
    stage = load_mixture(mixture).stage("pre")
    sets = sibling_sets(stage.groups)
    base = {"paired": 0.6, "docs": 0.25, "text": 0.15, "paired/image-text": 0.5, "paired/video-text": 0.3, "paired/audio-text": 0.2}
    spread = {}
    for c in (2.0, 50.0):
        draws = [draw_variant(sets, variant_rng(11, i), c) for i in range(3000)]
        for p, w in base.items():
            xs = np.array([d[p] for d in draws])
            assert xs.mean() == pytest.approx(w, abs=0.02), (c, p)
            # Dirichlet: variance w (1 - w) / (C + 1)
            assert xs.var() == pytest.approx(w * (1 - w) / (c + 1), rel=0.15), (c, p)
        assert all(d["paired/never"] == 0.0 and d["docs/interleaved"] == 1.0 for d in draws)
        spread[c] = np.std([d["paired"] for d in draws])
    assert spread[50.0] < spread[2.0] / 3


def test_same_seed_same_bytes_other_seed_other_variants(mixture, tmp_path):
    run_sweep(mixture, "pre", tmp_path / "a", n=4, seed=3)
    run_sweep(mixture, "pre", tmp_path / "b", n=4, seed=3)
    run_sweep(mixture, "pre", tmp_path / "c", n=4, seed=4)
    run_sweep(mixture, "pre", tmp_path / "d", n=6, seed=3)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["sweep.json", *[f"variant_{i:03d}.yaml" for i in range(4)], "weights.csv", "weights.parquet"]
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for i in range(4):
        name = f"variant_{i:03d}.yaml"
        assert _yaml_stage(tmp_path / "a" / name) != _yaml_stage(tmp_path / "c" / name)
        # a longer sweep of the same seed starts with the same variants (the header says --n 6)
        assert (tmp_path / "a" / name).read_text().split("\n", 1)[1] == (tmp_path / "d" / name).read_text().split("\n", 1)[1]


def test_tables_agree_with_the_variant_files(mixture, tmp_path):
    r = run_sweep(mixture, "pre", tmp_path / "sw", n=5, seed=2)
    rows = _csv_rows(tmp_path / "sw" / "weights.csv")
    table = pq.read_table(tmp_path / "sw" / "weights.parquet").to_pylist()
    assert len(rows) == len(table) == 5
    assert list(rows[0]) == list(table[0])
    assert [c for c in rows[0] if c.startswith("share:")] == [f"share:{leaf}" for leaf in LEAVES]
    assert "capped" not in rows[0]  # no curated table: caps not checked
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert doc["caps_checked"] is False and doc["capped_variants"] is None
    for row, prow, v in zip(rows, table, doc["variants"], strict=True):
        assert row["file"] == prow["file"] == v["file"]
        stage = _yaml_stage(tmp_path / "sw" / row["file"])
        by_path = _groups_by_path(stage["groups"])
        for path, g in by_path.items():
            assert float(row[f"weight:{path}"]) == prow[f"weight:{path}"] == g["weight"] == v["weights"][path]
        for leaf in LEAVES:
            # leaf share = the product of the weights down the tree
            parts = leaf.split("/")
            expect = np.prod([by_path["/".join(parts[: i + 1])]["weight"] for i in range(len(parts))])
            assert float(row[f"share:{leaf}"]) == prow[f"share:{leaf}"] == pytest.approx(expect, abs=1e-12)
        assert sum(prow[f"share:{leaf}"] for leaf in LEAVES) == pytest.approx(1.0)
    assert r.base_shares["paired/image-text"] == pytest.approx(0.3)


def test_shares_follow_the_planner_with_amounts_and_a_schedule(mixture, curated, tmp_path):
    r = run_sweep(mixture, "sched", tmp_path / "sw", n=3, seed=1)
    for v in r.variants:
        cfg = load_mixture(tmp_path / "sw" / v.file)
        stage = cfg.stage("sched")
        assert stage.schedule and stage.groups[0].amount == 4  # kept
        assert "fixed" not in v.weights  # an amount is not drawn
        plan = plan_stage(stage, load_pool(curated, stage, cfg.estimators), cfg.seed)
        for leaf, target in plan.targets.items():
            assert v.shares[leaf] * stage.budget == pytest.approx(target, abs=1e-9), leaf
    dropped = run_sweep(mixture, "sched", tmp_path / "drop", n=3, seed=1, schedule="drop")
    for v, kept in zip(dropped.variants, r.variants, strict=True):
        assert "schedule" not in _yaml_stage(tmp_path / "drop" / v.file, "sched")
        assert v.weights == kept.weights  # the same draws
        assert v.shares["fixed"] == pytest.approx(0.1)
        assert v.shares["docs"] == pytest.approx(0.9 * v.weights["docs"])


def _expected_caps(v, budget: float) -> set[str]:
    """With shortfall: redistribute, a leaf misses its target exactly when its own target is over
    its capacity (max_repeat 1: its rows)."""
    cap = {leaf: ROWS[leaf.rsplit("/", 1)[-1]] for leaf in LEAVES if leaf != "paired/never"}
    return {leaf for leaf, c in cap.items() if v.shares[leaf] * budget > c + 1e-6}


def test_cap_check_from_the_plan(mixture, curated, tmp_path):
    r = run_sweep(mixture, "pre", tmp_path / "sw", n=10, seed=5, concentration=8.0, input=curated, budget=16)
    capped = [v.index for v in r.variants if v.capped]
    assert 0 < len(capped) < 10  # some hit a cap, some do not
    for v in r.variants:
        assert {s.group for s in v.capped} == _expected_caps(v, 16), v.index
        assert sum(v.planned_shares.values()) == pytest.approx(1.0)
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert doc["caps_checked"] is True and doc["capped_variants"] == capped and doc["proxy_budget"] == 16
    rows = _csv_rows(tmp_path / "sw" / "weights.csv")
    assert [i for i, row in enumerate(rows) if row["capped"] == "true"] == capped
    for row, v in zip(rows, r.variants, strict=True):
        assert set(filter(None, row["capped_groups"].split(";"))) == {s.group for s in v.capped}
        assert float(row["planned:paired/image-text"]) == v.planned_shares["paired/image-text"]


def test_mix_cuts_proxy_shards_for_every_variant(ray_local, mixture, curated, tmp_path):
    planned = run_sweep(mixture, "pre", tmp_path / "plan", n=4, seed=5, concentration=8.0, input=curated, budget=16)
    r = run_sweep(mixture, "pre", tmp_path / "sw", n=4, seed=5, concentration=8.0, input=curated, mix=True, budget=16)
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert doc["capped_variants"] == planned.capped_variants
    rows = pq.read_table(tmp_path / "sw" / "weights.parquet").to_pylist()
    for v, p, row, entry in zip(r.variants, planned.variants, rows, doc["variants"], strict=True):
        folder = tmp_path / "sw" / f"variant_{v.index:03d}"
        report = read_report(folder)
        assert report is not None and report.budget == 16 and report.unit == "samples"
        assert {s.group for s in report.shortfalls} == {s.group for s in v.capped} == {s.group for s in p.capped}
        assert v.planned_shares == pytest.approx(p.planned_shares)
        tars = sorted(folder.glob("train-*.tar"))
        assert len(tars) == report.shards == row["shards"] == entry["mix"]["shards"] > 0
        assert all(t.with_name(t.name.replace(".tar", ".stats.json")).is_file() for t in tars)
        groups = [s["json"]["group"] for t in tars for s in wds.WebDataset(str(t), shardshuffle=False).decode()]
        # the shards hold what was planned: the whole proxy budget, group by group
        assert len(groups) == report.totals["samples"] == pytest.approx(16, abs=1)
        for leaf in LEAVES:
            assert groups.count(leaf) == report.groups[leaf].achieved["samples"]
            assert row[f"achieved:{leaf}"] == report.groups[leaf].achieved_share
        assert "paired/never" not in groups
    # the variant files say the full stage; only the proxy is cut at --budget
    assert load_mixture(tmp_path / "sw" / "variant_000.yaml").stage("pre").budget == 1000


def test_a_folder_holding_another_sweep_is_refused(mixture, tmp_path):
    run_sweep(mixture, "pre", tmp_path / "sw", n=3, seed=1)
    run_sweep(mixture, "pre", tmp_path / "sw", n=3, seed=1)  # the same sweep: rewritten as it was
    with pytest.raises(SweepError, match="another sweep.*seed"):
        run_sweep(mixture, "pre", tmp_path / "sw", n=3, seed=2)
    run_sweep(mixture, "pre", tmp_path / "sw", n=2, seed=2, fresh=True)
    assert sorted(p.name for p in (tmp_path / "sw").glob("variant_*")) == ["variant_000.yaml", "variant_001.yaml"]


def test_bad_arguments(mixture, tmp_path):
    with pytest.raises(ConfigError, match=r"mix\.yaml: no stage 'nope' \(stages: pre, sched\)"):
        run_sweep(mixture, "nope", tmp_path / "sw", n=2, seed=1)
    with pytest.raises(SweepError, match="--mix needs"):
        run_sweep(mixture, "pre", tmp_path / "sw", n=2, seed=1, mix=True)
    with pytest.raises(SweepError, match="concentration"):
        run_sweep(mixture, "pre", tmp_path / "sw", n=2, seed=1, concentration=0)
    assert not (tmp_path / "sw").exists()


def test_cli_sweep(ray_local, mixture, curated, tmp_path):
    out = tmp_path / "sw"
    r = runner.invoke(app, ["sweep", str(mixture), "--stage", "pre", "--n", "3", "--seed", "9", "-o", str(out), "--concentration", "4"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "wrote 3 variants" in text and " 002 " in text and "caps not checked" in text
    assert sorted(p.name for p in out.glob("variant_*.yaml")) == [f"variant_{i:03d}.yaml" for i in range(3)]
    assert json.loads((out / "sweep.json").read_text())["concentration"] == 4.0

    r = runner.invoke(app, ["sweep", str(mixture), "--stage", "nope", "--n", "3", "--seed", "9", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2
    text = "".join(r.output.split())
    assert "nostage'nope'" in text and "".join(str(mixture).split()) in text
    r = runner.invoke(app, ["sweep", str(mixture), "--stage", "pre", "--n", "2", "--seed", "9", "-o", str(tmp_path / "x"), "--mix"])
    assert r.exit_code == 2 and "--input" in r.output

    out = tmp_path / "mixed"
    args = ["sweep", str(mixture), "-s", "pre", "-n", "2", "--seed", "9", "-o", str(out), "--mix", "-i", str(curated), "--budget", "20"]
    r = runner.invoke(app, [*args, "--set", "stages.pre.shards.max_samples=5"])
    assert r.exit_code == 0, r.output
    assert "of 2 variants hit a cap" in " ".join(r.output.split())
    for i in range(2):
        assert read_report(out / f"variant_{i:03d}").budget == 20
        assert all(s.samples <= 5 for s in [*_stats(out / f"variant_{i:03d}")])


def _stats(folder: Path):
    from mixtures.shards import ShardStats

    return [ShardStats.from_json(json.loads(p.read_text())) for p in sorted(folder.glob("*.stats.json"))]
