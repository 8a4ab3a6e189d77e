"""Share and drift maths of a stage, used by the mixer's report and by `curate stats`: the
planned share of every group (overall and per schedule phase), the achieved amounts summed
from per-shard stats, and the drift of a stretch of samples from its planned shares."""

from __future__ import annotations

from collections import defaultdict

from mixtures.planner import Plan
from mixtures.pool import COST_KEYS
from mixtures.report_model import PrefixDrift
from mixtures.shards import ShardStats

__all__ = ["achieved_by_group", "drift", "expected_shares", "group_shares", "phase_shares", "prefix_drift"]


def group_shares(plan: Plan) -> dict[str, float]:
    """Planned share of every group over the whole stage."""
    total = sum(plan.allocated.values())
    return {leaf: (v / total if total else 0.0) for leaf, v in plan.allocated.items()}


def phase_shares(plan: Plan) -> list[dict[str, float]]:
    """Planned share of every group inside each phase (what the samples of that phase follow)."""
    out = []
    for k in range(len(plan.phases)):
        amounts: dict[str, float] = defaultdict(float)
        for st in plan.streams:
            if st.phase == k:
                amounts[st.leaf] += st.amount
        total = sum(amounts.values())
        out.append({leaf: (amounts.get(leaf, 0.0) / total if total else 0.0) for leaf in plan.targets})
    return out


def expected_shares(by_phase: dict[str, dict[str, float]], shares: list[dict[str, float]]) -> dict[str, float]:
    """The planned shares of a stretch of samples, weighting each phase by its amount there."""
    amounts = {int(k): sum(v.values()) for k, v in by_phase.items()}
    total = sum(amounts.values())
    groups = shares[0].keys() if shares else []
    return {g: sum(amounts[k] / total * shares[k].get(g, 0.0) for k in amounts) if total else 0.0 for g in groups}


def achieved_by_group(stats: list[ShardStats]) -> dict[str, dict[str, float]]:
    """Group -> unit -> amount, summed over the per-shard stats."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COST_KEYS, 0.0))
    for s in stats:
        for g, costs in s.by_group.items():
            for k, v in costs.items():
                out[g][k] += v
    return dict(out)


def drift(by_group: dict[str, dict[str, float]], by_phase: dict[str, dict[str, float]], shares: list[dict[str, float]], unit: str) -> float:
    """Max over groups of |achieved share - planned share| for a stretch of samples."""
    total = sum(c.get(unit, 0.0) for c in by_group.values())
    if not total:
        return 0.0
    expected = expected_shares(by_phase, shares)
    return float(max((abs(by_group.get(g, {}).get(unit, 0.0) / total - p) for g, p in expected.items()), default=0.0))


def prefix_drift(stats: list[ShardStats], shares: list[dict[str, float]], unit: str) -> list[PrefixDrift]:
    """Drift of every prefix of the shard list (a trainer that stops early saw this mix)."""
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    acc_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    out = []
    for n, s in enumerate(stats, 1):
        for g, costs in s.by_group.items():
            for k, v in costs.items():
                acc[g][k] += v
        for k, groups in s.by_phase.items():
            for g, v in groups.items():
                acc_phase[k][g] += v
        out.append(PrefixDrift(n, round(drift(acc, acc_phase, shares, unit), 6)))
    return out
