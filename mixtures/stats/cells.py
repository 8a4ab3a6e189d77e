"""The tables `curate stats` shows both in the terminal and in its HTML report, built once from
the typed report: (column names, text cells). Each view lays them out."""

from __future__ import annotations

from mixtures.stats.model import Distributions, ShardRow, ShardsReport
from mixtures.target_table import Bad, Strong, num, pct, target_table

__all__ = ["count_table", "dist_table", "guarantee_lines", "shard_table", "source_table", "stage_target_table", "units_table"]

Grid = tuple[list[str], list[list[str]]]


def stage_target_table(r: ShardsReport) -> Grid:
    return target_table(r.target_rows(), r.unit)


def units_table(r: ShardsReport) -> Grid:
    """Every group's amount and share in every unit the shards hold, and the totals."""
    keys = r.units_present()
    cells: list[list[str]] = [[g, *(f"{num(s.achieved[k])} ({pct(s.shares[k])})" for k in keys)] for g, s in r.groups.items()]
    cells.append([Strong("total"), *(num(r.totals[k]) for k in keys)])
    return ["group", *(k.replace("_tokens", " tok") for k in keys)], cells


def shard_table(rows: list[ShardRow], tolerance: float | None) -> Grid:
    """Per shard: samples, MiB, drift (flagged above the tolerance), skipped samples."""
    cells = []
    for r in rows:
        d = r.drift
        drift = "-" if d is None else (Bad(f"{d:.3f}") if tolerance is not None and d > tolerance else f"{d:.3f}")
        cells.append([r.shard, str(r.samples), f"{r.bytes / 2**20:.2f}", drift, str(r.skipped or "")])
    return ["shard", "samples", "MiB", "drift", "skipped"], cells


def count_table(name: str, counts: dict[str, int]) -> Grid:
    """Samples by one key (``by_layout``, ``by_modality``, ``by_source``), largest first."""
    total = sum(counts.values()) or 1
    cells = [[k, str(v), f"{100 * v / total:.1f}"] for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return [name[3:], "samples", "%"], cells


def dist_table(d: Distributions) -> Grid:
    """Quantiles of min side, duration, tokens per sample and every score in the sample."""
    cells = []
    named = [
        *((f"{k} min side (px)", s) for k, s in d.min_side.items()),
        *((f"{k} duration (s)", s) for k, s in d.duration_s.items()),
        *((f"tokens/sample {k}", s) for k, s in d.tokens.items()),
        *((f"score {k}", s) for k, s in d.scores.items()),
    ]
    for name, s in named:
        if s.n:
            cells.append([name, str(s.n), *(num(v) for v in (s.min, s.p10, s.p50, s.p90, s.max))])
    return ["value", "n", "min", "p10", "median", "p90", "max"], cells


def source_table(r: ShardsReport) -> Grid | None:
    """Per-group shards: every group's sources, planned vs achieved share of the group, and the
    largest drift of one of the group's full shards from them (None when no group has sources)."""
    cells = []
    for g, st in r.groups.items():
        if not st.sources:
            continue
        worst = st.max_source_drift
        shard_cell = "-" if worst is None else (Bad(f"{worst:.3f}") if r.tolerance is not None and worst > r.tolerance else f"{worst:.3f}")
        for i, (src, x) in enumerate(st.sources.items()):
            delta = "-" if x.planned_share is None else f"{100 * (x.achieved_share - x.planned_share):+.1f}"
            cells.append([g if i == 0 else "", src, pct(x.planned_share), pct(x.achieved_share), delta, num(x.amount), shard_cell if i == 0 else ""])
    if not cells:
        return None
    return ["group", "source", "planned %", "achieved %", "Δ pts", r.unit, "worst full shard"], cells


def guarantee_lines(r: ShardsReport) -> list[str | Bad]:
    """What the mixer promised before writing (report.json's ``guarantee``), in words."""
    g = r.guarantee
    if g is None:
        return []
    what = "its sources' shares inside its group" if r.mode == "per_group" else "every group's share"
    sizes = ", ".join(f"{num(v)} {r.unit}" + ("" if k == "." else f" ({k})") for k, v in g.shard_amounts.items())
    if g.held:
        return [f"guarantee held: every full shard ({g.full_shards}) holds {what} within {g.tolerance} (worst {g.achievable:.4f}); shard size {sizes}"]
    out: list[str | Bad] = [Bad(f"guarantee not held: tolerance {g.tolerance}, the shards hold {g.achievable:.4f} (worst: {g.worst_shard}, {g.worst_group}" + (f", source {g.worst_source}" if g.worst_source else "") + ")")]
    if g.suggestion:
        out.append(f"a shard size that holds {g.tolerance}: shards: {{{g.suggestion}}}")
    return out
