"""The operator bases: error policy, lineage, and derived rows keeping the ledger balanced."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from curate.outputs import ledger_counts
from operators.base import ExpandOperator, RowOperator, SkipSample
from schemas.record import derive, from_table, new_record, to_table


class Picky(RowOperator):
    name = "picky"

    def process(self, row):
        if row["text"] == "boom":
            raise ValueError("cannot handle boom")
        if row["text"] == "skip":
            raise SkipSample("corrupt_media", "bad bytes")
        if row["text"] == "oom":
            raise MemoryError
        row["scores"]["length"] = float(len(row["text"]))


class Splitter(ExpandOperator):
    name = "splitter"

    def expand(self, row):
        words = row["text"].split()
        if len(words) == 1:
            return None
        return [derive(row, suffix=f"w{i}", text=w) for i, w in enumerate(words)]


def rows(*texts):
    out = []
    for i, t in enumerate(texts):
        r = new_record(source="s", locator=f"l{i}", layout="text", text=t, id=f"id{i}", seq=i, unit="u")
        out.append(r)
    return out


def test_row_errors_quarantine_only_that_row():
    out = from_table(Picky()(to_table(rows("fine", "boom", "skip"))))
    assert out[0]["status"] == "kept" and out[0]["scores"] == {"length": 4.0}
    assert (out[1]["status"], out[1]["status_reason"], out[1]["status_detail"]) == (
        "quarantined", "operator_error", "ValueError: cannot handle boom"
    )
    assert (out[2]["status_reason"], out[2]["status_detail"]) == ("corrupt_media", "bad bytes")


def test_system_errors_stop_the_run():
    with pytest.raises(MemoryError):
        Picky()(to_table(rows("fine", "oom")))


def test_expand_marks_parent_split_and_children_balance_the_ledger(tmp_path):
    out = from_table(Splitter()(to_table(rows("two words", "single"))))
    parent, single, *children = out
    assert (parent["status"], parent["status_reason"], parent["status_detail"]) == ("split", "split", "2 parts")
    assert single["status"] == "kept" and single["parent_id"] is None
    assert [c["text"] for c in children] == ["two", "words"]
    assert all(c["parent_id"] == "id0" and c["status"] == "kept" and c["unit"] == "u" for c in children)
    assert children[0]["locator"] == "l0#w0" and children[0]["id"] != children[1]["id"]
    pq.write_table(to_table(out), tmp_path / "x.parquet")
    ledger = ledger_counts([tmp_path / "x.parquet"])
    assert ledger["counts"]["input"] == 2 and ledger["counts"]["derived"] == 2
    assert ledger["counts"]["split"] == 1 and ledger["counts"]["kept"] == 3
    assert ledger["balanced"]
