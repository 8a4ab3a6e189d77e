"""The typed mix report: what ``mix_stage`` returns and ``SHARDS/report.json`` holds.

``MixReport.to_json()`` is the report.json document (keys in field order; ``text_first_share``,
a phase's ``planned_shares`` and the ``guarantee`` only when set); ``MixReport.from_json()`` reads it back, and
``read_report()`` reads a shard folder's report.json. Plain dataclasses, no imports of ours:
the loaders (Energon's child process included) read reports without loading the mixer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BlendEntry",
    "GroupReport",
    "MixReport",
    "PhaseReport",
    "PrefixDrift",
    "ShardDrift",
    "ShardGuarantee",
    "Shortfall",
    "SourceReport",
    "read_report",
]

T = TypeVar("T")
#: field metadata: left out of the JSON while None (keys that only some reports carry)
OMIT_NONE = {"omit_none": True}


def _json(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _json(getattr(value, f.name)) for f in fields(value) if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _of(cls: type[T], data: dict[str, Any], **typed: Any) -> T:
    """``cls`` from the keys of ``data`` that are its fields (unknown keys are ignored), with
    ``typed`` replacing the nested ones."""
    return cls(**{**{f.name: data[f.name] for f in fields(cls) if f.name in data}, **typed})


@dataclass(frozen=True)
class SourceReport:
    """One source of a group: its pool, its planned quota and what was drawn from it."""

    pool_rows: int  # rows that cost something in the stage unit
    pool_amount: float  # one epoch, in the stage unit
    quota: float  # planned amount, in the stage unit
    samples: int  # draws (repeats included)
    repeat_factor: float  # samples / pool_rows


@dataclass
class GroupReport:
    """One leaf group: target, plan and achieved amounts (``achieved``: unit -> amount)."""

    target: float
    target_share: float
    planned: float
    planned_share: float
    achieved: dict[str, float]
    achieved_share: float
    capacity: float  # what its sources can give within max_repeat epochs
    sources: dict[str, SourceReport]
    excluded_zero_cost: int  # rows that cost nothing in the stage unit
    text_first_share: float | None = field(default=None, metadata=OMIT_NONE)  # only for groups that set text_first

    @property
    def max_repeat_factor(self) -> float | None:
        """The largest repeat factor of the group's sources; None without sources."""
        return max((s.repeat_factor for s in self.sources.values()), default=None)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupReport:
        return _of(cls, d, sources={s: _of(SourceReport, v) for s, v in d["sources"].items()})


@dataclass(frozen=True)
class PhaseReport:
    """One schedule phase: its stretch of the budget, target and planned shares per group."""

    start: float
    end: float
    shares: dict[str, float]
    planned_shares: dict[str, float] | None = field(default=None, metadata=OMIT_NONE)  # None: an older report

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Shortfall:
    """A group whose target could not be met."""

    group: str
    target: float
    planned: float
    missing: float
    capacity: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class ShardDrift:
    shard: str  # path relative to the stage folder (the file name, pre-mixed)
    max_abs_drift: float


@dataclass(frozen=True)
class ShardGuarantee:
    """What the cut promises, checked before any shard is written: every full shard (all but the
    last of each shard folder) holds its planned shares within ``tolerance``, in the stage unit
    (pre-mixed: the groups' shares; per group: the sources' shares inside their group)."""

    tolerance: float
    shard_amounts: dict[str, float]  # shard folder ("." for the stage folder) -> shard size in the unit
    full_shards: int
    achievable: float  # worst full-shard drift of the cut: the tightest tolerance this shard size holds
    held: bool  # achievable <= tolerance
    worst_shard: str | None = None  # path relative to the stage folder
    worst_group: str | None = None  # the group furthest from its share there
    worst_source: str | None = None  # per group: the source of worst_group furthest from its share
    worst_share: float | None = None  # its share in worst_shard
    worst_planned: float | None = None  # its planned share there
    max_sample_cost: float | None = None  # the most one of its samples costs, in the unit
    suggestion: str | None = None  # a shard size that holds the tolerance ("max_samples: 2000"), when not held
    message: str | None = None  # what the mixer said before writing, when not held


@dataclass(frozen=True)
class PrefixDrift:
    shards: int  # the first n shards
    max_abs_drift: float


@dataclass(frozen=True)
class BlendEntry:
    """A group folder of a per-group mix and the weight a loader draws it with."""

    group: str
    path: str
    samples: int
    amount: float
    weight: float


@dataclass
class MixReport:
    """One mixed stage: per group target vs planned vs achieved in every unit, the repeat factor
    each source needed, shortfalls, per-shard and prefix drift, the per-group blend."""

    stage: str
    mixture: str
    seed: int
    unit: str
    budget: float
    mode: str  # "premixed" | "per_group"
    tolerance: float
    phases: list[PhaseReport]
    totals: dict[str, float]  # unit -> achieved amount over all groups
    groups: dict[str, GroupReport]
    shortfalls: list[Shortfall]
    shards: int  # how many
    shard_drift: list[ShardDrift]  # every shard (per group: of its sources' shares inside the group)
    max_shard_drift: float
    within_tolerance: bool | None  # every full shard within the tolerance (None: an older per-group report)
    prefix_drift: list[PrefixDrift]  # pre-mixed only
    skipped: list[dict[str, str]]  # {"id", "key", "error"}: media unreadable at mix time
    blend: list[BlendEntry]  # per-group only
    input_fingerprint: str
    max_full_shard_drift: float | None = None  # over full shards (all but the last of each folder): what is guaranteed
    guarantee: ShardGuarantee | None = field(default=None, metadata=OMIT_NONE)  # checked before writing

    def to_json(self) -> dict[str, Any]:
        """The report.json document."""
        return _json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MixReport:
        """From a report.json document (keys a newer mixer added are ignored)."""
        return _of(
            cls,
            d,
            phases=[_of(PhaseReport, p) for p in d["phases"]],
            groups={g: GroupReport.from_json(r) for g, r in d["groups"].items()},
            shortfalls=[_of(Shortfall, s) for s in d["shortfalls"]],
            shard_drift=[_of(ShardDrift, s) for s in d["shard_drift"]],
            prefix_drift=[_of(PrefixDrift, p) for p in d["prefix_drift"]],
            blend=[_of(BlendEntry, b) for b in d["blend"]],
            guarantee=_of(ShardGuarantee, d["guarantee"]) if d.get("guarantee") else None,
        )


def read_report(root: str | Path) -> MixReport | None:
    """The report.json of a shard folder; None when it has none."""
    path = Path(root) / "report.json"
    return MixReport.from_json(json.loads(path.read_text())) if path.is_file() else None
