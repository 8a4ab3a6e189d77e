"""Finalize from per-file partial counts: Ray tasks and one process give the same files and the
same summary, the counts are those of the rows, reasons keep their first-seen order, hours count
an id once, and the index points at each row's published copy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curate.config import load_pipeline
from curate.explain_index import ExplainIndex
from curate.outputs import finalize
from schemas.record import new_media, new_record, to_table


def _rows() -> list[list[dict]]:
    files = []
    n = 0
    for f in range(4):
        rows = []
        for i in range(30):
            kind = (f * 30 + i) % 6
            r = new_record(
                source=["a", "b"][i % 2], locator=f"f{f}/r{i}", layout=["image-text", None][i % 5 == 0],
                modalities=["image", "text"] if i % 3 else [], media=[new_media("audio", "x.wav", duration_s=60.0)] if i % 4 == 0 else [],
                buckets=[["understanding"], ["generation", "understanding"], []][i % 3], tasks=["captioning"] if i % 2 else [],
                scores={"media_referenced": 2.0, "media_missing": 2.0 if f == 0 else 0.0} if i % 2 == 0 else {},
            )  # fmt: skip
            status = ["kept", "kept", "dropped", "duplicate", "quarantined", "kept"][kind]
            r.update(id=f"id{n:05d}", status=status, unit=f"u{f}", parent_id="p" if i == 7 else None)
            if status != "kept":
                r.update(status_operator=["size", "dedup_exact", "probe", ""][(f + i) % 4], status_reason=f"reason{(f * 7 + i) % 5}", status_detail=f"d{n}")
            rows.append(r)
            n += 1
        files.append(rows)
    return files


@pytest.fixture()
def final(tmp_path: Path) -> tuple[Path, object]:
    d = tmp_path / "final"
    d.mkdir()
    for k, rows in enumerate(_rows()):
        pq.write_table(to_table(rows), d / f"file{k}.parquet")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"name": "p", "sources": [{"name": "a", "reader": "jsonl", "path": "m.jsonl"}]}))
    return d, load_pipeline(tmp_path / "p.yaml")


def _loop_ledger(rows: list[dict]) -> dict:
    """The ledger as a loop over the rows counts it (what finalize did before partial counts)."""
    statuses = ["kept", "dropped", "duplicate", "quarantined", "split"]

    def zero():
        return {"input": 0, "derived": 0, **dict.fromkeys(statuses, 0)}

    total, by = zero(), {"source": {}, "layout": {}, "modality": {}}
    bucket, task, reasons = Counter(), Counter(), {s: {} for s in statuses[1:]}
    for r in rows:
        origin = "derived" if r["parent_id"] else "input"
        total[origin] += 1
        total[r["status"]] += 1
        for dim, values in (("source", [r["source"]]), ("layout", [r["layout"] or "unknown"]), ("modality", r["modalities"] or ["none"])):
            for v in values:
                c = by[dim].setdefault(v, zero())
                c[origin] += 1
                c[r["status"]] += 1
        if r["status"] == "kept":
            bucket.update(r["buckets"] or ["unassigned"])
            task.update(r["tasks"] or [])
        else:
            ops = reasons[r["status"]].setdefault(r["status_operator"] or "?", {})
            ops[r["status_reason"] or "?"] = ops.get(r["status_reason"] or "?", 0) + 1
    return {
        "counts": total,
        **{f"by_{k}": dict(sorted(v.items())) for k, v in by.items()},
        "by_bucket": dict(sorted(bucket.items())),
        "by_task": dict(sorted(task.items())),
        **{st: dict(sorted(ops.items())) for st, ops in reasons.items()},
    }


def _tree(out: Path) -> dict[str, object]:
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and "_work" not in p.parts:
            rel = str(p.relative_to(out))
            files[rel] = pq.read_table(p).to_pylist() if p.suffix == ".parquet" else p.read_text()
    return files


def test_ray_tasks_and_one_process_write_the_same(ray_local, final, tmp_path):
    final_dir, loaded = final
    outs = {}
    for mode in (False, True):
        out = tmp_path / f"out_{mode}"
        s = finalize(out, loaded, final_dir, {"x": 1}, plan={f"u{k}": {"source": "a", "planned": 29, "where": ""} for k in range(4)}, parallel=mode)
        s = {k: v for k, v in s.items() if k not in ("finished_at", "output")}
        outs[mode] = (s, _tree(out))
    assert outs[False][0] == outs[True][0]
    tree_a, tree_b = outs[False][1], outs[True][1]
    tree_a.pop("summary.json"), tree_b.pop("summary.json")
    assert tree_a == tree_b

    s = outs[True][0]
    rows = [r for f in _rows() for r in f]
    expected = _loop_ledger(rows)
    assert json.dumps({k: s[k] for k in expected}) == json.dumps(expected)  # same numbers, same key order
    assert s["balanced"] is True and s["counts"]["derived"] == 4
    assert s["hours"]["total"] == {"audio": pytest.approx(12 * 60 / 3600)}  # kept rows with audio
    assert s["media_missing"] == {"a": {"referenced": 120, "missing": 30}}
    lines = [json.loads(x) for x in (tmp_path / "out_True" / "quarantine.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [r["id"] for r in rows if r["status"] == "quarantined"]
    assert list(lines[0]) == ["id", "source", "locator", "status_operator", "status_reason", "status_detail"]


def test_the_index_points_at_each_rows_published_copy(final, tmp_path):
    final_dir, loaded = final
    out = tmp_path / "out"
    finalize(out, loaded, final_dir, {}, parallel=False)
    index = ExplainIndex(out)
    for rows in _rows():
        for r in rows[:12]:
            (got,) = index.lookup(r["id"])
            published = pq.read_table(out / got["file"]).slice(got["row"], 1).to_pylist()[0]
            assert published["id"] == r["id"] and published["locator"] == r["locator"]
            if r["status"] == "kept":
                first = sorted(r["buckets"])[0] if r["buckets"] else "unassigned"
                assert got["file"].startswith(f"samples/bucket={first}/")
            else:
                assert got["file"].startswith("rejected/")
    assert index.lookup("id99999") == []
    rows = [r for f in _rows() for r in f]
    want = [r["id"] for r in rows if r["status_operator"] == "size" and r["status_reason"] == "reason2"]
    assert [x["id"] for x in index.examples("size:reason2", 3)] == want[:3]  # ingest order
    assert len(index.examples("reason2", 1000)) == sum(r["status_reason"] == "reason2" for r in rows)
