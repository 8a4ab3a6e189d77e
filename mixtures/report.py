"""The mix report: per group, target vs planned vs achieved in every unit; the repeat factor
each source needed; shortfalls; per-shard and prefix drift from the planned shares; the
shard-level guarantee checked before writing. The types are in ``mixtures.report_model``; this
module builds a report from a plan and prints it."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console

from mixtures.config import MixtureConfig, StageMix
from mixtures.guarantee import source_phase_shares
from mixtures.planner import Plan
from mixtures.pool import COST_KEYS, Pool
from mixtures.report_model import (
    BlendEntry,
    GroupReport,
    MixReport,
    PhaseReport,
    ShardDrift,
    ShardGuarantee,
    SourceReport,
)
from mixtures.shards import ShardStats
from mixtures.shares import achieved_by_group, drift, group_shares, phase_shares, prefix_drift
from mixtures.target_table import num, rich_table, rows_of_mix_report, target_table

__all__ = ["build_report", "print_report"]


def build_report(
    cfg: MixtureConfig,
    stage: StageMix,
    plan: Plan,
    pool: Pool,
    stats: list[ShardStats],
    *,
    blend: list[BlendEntry],
    names: list[str] | None = None,
    full: list[bool] | None = None,
    guarantee: ShardGuarantee | None = None,
) -> MixReport:
    """``names``: each shard's path relative to the stage folder (default: its file name);
    ``full``: which shards are full (default: all but the last); ``guarantee``: the cut's, as
    checked before writing."""
    unit = stage.unit
    groups = _groups(stage, plan, pool, stats)
    shares_by_phase = phase_shares(plan)
    premixed = stage.shards.mode == "premixed"
    names = names or [s.shard for s in stats]
    full = full or [i < len(stats) - 1 for i in range(len(stats))]
    shard_drift = [ShardDrift(n, round(_drift(stage, plan, s, shares_by_phase), 6)) for n, s in zip(names, stats, strict=True)]
    full_drift = [d.max_abs_drift for d, f in zip(shard_drift, full, strict=True) if f]
    return MixReport(
        stage=stage.name,
        mixture=cfg.name,
        seed=cfg.seed,
        unit=unit,
        budget=stage.budget,
        mode=stage.shards.mode,
        tolerance=stage.tolerance,
        phases=[PhaseReport(a, b, plan.shares[k], shares_by_phase[k]) for k, (a, b) in enumerate(plan.phases)],
        totals={k: sum(g.achieved[k] for g in groups.values()) for k in COST_KEYS},
        groups=groups,
        shortfalls=plan.shortfalls,
        shards=len(stats),
        shard_drift=shard_drift,
        max_shard_drift=max((d.max_abs_drift for d in shard_drift), default=0.0),
        within_tolerance=all(d <= stage.tolerance for d in full_drift),
        prefix_drift=prefix_drift(stats, shares_by_phase, unit) if premixed else [],
        skipped=[x for s in stats for x in s.skipped],
        blend=blend,
        input_fingerprint=pool.fingerprint,
        max_full_shard_drift=max(full_drift, default=0.0),
        guarantee=guarantee,
    )


def _drift(stage: StageMix, plan: Plan, s: ShardStats, shares_by_phase: list[dict[str, float]]) -> float:
    """A shard's drift from its planned shares: the groups' (pre-mixed), or its sources' inside
    its group (per group: a shard holds one group)."""
    if stage.shards.mode == "premixed":
        return drift(s.by_group, s.by_phase, shares_by_phase, stage.unit)
    leaf = next(iter(s.by_group), None)
    if leaf is None:
        return 0.0
    by_source: dict[str, dict[str, float]] = defaultdict(lambda: {stage.unit: 0.0})
    for amounts in s.by_phase_source.values():
        for src, v in amounts.items():
            by_source[src][stage.unit] += v
    return drift(by_source, s.by_phase_source, source_phase_shares(plan, leaf), stage.unit)


def _groups(stage: StageMix, plan: Plan, pool: Pool, stats: list[ShardStats]) -> dict[str, GroupReport]:
    """Every leaf group: target and plan from ``plan``, achieved amounts from the shard stats."""
    unit = stage.unit
    achieved = achieved_by_group(stats)
    total_target = sum(plan.targets.values()) or 1.0
    total_achieved = sum(a[unit] for a in achieved.values()) or 1.0
    planned_shares = group_shares(plan)
    groups = {}
    for leaf in plan.targets:
        a = achieved.get(leaf, dict.fromkeys(COST_KEYS, 0.0))
        draws = _draws(plan, leaf)
        groups[leaf] = GroupReport(
            target=plan.targets[leaf],
            target_share=plan.targets[leaf] / total_target,
            planned=plan.allocated[leaf],
            planned_share=planned_shares[leaf],
            achieved=a,
            achieved_share=a[unit] / total_achieved,
            capacity=plan.capacity[leaf],
            sources=_sources(plan, pool, leaf, unit, draws),
            excluded_zero_cost=plan.excluded_zero_cost.get(leaf, 0),
            text_first_share=_text_first_share(stats, leaf, draws),
        )
    return groups


def _draws(plan: Plan, leaf: str) -> dict[str, int]:
    """Source -> samples the plan draws from it for ``leaf`` (repeats included)."""
    draws: dict[str, int] = defaultdict(int)
    for st in plan.streams:
        if st.leaf == leaf:
            draws[st.source] += len(st.items)
    return draws


def _sources(plan: Plan, pool: Pool, leaf: str, unit: str, draws: dict[str, int]) -> dict[str, SourceReport]:
    """Every source of ``leaf`` (in its pool or drawn from), sorted by name."""
    pool_rows: dict[str, int] = defaultdict(int, plan.pool_rows.get(leaf, {}))
    return {
        s: SourceReport(
            pool_rows=pool_rows[s],
            pool_amount=plan.pool_size[leaf].get(s, 0.0),
            quota=plan.source_quota[leaf].get(s, 0.0),
            samples=draws[s],
            repeat_factor=round(draws[s] / pool_rows[s], 4) if pool_rows[s] else 0.0,
        )
        for s in sorted(set(pool_rows) | set(draws))
    }


def _text_first_share(stats: list[ShardStats], leaf: str, draws: dict[str, int]) -> float | None:
    """Share of the group's samples with the text first; None when the group sets no text_first."""
    if not any(leaf in st.text_first for st in stats):
        return None
    samples = sum(draws.values())
    return round(sum(st.text_first.get(leaf, 0) for st in stats) / samples, 4) if samples else 0.0


