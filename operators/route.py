"""The router: assign task and bucket eligibility from declarative rules.

A bucket is a property of how a sample is used: one image-caption pair can train captioning
(understanding) and text-to-image (generation) with different quality bars, so every matching
rule adds its tasks and buckets.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from operators.base import Params, RowOperator
from operators.conditions import Match
from operators.registry import register_operator
from schemas.enums import Bucket, ReasonCode, Task

__all__ = ["Route", "RouteRule"]


class RouteRule(Params):
    name: str = Field(..., pattern=r"^[a-z0-9_\-]+$", description="rule name (shown in the summary)")
    when: Match = Field(default_factory=Match, description="rows this rule applies to")
    tasks: list[str] = Field(default_factory=list, description="tasks a matching row is eligible for")
    buckets: list[Bucket] = Field(..., min_length=1, description="buckets a matching row is eligible for")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        known = {t.value for t in Task}
        bad = [t for t in v if t not in known]
        if bad:
            raise ValueError(f"unknown task(s) {bad}; known tasks: {sorted(known)}")
        return v


class RouteParams(Params):
    rules: list[RouteRule] = Field(..., min_length=1, description="routing rules; all matching rules apply")
    unmatched: str = Field(
        "drop", pattern="^(drop|keep)$", description="a row no rule matches: drop it (reason no_matching_route) or keep it unassigned"
    )


@register_operator
class Route(RowOperator[RouteParams]):
    """Set ``tasks`` and ``buckets`` (understanding, generation, interaction, preference) from rules."""

    name = "route"
    default_batch_size = 4096
    writes = {"route_rules": "number of routing rules the row matched"}

    def process(self, row: dict[str, Any]) -> None:
        tasks: list[str] = list(row.get("tasks") or [])
        buckets: list[str] = list(row.get("buckets") or [])
        matched = 0
        for rule in self.params.rules:
            if rule.when.matches(row):
                matched += 1
                tasks += [t for t in rule.tasks if t not in tasks]
                buckets += [b.value for b in rule.buckets if b.value not in buckets]
        row["tasks"], row["buckets"] = tasks, buckets
        row["scores"]["route_rules"] = float(matched)
        if not matched and self.params.unmatched == "drop":
            self.drop(row, ReasonCode.NO_MATCHING_ROUTE, f"layout={row.get('layout')} matched none of {len(self.params.rules)} rules")
