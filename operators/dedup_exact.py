"""Exact deduplication over the whole dataset: same media bytes (or same normalised text for
text-only rows) means duplicate. The survivor is chosen by a stated policy; every other row of
the group is marked ``duplicate`` with the survivor's id."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from operators.base import GlobalOperator, Params, mark
from operators.registry import register_operator
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, to_table

__all__ = ["ExactDedup", "survivor_rank"]


class ExactDedupParams(Params):
    policy: str = Field(
        "first_seen",
        pattern="^(first_seen|highest_resolution|longest|best_score)$",
        description="which row of a duplicate group survives",
    )
    score_key: str | None = Field(None, description="score used by policy best_score (higher wins)")


def survivor_rank(row: dict[str, Any], policy: str, score_key: str | None) -> tuple:
    """Sort key: the smallest wins. Ties fall back to ingest order, then id (deterministic)."""
    scores = row.get("scores") or {}
    if policy == "highest_resolution":
        primary = -float(scores.get("pixels") or 0.0)
    elif policy == "longest":
        primary = -float(scores.get("duration_s") or scores.get("text_chars") or 0.0)
    elif policy == "best_score":
        primary = -float(scores.get(score_key or "", float("-inf")) or 0.0)
    else:
        primary = 0.0
    return (primary, row.get("seq") or 0, row["id"])


@register_operator
class ExactDedup(GlobalOperator):
    """Merge rows whose content hash is equal (media bytes; normalised text for text-only rows)."""

    name = "dedup_exact"
    Params = ExactDedupParams
    writes = {"dup_count": "size of the row's duplicate group (survivors only; 1 = unique)"}

    def keys(self, batch: pa.Table) -> pa.Array:
        kept = pc.equal(batch["status"], Status.KEPT.value)
        usable = pc.and_(kept, pc.is_valid(batch["content_hash"]))
        # rows that are no longer kept get a unique key (their id), so they stay singletons
        return pc.if_else(usable, batch["content_hash"], pc.binary_join_element_wise("row:", batch["id"], ""))

    def resolve(self, block: pa.Table, keys: pa.Array) -> pa.Table:
        rows = from_table(block)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(keys.to_pylist()):
            groups[k].append(i)
        for members in groups.values():
            live = [rows[i] for i in members if rows[i]["status"] == Status.KEPT.value]
            for r in live:
                r["lineage"] = [*(r.get("lineage") or []), self.stage]
            if len(live) < 2:
                if live:
                    live[0]["scores"]["dup_count"] = 1.0
                continue
            live.sort(key=lambda r: survivor_rank(r, self.params.policy, self.params.score_key))
            survivor = live[0]
            survivor["scores"]["dup_count"] = float(len(live))
            for dup in live[1:]:
                mark(dup, Status.DUPLICATE, self.stage, ReasonCode.EXACT_DUPLICATE, f"same content as {survivor['locator']}")
                dup["duplicate_of"] = survivor["id"]
        return to_table(rows)
