"""The one typed report every view of `curate stats` renders: ``ShardsReport`` for a shard folder,
``CuratedReport`` for a curated table. ``to_json()`` is the document ``--json`` prints and
``stats.json`` holds; ``report_of()`` reads that document back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from mixtures.pool import COST_KEYS
from mixtures.report_model import BlendEntry, PrefixDrift, ShardGuarantee, Shortfall
from mixtures.target_table import TargetRow

__all__ = [
    "BlendEntry",
    "CuratedReport",
    "Distributions",
    "GroupStats",
    "PrefixDrift",
    "ShardGuarantee",
    "ShardRow",
    "ShardsReport",
    "Shortfall",
    "SourceShare",
    "Spread",
    "StatsReport",
    "from_fields",
    "report_of",
]

T = TypeVar("T")
_OMIT_NONE = {"omit_none": True}  # field metadata: left out of the JSON while None


def _json(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "__dataclass_fields__"):
        return _fields_json(value)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _fields_json(obj: Any) -> dict[str, Any]:
    return {f.name: _json(getattr(obj, f.name)) for f in fields(obj) if not (f.metadata.get("omit_none") and getattr(obj, f.name) is None)}


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that are fields of ``cls`` (older or newer documents may differ)."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


def from_fields(cls: type[T], data: dict[str, Any]) -> T:
    """``cls`` from the keys of ``data`` that are its fields."""
    return cls(**_known(cls, data))


@dataclass(frozen=True)
class Spread:
    """Quantiles of a sample of values; ``n == 0``: no values (the other fields are None)."""

    n: int
    min: float | None = None
    p10: float | None = None
    p50: float | None = None
    p90: float | None = None
    max: float | None = None
    mean: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(0)
        v = sorted(values)

        def q(p: float) -> float:
            i = (len(v) - 1) * p
            lo, hi = math.floor(i), math.ceil(i)
            return v[lo] + (v[hi] - v[lo]) * (i - lo)

        return cls(len(v), v[0], q(0.1), q(0.5), q(0.9), v[-1], sum(v) / len(v))

    def to_json(self) -> dict[str, float]:
        return {"n": 0} if not self.n else _fields_json(self)


@dataclass
class Distributions:
    """Per-sample values of the sampled shards (or Parquet files), summarised."""

    samples: int
    by_group: dict[str, int]
    pixels: dict[str, Spread]  # modality -> width * height
    min_side: dict[str, Spread]  # modality -> min(width, height)
    duration_s: dict[str, Spread]  # modality -> seconds
    tokens: dict[str, Spread]  # "all" and each group -> tokens per sample
    text_tokens: Spread
    scores: dict[str, Spread]  # score name -> values
    thumbnails: dict[str, int]  # group -> thumbnails kept

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Distributions:
        spreads = {name: {k: Spread(**s) for k, s in d.get(name, {}).items()} for name in ("pixels", "min_side", "duration_s", "tokens", "scores")}
        return cls(samples=d["samples"], by_group=d.get("by_group", {}), text_tokens=Spread(**d.get("text_tokens", {"n": 0})),
                   thumbnails=d.get("thumbnails", {}), **spreads)  # fmt: skip


@dataclass(frozen=True)
class SourceShare:
    """One source inside its group (per-group shards): planned and achieved share of the group, in the unit."""

    planned_share: float | None  # None: the report does not plan this source
    achieved_share: float
    amount: float  # achieved, in the stage unit
    drift: float | None  # |achieved - planned| over the whole group folder


@dataclass
class GroupStats:
    """One group of a shard folder: the report's target and plan, what the shards hold."""

    target: float | None  # None: the group is in the shards but not in report.json
    target_share: float | None
    planned: float | None
    planned_share: float | None
    achieved: dict[str, float]  # unit -> amount (from the shard stats)
    achieved_share: float  # of the stage unit
    shares: dict[str, float]  # unit -> share of that unit
    max_repeat_factor: float | None
    missing: float  # shortfall against the target (0: met)
    shards: int  # shards holding the group
    # per-group shards: each source's share of the group, and the largest drift of a full shard
    # of the group from its sources' planned shares (the report's)
    sources: dict[str, SourceShare] | None = field(default=None, metadata=_OMIT_NONE)
    max_source_drift: float | None = field(default=None, metadata=_OMIT_NONE)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupStats:
        src = d.get("sources")
        return cls(**{**_known(cls, d), "sources": None if src is None else {k: from_fields(SourceShare, v) for k, v in src.items()}})

    def target_row(self, name: str, unit: str) -> TargetRow:
        return TargetRow(name, self.target_share, self.planned_share, self.achieved_share,
                         self.achieved[unit], self.achieved["samples"], self.max_repeat_factor, self.missing)  # fmt: skip


