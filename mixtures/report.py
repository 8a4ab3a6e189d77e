"""The mix report: per group, target vs planned vs achieved in every unit; the repeat factor
each source needed; shortfalls; per-shard and prefix drift from the planned shares."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console

from mixtures.config import MixtureConfig, StageMix
from mixtures.planner import Plan
from mixtures.pool import COST_KEYS, Pool
from mixtures.shards import ShardStats
from mixtures.shares import achieved_by_group, drift, group_shares, phase_shares, prefix_drift
from mixtures.target_table import num, rich_table, rows_of_mix_report, target_table

__all__ = ["build_report", "print_report"]


def build_report(cfg: MixtureConfig, stage: StageMix, plan: Plan, pool: Pool, stats: list[ShardStats], *, blend: list[dict]) -> dict[str, Any]:
    unit = stage.unit
    achieved = achieved_by_group(stats)
    total_target = sum(plan.targets.values()) or 1.0
    total_achieved = sum(a[unit] for a in achieved.values()) or 1.0
    planned_shares = group_shares(plan)
    groups = {}
    for leaf in plan.targets:
        a = achieved.get(leaf, dict.fromkeys(COST_KEYS, 0.0))
        draws: dict[str, int] = defaultdict(int)
        for st in plan.streams:
            if st.leaf == leaf:
                draws[st.source] += len(st.items)
        pool_rows: dict[str, int] = defaultdict(int)
        for r in pool.members[leaf]:
            if pool.costs[unit][r] > 0:
                pool_rows[pool.sources[r]] += 1
        groups[leaf] = {
            "target": plan.targets[leaf],
            "target_share": plan.targets[leaf] / total_target,
            "planned": plan.allocated[leaf],
            "planned_share": planned_shares[leaf],
            "achieved": a,
            "achieved_share": a[unit] / total_achieved,
            "capacity": plan.capacity[leaf],
            "sources": {
                s: {
                    "pool_rows": pool_rows[s],
                    "pool_amount": plan.pool_size[leaf].get(s, 0.0),
                    "quota": plan.source_quota[leaf].get(s, 0.0),
                    "samples": draws[s],
                    "repeat_factor": round(draws[s] / pool_rows[s], 4) if pool_rows[s] else 0.0,
                }
                for s in sorted(set(pool_rows) | set(draws))
            },
            "excluded_zero_cost": plan.excluded_zero_cost.get(leaf, 0),
        }
        n_text_first = sum(st.text_first.get(leaf, 0) for st in stats)
        if any(leaf in st.text_first for st in stats):  # the group sets text_first
            samples = sum(draws.values())
            groups[leaf]["text_first_share"] = round(n_text_first / samples, 4) if samples else 0.0
    shares_by_phase = phase_shares(plan)
    premixed = stage.shards.mode == "premixed"
    # per-group shards hold one group each: drift against the whole mix means nothing there
    shard_drift = [
        {"shard": s.shard, "max_abs_drift": round(drift(s.by_group, s.by_phase, shares_by_phase, unit), 6)}
        for s in stats
        if premixed
    ]
    skipped = [x for s in stats for x in s.skipped]
    return {
        "stage": stage.name,
        "mixture": cfg.name,
        "seed": cfg.seed,
        "unit": unit,
        "budget": stage.budget,
        "mode": stage.shards.mode,
        "tolerance": stage.tolerance,
        "phases": [
            {"start": a, "end": b, "shares": plan.shares[k], "planned_shares": shares_by_phase[k]}
            for k, (a, b) in enumerate(plan.phases)
        ],
        "totals": {k: sum(g["achieved"][k] for g in groups.values()) for k in COST_KEYS},
        "groups": groups,
        "shortfalls": plan.shortfalls,
        "shards": len(stats),
        "shard_drift": shard_drift,
        "max_shard_drift": max((d["max_abs_drift"] for d in shard_drift), default=0.0),
        "within_tolerance": all(d["max_abs_drift"] <= stage.tolerance for d in shard_drift) if premixed else None,
        "prefix_drift": prefix_drift(stats, shares_by_phase, unit) if stage.shards.mode == "premixed" else [],
        "skipped": skipped,
        "blend": blend,
        "input_fingerprint": pool.fingerprint,
    }


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The mix's target-vs-achieved table, shortfalls and drift, as `curate mix` prints them."""
    console = console or Console()
    unit = report["unit"]
    title = f"stage {report['stage']}: target vs achieved, in {unit}"
    console.print(rich_table(title, *target_table(rows_of_mix_report(report), unit)))
    for s in report["shortfalls"]:
        console.print(
            f"[yellow]target not met[/yellow]: {s['group']} wanted {num(s['target'])} {unit}, "
            f"planned {num(s['planned'])} (missing {num(s['missing'])}; {s['reason']})"
        )
    if report["skipped"]:
        console.print(f"[yellow]{len(report['skipped'])} samples skipped[/yellow]: media unreadable at mix time")
    if report["within_tolerance"] is None:
        console.print(f"{report['shards']} shards, one folder per group (blend weights in report.json and {report['stage']} loaders)")
    else:
        ok = "[green]within[/green]" if report["within_tolerance"] else "[red]outside[/red]"
        console.print(f"{report['shards']} shards; max per-shard drift {report['max_shard_drift']:.4f} ({ok} tolerance {report['tolerance']})")
