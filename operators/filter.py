"""The threshold filter: drop rows whose measured values fall outside declared ranges."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from operators.base import Params, RowOperator
from operators.conditions import Match, Rule
from operators.registry import register_operator

__all__ = ["Filter"]


class FilterParams(Params):
    rules: list[Rule] = Field(..., min_length=1, description="thresholds; the first that fails drops the row")
    when: Match | None = Field(None, description="apply only to rows matching this (others pass untouched)")


@register_operator
class Filter(RowOperator[FilterParams]):
    """Drop rows whose scores or fields fail a threshold; the drop records rule and value.

    Example: ``{field: min_side, min: 64}``, ``{field: duration_s, min: 1, max: 600}``,
    ``{field: language, in: [en, de]}``. Thresholds read what earlier operators measured, so
    they can be tuned without recomputing anything.
    """

    name = "filter"
    default_batch_size = 4096

    def process(self, row: dict[str, Any]) -> None:
        if self.params.when is not None and not self.params.when.matches(row):
            return
        for rule in self.params.rules:
            failed = rule.check(row)
            if failed is not None:
                reason, detail = failed
                self.drop(row, reason, detail)
                return
