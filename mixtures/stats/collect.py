"""Read a shard folder (report.json and the per-shard stats JSONs; a bounded sample of tars for
per-sample values) or a curated table (summary.json and a bounded sample of Parquet files) into
one typed report."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from mixtures.pool import COST_KEYS
from mixtures.report_model import MixReport, read_report
from mixtures.shards import ShardStats
from mixtures.shares import achieved_by_group, drift, expected_shares, prefix_drift
from mixtures.stats.model import CuratedReport, GroupStats, ShardRow, ShardsReport, SourceShare, StatsReport
from mixtures.stats.sampling import Sampled, pick_shards, read_shard_samples, tar_of

__all__ = ["collect_report", "detect"]

_SKIP_DIRS = {"stats", ".nv-meta"}


def detect(path: Path) -> str:
    """'shards' for a `curate mix` output, 'curated' for a `curate run` output."""
    if (path / "report.json").is_file() or any(_stats_files(path)):
        return "shards"
    if (path / "summary.json").is_file() or (path / "samples").is_dir() or any(path.rglob("*.parquet")):
        return "curated"
    raise FileNotFoundError(f"{path}: neither a shard folder (report.json, *.stats.json) nor a curated table (summary.json, *.parquet)")


def _stats_files(root: Path) -> list[Path]:
    out = []
    for f in root.rglob("*.stats.json"):
        rel = f.relative_to(root)
        if f.name.startswith(".") or any(p in _SKIP_DIRS or p.startswith(".") for p in rel.parts[:-1]):
            continue
        out.append(f)
    return sorted(out, key=lambda f: f.relative_to(root).as_posix())


def collect_report(path: str | Path, *, sample_shards: int = 8, seed: int = 0, thumbs: int = 4) -> tuple[StatsReport, Sampled]:
    """The typed report and the sampled per-sample values (plots and thumbnails need those)."""
    root = Path(path).resolve()
    if detect(root) == "shards":
        return _collect_shards(root, sample_shards=sample_shards, seed=seed, thumbs=thumbs)
    return _collect_curated(root, sample_files=sample_shards, seed=seed, thumbs=thumbs)


# --------------------------------------------------------------------------- shard folder


def _planned_phase_shares(report: MixReport | None) -> tuple[list[dict[str, float]], bool]:
    """Planned share of every group in each schedule phase (after caps and redistribution), which
    is what the mixer measures drift against; and whether it is exact. Older reports carry only
    the phases' target shares: exact for a one-phase stage (the groups' planned shares), else the
    targets stand in."""
    if not report or not report.phases:
        return [], False
    phases = report.phases
    if all(p.planned_shares is not None for p in phases):
        return [p.planned_shares for p in phases], True
    if len(phases) == 1:
        return [{g: r.planned_share for g, r in report.groups.items()}], True
    return [p.shares for p in phases], False


def _groups(stats: list[ShardStats], report: MixReport | None, unit: str, totals: dict[str, float]) -> dict[str, GroupStats]:
    """The report's groups, then any group only the shards hold; achieved amounts from the shards."""
    achieved = achieved_by_group(stats)
    rgroups = report.groups if report else {}
    missing = {s.group: s.missing for s in report.shortfalls} if report else {}
    shards_with: Counter[str] = Counter(g for s in stats for g in s.by_group)
    groups = {}
    for g in list(rgroups) + [g for g in sorted(achieved) if g not in rgroups]:
        a = {k: float(achieved.get(g, {}).get(k, 0.0)) for k in COST_KEYS}
        r = rgroups.get(g)
        groups[g] = GroupStats(
            target=r.target if r else None,
            target_share=r.target_share if r else None,
            planned=r.planned if r else None,
            planned_share=r.planned_share if r else None,
            achieved=a,
            achieved_share=a[unit] / totals[unit] if totals[unit] else 0.0,
            shares={k: (a[k] / totals[k] if totals[k] else 0.0) for k in COST_KEYS},
            max_repeat_factor=r.max_repeat_factor if r else None,
            missing=missing.get(g, 0.0),
            shards=shards_with[g],
        )
    return groups