def print_report(report: MixReport, console: Console | None = None) -> None:
    """The mix's target-vs-achieved table, shortfalls and drift, as `curate mix` prints them."""
    console = console or Console()
    unit = report.unit
    title = f"stage {report.stage}: target vs achieved, in {unit}"
    console.print(rich_table(title, *target_table(rows_of_mix_report(report), unit)))
    for s in report.shortfalls:
        console.print(
            f"[yellow]target not met[/yellow]: {s.group} wanted {num(s.target)} {unit}, "
            f"planned {num(s.planned)} (missing {num(s.missing)}; {s.reason})"
        )
    if report.skipped:
        console.print(f"[yellow]{len(report.skipped)} samples skipped[/yellow]: media unreadable at mix time")
    g = report.guarantee
    if g is not None and not g.held:
        console.print(f"[yellow]shard tolerance not held[/yellow]: {g.message}", highlight=False)
    ok = "[green]within[/green]" if report.within_tolerance else "[red]outside[/red]"
    if report.max_full_shard_drift is None:  # a report of an older mixer: drift over every shard
        drift_line = f"max per-shard drift {report.max_shard_drift:.4f}"
    else:
        of = "of its sources' shares " if report.mode == "per_group" else ""
        drift_line = f"max drift of a full shard {of}{report.max_full_shard_drift:.4f}"
    drift_line += f" ({ok} tolerance {report.tolerance})"
    if report.mode == "per_group":
        console.print(f"{report.shards} shards, one folder per group (blend weights in report.json and {report.stage} loaders); {drift_line}")
    else:
        last = report.shard_drift[-1].max_abs_drift if report.shard_drift else 0.0
        console.print(f"{report.shards} shards; {drift_line}; the last shard {last:.4f}")
