"""What every dedup operator decides, in one shape, and how a decision changes a record.

A decision is one row per id whose record changes: a duplicate (``duplicate_of`` = the survivor's
id), a survivor of a group (``duplicate_of`` null, ``group_size`` > 1), or a row that could not be
signed (``error_reason`` / ``error_detail``: it is quarantined). Rows without a decision stay as
they are (a kept row gets group size 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from operators.base import mark
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, to_table

__all__ = ["DECISION_SCHEMA", "apply_decisions", "decision_table"]

DECISION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("_file", pa.string()),  # the file the id lives in
        pa.field("duplicate_of", pa.string()),  # null for a survivor (and an error)
        pa.field("survivor_locator", pa.string()),
        pa.field("group_size", pa.int64()),
        pa.field("score", pa.float64()),  # near-duplicates: distance or similarity to the survivor
        pa.field("detail", pa.string()),  # near-duplicates: the numbers behind the score
        pa.field("error_reason", pa.string()),  # a ReasonCode: the row could not be signed
        pa.field("error_detail", pa.string()),
    ]
)


def decision_table(n: int, **columns: Any) -> pa.Table:
    """A DECISION_SCHEMA table of ``n`` rows from the given columns (the others null)."""
    cols = {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in DECISION_SCHEMA}
    return pa.table(cols, schema=DECISION_SCHEMA)


def apply_decisions(
    table: pa.Table,
    decisions: pa.Table,
    *,
    stage: str,
    reason: ReasonCode,
    group_key: str,
    describe: Callable[[dict[str, Any]], str],
    eligible: np.ndarray | None = None,
) -> pa.Table:
    """Every kept row: lineage gets ``stage``; a duplicate gets status ``duplicate`` with ``reason``
    and ``describe(decision)``; a survivor gets ``scores[group_key]`` = its group size; an error
    quarantines it; an undecided row that took part (``eligible``, default: every kept row) gets 1."""
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
        else:
            mark(row, Status.DUPLICATE, stage, reason, describe(d))
            row["duplicate_of"] = d["duplicate_of"]
    return to_table(rows)