def _shard_rows(root: Path, files: list[Path], stats: list[ShardStats], report: MixReport | None, phases: list[dict[str, float]] | None, unit: str) -> list[ShardRow]:
    """One row per shard; with ``phases`` (pre-mixed) its planned shares and drift (the report's
    where it has the shard); per group, the report's drift of the shard's sources from their
    planned shares inside its group."""
    report_drift = {d.shard: d.max_abs_drift for d in report.shard_drift} if report else {}
    rows = []
    for f, s in zip(files, stats, strict=True):
        rel = tar_of(f).relative_to(root).as_posix()
        row = ShardRow(shard=rel, samples=s.samples, bytes=s.bytes, skipped=len(s.skipped), shares=s.shares, sha256=s.sha256 or None)
        if phases is not None:
            row.expected = expected_shares(s.by_phase, phases)
            name = Path(rel).name
            row.drift = report_drift[name] if name in report_drift else round(drift(s.by_group, s.by_phase, phases, unit), 6)
        elif rel in report_drift:
            row.drift = report_drift[rel]
        rows.append(row)
    return rows


def _group_sources(stats: list[ShardStats], report: MixReport | None, shards: list[ShardRow]) -> dict[str, tuple[dict[str, SourceShare], float | None]]:
    """Per-group shards: per group, each source's planned and achieved share of the group (in the
    unit, from the shards' per-source amounts) and the largest drift of a full shard of the
    group's folder (all but its last) from its sources' planned shares."""
    amounts: dict[str, dict[str, float]] = {}
    folder_rows: dict[str, list[ShardRow]] = {}
    for s, row in zip(stats, shards, strict=True):
        group = next(iter(s.by_group), None)
        if group is None:
            continue
        acc = amounts.setdefault(group, {})
        for per_source in s.by_phase_source.values():
            for src, v in per_source.items():
                acc[src] = acc.get(src, 0.0) + v
        folder_rows.setdefault(group, []).append(row)
    out = {}
    for group, acc in amounts.items():
        planned = report.groups[group].sources if report and group in report.groups else {}
        quota = sum(p.quota for p in planned.values())
        total = sum(acc.values())
        sources = {}
        for src in sorted(set(acc) | set(planned)):
            p = planned[src].quota / quota if src in planned and quota else None
            a = acc.get(src, 0.0) / total if total else 0.0
            sources[src] = SourceShare(None if p is None else round(p, 6), round(a, 6), acc.get(src, 0.0), None if p is None else round(abs(a - p), 6))
        full = [r.drift for r in folder_rows[group][:-1] if r.drift is not None]
        out[group] = (sources, max(full) if full else None)
    return out


def _consistency(groups: dict[str, GroupStats], stats: list[ShardStats], report: MixReport, totals: dict[str, float]) -> dict[str, bool]:
    diffs = [abs(groups[g].achieved[k] - float(r.achieved.get(k, 0.0))) for g, r in report.groups.items() for k in COST_KEYS]
    return {
        "groups_match_report": max(diffs, default=0.0) < 1e-6,
        "shards_match_report": len(stats) == report.shards,
        "samples_match_report": abs(totals["samples"] - report.totals["samples"]) < 1e-6,
    }


