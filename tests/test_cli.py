"""The CLI as a user meets it: validate, operators, schema, and a run's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.jsonschema import pipeline_json_schema

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_validate_demo_pipeline_ok():
    r = runner.invoke(app, ["validate", str(ROOT / "examples/pipelines/demo.yaml")])
    assert r.exit_code == 0, r.output
    assert "pipeline 'demo', 10 sources, 7 stages" in " ".join(r.output.split())


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples/pipelines").glob("*.yaml")))
def test_every_example_pipeline_validates(name):
    r = runner.invoke(app, ["validate", str(ROOT / "examples/pipelines" / name)])
    assert r.exit_code == 0, r.output


def test_validate_reports_file_line_and_key(tmp_path):
    bad = (ROOT / "examples/pipelines/demo.yaml").read_text().replace("policy: first_seen", "policy: newest")
    p = tmp_path / "bad.yaml"
    p.write_text(bad)
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 2
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "policy: newest" in text)
    assert f"{p}:{line}:stages[1].params.policy" in "".join(r.output.split())


def test_operators_lists_params_and_scores():
    r = runner.invoke(app, ["operators", "--json"])
    assert r.exit_code == 0
    entries = {e["name"]: e for e in json.loads(r.output)}
    assert {"image_folder", "jsonl", "webdataset", "html", "probe", "dedup_exact", "filter", "route"} <= set(entries)
    assert "min_side" in entries["probe"]["writes"]
    assert entries["dedup_exact"]["global"] is True
    policy = next(p for p in entries["dedup_exact"]["params"] if p["name"] == "policy")
    assert policy["default"] == "'first_seen'"


def test_committed_json_schema_is_current():
    committed = json.loads((ROOT / "schemas/json/pipeline.schema.json").read_text())
    assert committed == json.loads(json.dumps(pipeline_json_schema())), "run: curate schema --output schemas/json"
    stage_ops = {s["properties"]["op"]["const"] for s in committed["properties"]["stages"]["items"]["oneOf"]}
    assert {"probe", "filter", "route", "dedup_exact"} <= stage_ops


def test_run_with_missing_source_path_says_how_to_fix(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: x\nsources:\n  - {name: pics, reader: image_folder, path: nowhere}\n")
    r = runner.invoke(app, ["run", str(p), "-o", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "source 'pics'" in text and "--set sources.pics.path=PATH" in text


def test_explain_needs_a_finished_run(tmp_path):
    r = runner.invoke(app, ["explain", str(tmp_path), "abcd"])
    assert r.exit_code == 1 and "holds no finished run" in r.output
    r = runner.invoke(app, ["--help"])
    assert "explain" in r.output
