"""Declarative conditions over a record, shared by the filter and the router.

A condition reads a value by name: first from ``row["scores"]`` (what operators measured), then
from the record itself, where a dotted name walks into nested fields (``preference.chosen``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from operators.base import Params
from schemas.enums import ReasonCode

__all__ = ["Match", "Rule", "lookup", "present"]


def lookup(row: dict[str, Any], name: str) -> Any:
    """The value a rule named ``name`` sees: a score, or a (dotted) record field."""
    scores = row.get("scores") or {}
    if name in scores:
        return scores[name]
    value: Any = row
    for part in name.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def present(value: Any) -> bool:
    """Non-empty: not None, not an empty string or list."""
    if value is None:
        return False
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return True


class Rule(Params):
    """A threshold on one measured value: ``{field: min_side, min: 256}``."""

    field: str = Field(..., description="a score key (see `curate operators`) or a dotted record field")
    min: float | None = Field(None, description="keep when value >= min")
    max: float | None = Field(None, description="keep when value <= max")
    in_: list[Any] | None = Field(None, alias="in", description="keep when value is one of these")
    missing: str = Field("fail", pattern="^(fail|pass)$", description="a row without the value: fail or pass the rule")

    @model_validator(mode="after")
    def _something(self) -> Rule:
        if self.min is None and self.max is None and self.in_ is None:
            raise ValueError(f"rule on '{self.field}' needs at least one of min, max, in")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule on '{self.field}': min {self.min} > max {self.max}")
        return self

    def check(self, row: dict[str, Any]) -> tuple[ReasonCode, str] | None:
        """None when the row passes, else (reason code, detail)."""
        value = lookup(row, self.field)
        if not present(value):
            return None if self.missing == "pass" else (ReasonCode.MISSING_VALUE, f"{self.field} is missing")
        if self.in_ is not None and value not in self.in_:
            return ReasonCode.NOT_IN_SET, f"{self.field}={value!r} not in {self.in_}"
        if self.min is not None or self.max is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return ReasonCode.MISSING_VALUE, f"{self.field}={value!r} is not a number"
            if self.min is not None and number < self.min:
                return ReasonCode.BELOW_MIN, f"{self.field}={number:g} < {self.min:g}"
            if self.max is not None and number > self.max:
                return ReasonCode.ABOVE_MAX, f"{self.field}={number:g} > {self.max:g}"
        return None


def _as_list(v: Any) -> list[str] | None:
    if v is None:
        return None
    return [v] if isinstance(v, str) else list(v)


class Match(Params):
    """Which rows a filter or routing rule applies to. Every given clause must hold."""

    layout: list[str] | None = Field(None, description="row layout is one of these (image-text, interleaved, ...)")
    source: list[str] | None = Field(None, description="row source is one of these")
    modalities_all: list[str] | None = Field(None, description="row has all of these modalities")
    modalities_any: list[str] | None = Field(None, description="row has at least one of these modalities")
    has: list[str] = Field(default_factory=list, description="fields that must be non-empty (caption, preference.chosen_media, ...)")
    missing: list[str] = Field(default_factory=list, description="fields that must be empty")
    rules: list[Rule] = Field(default_factory=list, description="thresholds that must all pass")

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("layout", "source", "modalities_all", "modalities_any", "has", "missing"):
                if key in data:
                    data[key] = _as_list(data[key])
        return data

    def matches(self, row: dict[str, Any]) -> bool:
        mods = set(row.get("modalities") or [])
        if self.layout is not None and row.get("layout") not in self.layout:
            return False
        if self.source is not None and row.get("source") not in self.source:
            return False
        if self.modalities_all is not None and not set(self.modalities_all) <= mods:
            return False
        if self.modalities_any is not None and not set(self.modalities_any) & mods:
            return False
        if any(not present(lookup(row, f)) for f in self.has):
            return False
        if any(present(lookup(row, f)) for f in self.missing):
            return False
        return all(rule.check(row) is None for rule in self.rules)