def _collect_shards(root: Path, *, sample_shards: int, seed: int, thumbs: int) -> tuple[ShardsReport, Sampled]:
    report = read_report(root)
    files = _stats_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no <shard>.stats.json files")
    stats = [ShardStats.from_json(json.loads(f.read_text())) for f in files]
    unit = report.unit if report else stats[0].unit
    mode = (report.mode if report else None) or ("per_group" if any(f.parent != root for f in files) else "premixed")
    phases, phases_exact = _planned_phase_shares(report)
    mixed = mode == "premixed" and bool(phases)
    totals = {k: sum(a.get(k, 0.0) for a in achieved_by_group(stats).values()) for k in COST_KEYS}
    groups = _groups(stats, report, unit, totals)
    shards = _shard_rows(root, files, stats, report, phases if mixed else None, unit)
    if mode == "per_group":
        for g, (sources, worst) in _group_sources(stats, report, shards).items():
            if g in groups:
                groups[g].sources, groups[g].max_source_drift = sources, worst
    by: dict[str, Counter[str]] = {k: Counter() for k in ("by_layout", "by_modality", "by_source")}
    for s in stats:
        for k in by:
            by[k].update(getattr(s, k))
    sampled = Sampled(thumbs)
    read = read_shard_samples(root, pick_shards(files, sample_shards, seed), sampled)
    drifts = ((report.prefix_drift if report else None) or prefix_drift(stats, phases, unit)) if mixed else []
    out = ShardsReport(
        path=str(root),
        stage=report.stage if report else stats[0].stage or None,
        mixture=report.mixture if report else None,
        unit=unit,
        mode=mode,
        budget=report.budget if report else None,
        tolerance=report.tolerance if report else None,
        shard_count=len(stats),
        totals=totals,
        bytes=sum(s.bytes for s in stats),
        skipped=sum(len(s.skipped) for s in stats),
        groups=groups,
        shortfalls=list(report.shortfalls) if report else [],
        blend=list(report.blend) if report else [],
        phases=[p.to_json() for p in report.phases] if report else [],
        shards=shards,
        max_shard_drift=max((r.drift for r in shards if r.drift is not None), default=None),
        prefix_drift=list(drifts),
        expected_shares_exact=phases_exact if mixed else None,
        **{k: dict(sorted(v.items())) for k, v in by.items()},
        consistent_with_report=_consistency(groups, stats, report, totals) if report else None,
        sampled_shards=read,
        distributions=sampled.summary(),
        guarantee=report.guarantee if report else None,
        max_full_shard_drift=report.max_full_shard_drift if report else None,
    )
    return out, sampled


# --------------------------------------------------------------------------- curated table


def _collect_curated(root: Path, *, sample_files: int, seed: int, thumbs: int, max_rows: int = 20000) -> tuple[CuratedReport, Sampled]:
    import pyarrow.parquet as pq

    from mixtures.config import Estimators
    from mixtures.costs import sample_costs
    from mixtures.pool import curated_files
    from schemas.record import from_table

    summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").is_file() else None
    files = curated_files(root)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(files, min(sample_files, len(files))))
    sampled = Sampled(thumbs)
    est = Estimators()
    seen: set[str] = set()
    by_layout: Counter[str] = Counter()
    by_bucket: Counter[str] = Counter()
    for f in chosen:
        part = next((p.split("=", 1)[1] for p in Path(f).parts if p.startswith("bucket=")), None)
        for row in from_table(pq.read_table(f)):
            if sampled.samples >= max_rows:
                break
            if row.get("status") != "kept" or row["id"] in seen:
                continue
            seen.add(row["id"])
            group = part or ((row.get("buckets") or [None])[0]) or row.get("layout") or "?"
            by_layout[row.get("layout") or "unknown"] += 1
            for b in row.get("buckets") or []:
                by_bucket[b] += 1
            sampled.add(group, row, sample_costs(row, est))
            if sampled.wants_thumb(group):
                _curated_thumb(sampled, group, row)
    out = CuratedReport(
        path=str(root),
        summary=summary,
        parquet_files=len(files),
        sampled_files=[str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else f for f in chosen],
        sampled_by_layout=dict(sorted(by_layout.items())),
        sampled_by_bucket=dict(sorted(by_bucket.items())),
        estimators="defaults of mixtures.config.Estimators (tokens per sample)",
        distributions=sampled.summary(),
    )
    return out, sampled


def _curated_thumb(sampled: Sampled, group: str, row: dict[str, Any]) -> None:
    """The row's first readable image or video as the group's next thumbnail."""
    from operators.media_io import read_media_bytes

    for m in row.get("media") or []:
        if m.get("error") or m.get("modality") not in ("image", "video"):
            continue
        try:
            data = read_media_bytes(m)
        except OSError:
            continue
        text = row.get("caption") or row.get("text") or row.get("transcript") or ""
        sampled.add_thumb(group, data, m["modality"], text[:90], row["id"], row["id"])
        return
