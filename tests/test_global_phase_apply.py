"""The column-wise ``apply_decisions`` gives exactly what the row-by-row version gave (kept here as
the reference): statuses, details, lineage, group sizes, absorbed texts, and the roundtrip to
SAMPLE_SCHEMA (missing columns null, null scores empty, other columns untouched)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from operators.base import mark
from operators.dedup.decisions import absorb_texts, apply_decisions, decision_table, texts_json
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_media, new_record, to_table


def apply_rows(table, decisions, *, stage, reason, group_key, describe, eligible=None) -> pa.Table:
    """The row-by-row implementation the column-wise one replaced."""
    by_id: dict[str, dict[str, Any]] = {d["id"]: d for d in decisions.to_pylist()}
    rows = from_table(table)
    took_part = eligible if eligible is not None else np.ones(len(rows), dtype=bool)
    for row, ok in zip(rows, took_part, strict=True):
        if row["status"] != Status.KEPT.value:
            continue
        row["lineage"] = [*(row.get("lineage") or []), stage]
        d = by_id.get(row["id"])
        if d is None:
            if ok:
                row["scores"][group_key] = 1.0
        elif d.get("error_reason"):
            mark(row, Status.QUARANTINED, stage, ReasonCode(d["error_reason"]), d.get("error_detail") or "")
        elif d["duplicate_of"] is None:
            row["scores"][group_key] = float(d["group_size"])
            if d.get("texts") or d.get("texts_omitted"):
                absorb_texts(row, json.loads(d.get("texts") or "[]"), d.get("texts_omitted") or 0)
        else:
            mark(row, Status.DUPLICATE, stage, reason, describe(d))
            row["duplicate_of"] = d["duplicate_of"]
    return to_table(rows)


def corpus(n: int, seed: int) -> tuple[pa.Table, pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        status = rng.choice(["kept", "kept", "kept", "dropped", "duplicate", None])
        scores = None if rng.random() < 0.2 else {k: float(rng.integers(0, 9)) for k in rng.choice(["a", "dup_count", "b", "pixels"], rng.integers(0, 4), replace=False)}
        r = new_record(
            source="s", locator=f"l{i}", id=f"id{i:04d}", layout="image", seq=int(rng.integers(0, 1000)), status=status,
            media=[new_media("image", f"/x/{i}.jpg")] if rng.random() < 0.8 else [],
            caption=None if rng.random() < 0.5 else f"cap {i}", language=rng.choice([None, "en", "de"]),
            lineage=None if rng.random() < 0.3 else [f"s{j}" for j in range(int(rng.integers(0, 3)))],
            meta=None if rng.random() < 0.5 else json.dumps({"k": i}),
        )  # fmt: skip
        r["scores"] = scores
        rows.append(r)
    table = to_table(rows)
    if seed % 2:  # a table that is not in SAMPLE_SCHEMA: columns missing, one extra, scores null
        table = table.drop_columns(["license", "interaction"]).append_column("extra", pa.array(range(n)))
    picked = rng.choice(n, n // 2, replace=False)
    dec = []
    for k, i in enumerate(picked):
        kind = k % 4
        d = {"id": f"id{i:04d}", "group_size": int(rng.integers(2, 5))}
        if kind == 0:
            d["error_reason"], d["error_detail"] = "corrupt_media", (None if k % 3 else "bad bytes")
        elif kind == 1:
            d.update(duplicate_of=f"id{picked[0]:04d}", survivor_locator="loc", detail=f"distance {k}", score=float(k))
        elif kind == 2:
            d["texts"] = texts_json([{"field": "caption", "text": f"absorbed {k}", "source": "s", "language": "en", "from_id": "z", "truncated": False}]) if k % 8 == 2 else None
            d["texts_omitted"] = 3 if k % 16 == 6 else None
        dec.append(d)
    dec.append({"id": dec[1]["id"], "group_size": 7})  # an id decided twice: the last decision counts
    decisions = decision_table(len(dec), **{c: pa.array([d.get(c) for d in dec], t) for c, t in (
        ("id", pa.string()), ("duplicate_of", pa.string()), ("survivor_locator", pa.string()), ("group_size", pa.int64()),
        ("score", pa.float64()), ("detail", pa.string()), ("error_reason", pa.string()), ("error_detail", pa.string()),
        ("texts", pa.string()), ("texts_omitted", pa.int64()))})  # fmt: skip
    return table, decisions, rng.random(n) < 0.7


@pytest.mark.parametrize("seed", range(6))
def test_column_wise_apply_equals_the_row_by_row_apply(seed):
    table, decisions, eligible = corpus(400, seed)
    kw = {"stage": "dedup_x", "reason": ReasonCode.NEAR_DUPLICATE, "group_key": "dup_count",
          "describe": lambda d: f"near-duplicate of {d['survivor_locator']}: {d['detail']}"}  # fmt: skip
    for elig in (None, eligible):
        want = apply_rows(table, decisions, eligible=elig, **kw)
        got = apply_decisions(table, decisions, eligible=elig, **kw)
        assert got.schema.equals(want.schema)
        assert got.to_pylist() == want.to_pylist()


def test_apply_with_no_decisions_and_an_empty_table():
    table, _, _ = corpus(50, 2)
    kw = {"stage": "s", "reason": ReasonCode.EXACT_DUPLICATE, "group_key": "g", "describe": str}
    empty = pa.table({"id": pa.array([], pa.string())})
    assert apply_decisions(table, empty, **kw).to_pylist() == apply_rows(table, empty, **kw).to_pylist()
    assert apply_decisions(table.slice(0, 0), empty, **kw).num_rows == 0


def test_apply_with_decisions_that_carry_only_some_columns():
    table, decisions, _ = corpus(80, 4)
    some = decisions.select(["id", "duplicate_of", "survivor_locator", "group_size", "detail"])
    kw = {"stage": "s", "reason": ReasonCode.NEAR_DUPLICATE, "group_key": "g", "describe": lambda d: f"of {d['survivor_locator']}"}
    assert apply_decisions(table, some, **kw).to_pylist() == apply_rows(table, some, **kw).to_pylist()
