"""The global map-reduce on Ray (``curate.global_phase.decide_globally``): decisions laid out per
input file so apply reads only its own, the row-reference path of the near-duplicate operators
equal to the in-process run, hot buckets through the engine, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.demo.synth_variants import edit_text, random_document
from curate.global_phase import ApplyFn, decide_globally, run_in_process
from operators.base import StageContext
from operators.dedup.exact import ExactDedup
from operators.dedup.text_minhash import TextMinhashDedup
from schemas.record import content_hash, from_table, new_record, to_table

KINDS = ("typo", "word_edit", "append", "case_space")


def text_corpus(files: int = 5, docs: int = 12) -> list[list[dict]]:
    """Documents and their edited copies spread over ``files`` files (a copy mostly in another
    file than its original), plus exact copies for dedup_exact."""
    out: list[list[dict]] = [[] for _ in range(files)]
    seq = 0
    for s in range(docs):
        doc = random_document(s)
        variants = [("", doc)] + ([(k, edit_text(doc, k, seed=s)) for k in KINDS[: s % 4]] if s < 8 else [])
        if s % 3 == 0:
            variants.append(("exact", doc))
        for j, (kind, text) in enumerate(variants):
            r = new_record(source="s", locator=f"d{s}{'_' + kind if kind else ''}", layout="text", text=text, seq=seq)
            r["id"] = f"d{s}_{j}"
            r["content_hash"] = content_hash(r)
            out[(s + j) % files].append(r)
            seq += 1
    return out


def write_files(tmp: Path, groups: list[list[dict]]) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rows in enumerate(groups):
        p = tmp / f"unit-{i:03d}.parquet"
        pq.write_table(to_table(rows), p)
        paths.append(p)
    return paths


def applied(op, files: list[Path], decisions_dir: Path) -> dict[str, dict]:
    fn = ApplyFn(op, decisions_dir)
    return {r["id"]: r for r in from_table(fn(pa.table({"path": [str(f) for f in files]})))}


def in_process(op, groups: list[list[dict]]) -> dict[str, dict]:
    rows = [dict(r) for g in groups for r in g]
    return {r["id"]: r for r in from_table(run_in_process(op, to_table(rows)).table)}


def same_outcome(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        assert (g["status"], g["status_reason"], g["duplicate_of"], g["scores"]) == (
            w["status"], w["status_reason"], w["duplicate_of"], w["scores"]
        ), k  # fmt: skip


@pytest.mark.parametrize("op_name", ["dedup_text_minhash", "dedup_exact"])
def test_decisions_are_written_per_input_file_and_apply_reads_only_its_own(ray_local, tmp_path, monkeypatch, op_name):
    groups = text_corpus()
    files = write_files(tmp_path / "in", groups)
    ctx = StageContext(stage=op_name, artifacts_dir=str(tmp_path / "artifacts"))
    op = TextMinhashDedup(None, ctx) if op_name == "dedup_text_minhash" else ExactDedup(None, ctx)
    decisions_dir = decide_globally(op, files, tmp_path / "seg", cpus=2)

    # layout: one decision file per input file that has decisions, holding only that file's ids
    written = sorted(p.stem for p in decisions_dir.glob("*.parquet"))
    assert written and set(written) <= {f.stem for f in files}
    ids_of = {f.stem: {r["id"] for r in g} for f, g in zip(files, groups, strict=True)}
    for stem in written:
        t = pq.read_table(decisions_dir / f"{stem}.parquet")
        assert set(t["id"].to_pylist()) <= ids_of[stem] and set(t["_file"].to_pylist()) == {stem}
    assert not any((tmp_path / "seg" / d).exists() for d in ("_keys", "_rows", "_partials", "_dparts"))
    info = json.loads((decisions_dir / "_SUCCESS").read_text())
    assert info["layout"].startswith("per-file") and info["steps"]["map"]["tasks"] == len(files)
    assert all(s["peak_rss_max"] > 0 for s in info["steps"].values())

    # apply opens its input file and its own decision file, nothing else
    opened: list[str] = []
    real = pq.read_table

    def spy(source, *args, **kwargs):
        opened.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    target = files[1]
    ApplyFn(op, decisions_dir)(pa.table({"path": [str(target)]}))
    own = decisions_dir / f"{target.stem}.parquet"
    assert opened == [str(target)] + ([str(own)] if own.exists() else [])
    monkeypatch.setattr(pq, "read_table", real)

    # the same outcome as all steps in one process on the concatenated rows
    same_outcome(applied(op, files, decisions_dir), in_process(op, groups))
    dups = [r for r in applied(op, files, decisions_dir).values() if r["status"] == "duplicate"]
    assert len(dups) == (4 if op_name == "dedup_exact" else 4 + 12)  # exact copies (+ the 12 edits)


def test_near_dup_edges_reference_rows_and_match_the_in_process_decisions(ray_local, tmp_path):
    groups = text_corpus(files=7, docs=16)
    files = write_files(tmp_path / "in", groups)
    op = TextMinhashDedup({"threshold": 0.6}, StageContext(stage="tm", artifacts_dir=str(tmp_path / "art")))
    # many small partitions: every group spans partitions and files
    decisions_dir = decide_globally(op, files, tmp_path / "seg", cpus=2, key_rows_per_partition=50)
    info = json.loads((decisions_dir / "_SUCCESS").read_text())
    assert info["partitions"] >= 8 and info["steps"]["reduce"]["tasks"] == info["partitions"]
    got = {}
    for p in decisions_dir.glob("*.parquet"):
        got.update({d["id"]: d for d in pq.read_table(p).to_pylist()})
    rows = [dict(r) for g in groups for r in g]
    want = {d["id"]: d for d in run_in_process(op, to_table(rows)).decisions.to_pylist()}
    assert got.keys() == want.keys()
    for k, w in want.items():
        assert (got[k]["duplicate_of"], got[k]["group_size"], got[k]["detail"]) == (w["duplicate_of"], w["group_size"], w["detail"])
        assert got[k]["score"] == w["score"] or got[k]["score"] != got[k]["score"] and w["score"] != w["score"]  # or both NaN
    report = json.loads((tmp_path / "art" / "dedup.json").read_text())
    assert report["stats"]["duplicates"] == sum(1 for d in want.values() if d["duplicate_of"])
    assert report["stats"]["key_rows"] == sum(len(g) for g in groups) * op.params.bands


def test_a_hot_bucket_through_the_engine_gives_one_group_of_star_edges(ray_local, tmp_path):
    doc = random_document(42)
    g = 600
    groups = [[new_record(source="s", locator=f"c{f}_{i}", id=f"c{f}_{i:03d}", layout="text", text=doc, seq=f * 1000 + i) for i in range(g // 6)] for f in range(6)]
    groups[0].append(new_record(source="s", locator="other", id="other", layout="text", text=random_document(43), seq=-1))
    files = write_files(tmp_path / "in", groups)
    op = TextMinhashDedup({"max_bucket": 100}, StageContext(stage="tm", artifacts_dir=str(tmp_path / "art")))
    decisions_dir = decide_globally(op, files, tmp_path / "seg", cpus=2)
    stats = json.loads((tmp_path / "art" / "dedup.json").read_text())["stats"]
    assert stats["hot_buckets"] == op.params.bands and stats["hot_members"] == g * op.params.bands
    assert stats["edges"] == g - 1 and stats["candidate_pairs"] <= op.params.bands * g
    out = applied(op, files, decisions_dir)
    assert {r["duplicate_of"] for r in out.values()} == {None, "c0_000"}
    assert out["c0_000"]["scores"]["text_dup_group_size"] == g and out["other"]["status"] == "kept"


def test_a_decision_folder_of_the_old_layout_is_decided_again(ray_local, tmp_path):
    groups = text_corpus(files=3, docs=6)
    files = write_files(tmp_path / "in", groups)
    old = tmp_path / "seg" / "_decisions"
    old.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["x"], "_file": ["unit-000"]}), old / "combined.parquet")
    (old / "_SUCCESS").write_text("1\n")  # what the earlier engine wrote
    op = TextMinhashDedup()
    decisions_dir = decide_globally(op, files, tmp_path / "seg", cpus=2)
    assert not (decisions_dir / "combined.parquet").exists()
    assert json.loads((decisions_dir / "_SUCCESS").read_text())["layout"].startswith("per-file")
    mtime = (decisions_dir / "_SUCCESS").stat().st_mtime_ns
    assert decide_globally(op, files, tmp_path / "seg", cpus=2) == decisions_dir  # finished: reused
    assert (decisions_dir / "_SUCCESS").stat().st_mtime_ns == mtime
    assert list(decisions_dir.glob("unit-*.parquet"))