@dataclass
class ShardRow:
    """One shard: counts from its stats JSON; planned shares and drift for pre-mixed shards."""

    shard: str  # path under the folder
    samples: int
    bytes: int
    skipped: int
    shares: dict[str, float]
    sha256: str | None
    expected: dict[str, float] | None = field(default=None, metadata=_OMIT_NONE)
    drift: float | None = field(default=None, metadata=_OMIT_NONE)


@dataclass
class ShardsReport:
    """A `curate mix` output folder."""

    path: str
    stage: str | None
    mixture: str | None
    unit: str
    mode: str  # "premixed" | "per_group"
    budget: float | None
    tolerance: float | None
    shard_count: int
    totals: dict[str, float]  # unit -> amount over all shards
    bytes: int
    skipped: int
    groups: dict[str, GroupStats]
    shortfalls: list[Shortfall]
    blend: list[BlendEntry]
    phases: list[dict[str, Any]]  # as in report.json
    shards: list[ShardRow]
    max_shard_drift: float | None
    prefix_drift: list[PrefixDrift]
    expected_shares_exact: bool | None
    by_layout: dict[str, int]
    by_modality: dict[str, int]
    by_source: dict[str, int]
    consistent_with_report: dict[str, bool] | None
    sampled_shards: list[str]
    distributions: Distributions
    plots: dict[str, str] | None = field(default=None, metadata=_OMIT_NONE)  # name -> PNG path, once written
    html: str | None = field(default=None, metadata=_OMIT_NONE)
    kind: Literal["shards"] = "shards"
    guarantee: ShardGuarantee | None = field(default=None, metadata=_OMIT_NONE)  # report.json's, checked before writing
    max_full_shard_drift: float | None = field(default=None, metadata=_OMIT_NONE)  # report.json's: over full shards

    def target_rows(self) -> list[TargetRow]:
        return [g.target_row(name, self.unit) for name, g in self.groups.items()]

    def units_present(self) -> list[str]:
        """Units with a non-zero total (plus the stage unit), in COST_KEYS order."""
        return [k for k in COST_KEYS if self.totals.get(k) or k == self.unit]

    def to_json(self) -> dict[str, Any]:
        return _fields_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShardsReport:
        return cls(**{
            **_known(cls, d),
            "groups": {g: GroupStats.from_json(r) for g, r in d["groups"].items()},
            "shortfalls": [from_fields(Shortfall, s) for s in d.get("shortfalls", [])],
            "blend": [from_fields(BlendEntry, b) for b in d.get("blend", [])],
            "shards": [from_fields(ShardRow, r) for r in d["shards"]],
            "prefix_drift": [from_fields(PrefixDrift, p) for p in d.get("prefix_drift", [])],
            "distributions": Distributions.from_json(d["distributions"]),
            "guarantee": from_fields(ShardGuarantee, d["guarantee"]) if d.get("guarantee") else None,
        })  # fmt: skip


@dataclass
class CuratedReport:
    """A `curate run` output folder (a curated table)."""

    path: str
    summary: dict[str, Any] | None  # the run's summary.json, as curate wrote it
    parquet_files: int
    sampled_files: list[str]
    sampled_by_layout: dict[str, int]
    sampled_by_bucket: dict[str, int]
    estimators: str
    distributions: Distributions
    plots: dict[str, str] | None = field(default=None, metadata=_OMIT_NONE)
    html: str | None = field(default=None, metadata=_OMIT_NONE)
    kind: Literal["curated"] = "curated"

    def to_json(self) -> dict[str, Any]:
        return _fields_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CuratedReport:
        return cls(**{**_known(cls, d), "distributions": Distributions.from_json(d["distributions"])})


StatsReport = ShardsReport | CuratedReport


def report_of(doc: StatsReport | dict[str, Any]) -> StatsReport:
    """The typed report of a stats document (``--json`` output, stats.json); a report as is."""
    if isinstance(doc, ShardsReport | CuratedReport):
        return doc
    return ShardsReport.from_json(doc) if doc["kind"] == "shards" else CuratedReport.from_json(doc)
