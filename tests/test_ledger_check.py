"""A ledger check that can fail (issue 14, item 7): the inputs each unit of the plan holds are
counted on the driver from the unit's payload (``curate.ingest.planned_inputs``), without the
reader, and the rows of each unit must account for them (``curate.outputs``). A reader that
silently skips an input makes the run unbalanced, and `curate run` exits 3 naming the unit."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from curate.demo.synth import make_image
from curate.engine import Engine
from curate.ingest import planned_inputs
from curate.outputs import ledger_counts
from operators.ingest.folders import ImageFolderReader, MediaFolderReader
from operators.ingest.html_docs import HtmlReader
from operators.ingest.manifests import JsonlReader, ParquetReader
from operators.ingest.webdataset_tar import WebDatasetReader
from schemas.record import new_record, to_table

runner = CliRunner()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:  # a symlink: quarantined by the reader, an input of its own
                info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
                tf.addfile(info)
                continue
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _readers(tmp_path: Path) -> list:
    folder = tmp_path / "media"
    folder.mkdir()
    for i in range(5):
        make_image(folder / f"im{i}.jpg", 32, 32, seed=i)
    (folder / "im0.txt").write_text("a caption")
    (folder / "orphan.txt").write_text("no media beside me")
    (folder / "notes.xyz").write_text("unsupported")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")  # a video in an image folder

    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(3):
        (pages / f"p{i}.html").write_text(f"<html><body><p>page {i} words</p></body></html>")

    lines = [json.dumps({"text": f"row {i} " + "x" * (i * 7)}) for i in range(12)]
    lines[3], lines[7] = "", "   "  # blank lines are no inputs
    lines[5] = "{not json"  # a bad line is an input (quarantined)
    (tmp_path / "m.jsonl").write_text("\n".join(lines))  # no newline at the end

    table = pa.table({"text": [f"parquet row {i}" for i in range(10)]})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=4)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not a footer")

    png = _png()
    tars = tmp_path / "tars"
    tars.mkdir()
    members = [("a.png", png), ("a.txt", b"cap"), ("b.png", png), ("link.png", None), ("noext", b"x"), ("c.txt", b"t"), ("a.cls", b"1")]
    full = _tar(tars / "good.tar", members).read_bytes()
    (tars / "cut.tar").write_bytes(full[:2600])  # ends inside a member: the reader stops there

    return [
        ImageFolderReader(source="media", path=str(folder), units_per_file=3),
        MediaFolderReader(source="all", path=str(folder), units_per_file=4),
        HtmlReader(source="html", path=str(pages), units_per_file=2),
        JsonlReader(source="jsonl", path=str(tmp_path / "m.jsonl"), params={"bytes_per_unit": 50}),
        ParquetReader(source="pq", path=str(tmp_path), params={"batch_size": 3}),
        WebDatasetReader(source="wds", path=str(tars)),
    ]


def test_planned_inputs_are_what_each_reader_reads(tmp_path):
    checked = 0
    for reader in _readers(tmp_path):
        for unit in reader.plan():
            locators = {rec["locator"] for rec in reader.read(unit["payload"])}
            assert planned_inputs(unit["payload"]) == len(locators), (reader.name, unit["payload"], sorted(locators))
            checked += 1
    assert checked > 15


def test_planned_inputs_of_unknown_or_unreadable_units_are_not_counted(tmp_path):
    assert planned_inputs({"something": "else"}) is None
    assert planned_inputs({"file": str(tmp_path / "gone.jsonl"), "start": 0, "end": 10}) is None
    (tmp_path / "a.json").write_text('[{"text": "an array"},\n {"text": "not lines"}]')
    assert planned_inputs({"file": str(tmp_path / "a.json"), "start": 0, "end": 40}) is None


def _rows(unit: str, locators: list[str], derived: int = 0) -> list[dict]:
    rows = []
    for loc in locators:
        rec = new_record(source="s", locator=loc)
        rec.update(unit=unit, id=f"{unit}:{loc}")
        rows.append(rec)
    for i in range(derived):
        child = new_record(source="s", locator=f"{locators[0]}#part{i}")
        child.update(unit=unit, id=f"{unit}:child{i}", parent_id=rows[0]["id"])
        rows.append(child)
    return rows


def test_the_ledger_fails_on_short_and_unplanned_units(tmp_path):
    path = tmp_path / "rows.parquet"
    rows = _rows("u1", ["a", "b"], derived=3) + _rows("u2", ["c", "c"]) + _rows("old", ["z"])
    pq.write_table(to_table(rows), path)
    plan = {
        "u1": {"source": "s", "planned": 2, "where": "a, b"},
        "u2": {"source": "s", "planned": 2, "where": "c, d"},  # d vanished; c twice does not make up for it
        "u3": {"source": "s", "planned": None, "where": "not counted"},
    }
    ledger = ledger_counts([path], plan)
    assert ledger["counts"]["input"] + ledger["counts"]["derived"] == ledger["counts"]["kept"]  # the statuses add up
    assert ledger["balanced"] is False
    check = ledger["plan"]
    assert (check["planned_inputs"], check["accounted_inputs"]) == (4, 3)
    assert check["short"] == [{"unit": "u2", "source": "s", "where": "c, d", "planned": 2, "accounted": 1}]
    assert check["unplanned"] == [{"unit": "old", "input_rows": 1}]
    assert check["unchecked"] == ["u3"]
    assert check["by_source"] == {"s": {"units": 3, "planned": 4, "accounted": 3}}

    fine = {"u1": plan["u1"], "u2": {**plan["u2"], "planned": 1}, "old": {"source": "s", "planned": 1}}
    assert ledger_counts([path], fine)["balanced"] is True
    assert ledger_counts([path])["balanced"] is True  # no plan: only the statuses are checked


@pytest.fixture()
def image_pipeline(tmp_path: Path) -> Path:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(5):
        make_image(imgs / f"im{i}.jpg", 64 + 8 * i, 48, seed=i)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"text": f"line {i} of text"}) for i in range(4)) + "\n")
    cfg = {
        "name": "ledger",
        "ray": {"units_per_file": 3},
        "sources": [
            {"name": "imgs", "reader": "image_folder", "path": "imgs"},
            {"name": "lines", "reader": "jsonl", "path": "m.jsonl"},
        ],
        "stages": [{"op": "probe"}],
    }
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "pipe.yaml"


def test_a_faithful_run_accounts_for_every_planned_input(ray_local, image_pipeline, tmp_path):
    r = runner.invoke(app, ["run", str(image_pipeline), "-o", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "out" / "summary.json").read_text())["plan"]
    assert (plan["units"], plan["planned_inputs"], plan["accounted_inputs"], plan["short_units"]) == (3, 9, 9, 0)
    assert plan["by_source"] == {"imgs": {"units": 2, "planned": 5, "accounted": 5}, "lines": {"units": 1, "planned": 4, "accounted": 4}}
    assert "planned inputs 9 in 3 units, accounted for 9" in " ".join(r.output.split())


def test_a_reader_that_drops_an_input_unbalances_the_ledger_and_run_exits_3(ray_local, image_pipeline, tmp_path, monkeypatch):
    original = Engine._readers

    def readers(self):
        got = original(self)
        reader = got["imgs"]

        class SkipsTheSecond(type(reader)):  # defined here: workers get it by value
            def read(self, payload):
                for i, rec in enumerate(super().read(payload)):
                    if i != 1:
                        yield rec

        reader.__class__ = SkipsTheSecond
        return got

    monkeypatch.setattr(Engine, "_readers", readers)
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(image_pipeline), "-o", str(out), "--no-progress"])
    assert r.exit_code == 3, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["balanced"] is False
    assert summary["counts"]["input"] == 7  # the statuses still add up: only the plan shows the loss
    plan = summary["plan"]
    assert (plan["planned_inputs"], plan["accounted_inputs"], plan["short_units"]) == (9, 7, 2)
    assert {(u["source"], u["planned"], u["accounted"]) for u in plan["short"]} == {("imgs", 3, 2), ("imgs", 2, 1)}
    text = " ".join(r.output.split())
    assert "Units short of their planned inputs (2)" in text and "NOT BALANCED" in text
    assert all(u["unit"] in r.output for u in plan["short"])
