"""Exact deduplication over the whole dataset: same media bytes (or same normalised text for
text-only rows) means duplicate. The survivor is chosen by a stated policy; every other row of
the group is marked ``duplicate`` with the survivor's id.

Only small key rows (id, content hash, ranking numbers) travel between workers; the records stay
in their files and receive the decisions (see ``GlobalOperator``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from operators.base import GlobalOperator, Params
from operators.dedup.decisions import DECISION_SCHEMA, apply_decisions, decision_table
from operators.registry import register_operator
from schemas.enums import ReasonCode, Status

__all__ = ["ExactDedup", "ExactDedupParams"]

_NO_DECISIONS = DECISION_SCHEMA.empty_table().drop_columns(["_file"])

class ExactDedupParams(Params):
    policy: str = Field(
        "first_seen",
        pattern="^(first_seen|highest_resolution|longest|best_score)$",
        description="which row of a duplicate group survives: first_seen (ingest order), highest_resolution "
        "(scores.pixels), longest (scores.duration_s, else text_chars), best_score (scores[score_key])",
    )
    score_key: str | None = Field(None, description="score used by policy best_score (higher wins)")


def _score(table: pa.Table, key: str) -> pa.Array:
    """scores[key] per row as float64 (null where absent)."""
    values = pc.map_lookup(table["scores"], pa.scalar(key), "first")
    return pc.cast(values, pa.float64())


@register_operator
class ExactDedup(GlobalOperator[ExactDedupParams]):
    """Merge rows whose content hash is equal (media bytes; normalised text for text-only rows)."""

    name = "dedup_exact"
    writes = {"dup_count": "size of the row's exact-duplicate group (1 = unique; set on kept rows)"}

    def _primary(self, table: pa.Table) -> pa.Array:
        """The policy's number: higher is better (0 for first_seen)."""
        policy = self.params.policy
        if policy == "highest_resolution":
            v = _score(table, "pixels")
        elif policy == "longest":
            v = pc.coalesce(_score(table, "duration_s"), _score(table, "text_chars"))
        elif policy == "best_score":
            v = _score(table, self.params.score_key or "")
        else:
            return pa.array(np.zeros(table.num_rows))
        return pc.fill_null(v, float("-inf"))

    def summarize(self, table: pa.Table) -> pa.Table:
        usable = pc.and_(pc.equal(table["status"], Status.KEPT.value), pc.is_valid(table["content_hash"]))
        live = table.filter(pc.fill_null(usable, False))
        return pa.table(
            {
                "id": live["id"],
                "_key": live["content_hash"],
                "primary": self._primary(live),
                "seq": live["seq"],
                "locator": live["locator"],
            }
        )

    def decide(self, summary: pa.Table) -> pa.Table:
        if summary.num_rows == 0:
            return _NO_DECISIONS
        # rank inside each key: best primary first, then ingest order, then id (deterministic)
        t = summary.append_column("neg_primary", pc.negate(summary["primary"]))
        t = t.sort_by([("_key", "ascending"), ("neg_primary", "ascending"), ("seq", "ascending"), ("id", "ascending")])
        keys = t["_key"].combine_chunks()
        n = t.num_rows
        first = np.ones(n, dtype=bool)
        if n > 1:
            first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        group = np.cumsum(first) - 1
        sizes = np.bincount(group)
        row_size = sizes[group]
        in_dup_group = row_size > 1
        if not in_dup_group.any():
            return _NO_DECISIONS
        leader = np.flatnonzero(first)[group]  # index of each row's survivor
        ids = t["id"].combine_chunks()
        locs = t["locator"].combine_chunks()
        pick = np.flatnonzero(in_dup_group)
        lead = leader[pick]
        is_survivor = lead == pick
        return decision_table(
            len(pick),
            id=ids.take(pick),
            duplicate_of=pc.if_else(pa.array(is_survivor), pa.scalar(None, pa.string()), ids.take(lead)),
            survivor_locator=locs.take(lead),
            group_size=pa.array(row_size[pick].astype(np.int64)),
        ).drop_columns(["_file"])  # the engine adds each id's file

    def apply(self, table: pa.Table, decisions: pa.Table) -> pa.Table:
        return apply_decisions(
            table,
            decisions,
            stage=self.stage,
            reason=ReasonCode.EXACT_DUPLICATE,
            group_key="dup_count",
            describe=lambda d: f"same content as {d['survivor_locator']}",
        )
