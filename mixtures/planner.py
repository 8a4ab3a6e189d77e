"""Plan a stage: targets per leaf group and phase, capped by what the data can give, split
across sources by temperature; then pick samples in a stable hashed order.

Targets come from the group tree (``weight`` shares among siblings, ``amount`` absolute) and
the schedule (phases of the budget with their own weights). A source gives at most
``max_repeat`` epochs. A leaf that cannot reach its target gets what its sources can give and
the rest goes to its siblings (``shortfall: redistribute``) or is left out (``shrink``); either
way the report says which target was missed and by how much, and ``strict`` makes it an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mixtures.config import GroupSpec, StageMix
from mixtures.pool import Leaf, Pool, leaves_of
from mixtures.report_model import Shortfall

__all__ = ["MixError", "Plan", "Stream", "plan_stage"]

_EPS = 1e-9
_CHUNK = 1 << 20  # samples of a source looked at together while drawing


class MixError(ValueError):
    """The mixture cannot be made as asked (strict targets, empty groups)."""


@dataclass
class Stream:
    """The samples one (phase, leaf, source) contributes, in order: ``plan.rows[start:end]``."""

    phase: int
    leaf: str
    source: str
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # pool rows (a view of plan.rows)
    repeat: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # epoch of each item (0 = first use)
    amount: float = 0.0  # in the stage unit
    start: int = 0  # where its items are in the plan's flat arrays


@dataclass
class Plan:
    stage: str
    unit: str
    budget: float
    phases: list[tuple[float, float]]  # (start, end) fractions
    targets: dict[str, float]  # leaf -> target amount over the stage (before caps)
    shares: list[dict[str, float]]  # per phase: leaf -> share of that phase
    allocated: dict[str, float]  # leaf -> planned amount after caps / redistribution
    capacity: dict[str, float]  # leaf -> what its sources can give (max_repeat epochs)
    pool_size: dict[str, dict[str, float]]  # leaf -> source -> amount in one epoch
    source_quota: dict[str, dict[str, float]]  # leaf -> source -> planned amount
    streams: list[Stream]
    excluded_zero_cost: dict[str, int]  # leaf -> rows that cost nothing in this unit
    shortfalls: list[Shortfall]  # leaves whose target could not be met
    pool_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # leaf -> source -> rows that cost something
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # every planned sample's pool row, stream after stream
    repeats: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # and its epoch

    @property
    def samples(self) -> int:
        return len(self.rows)


def _weights_for(groups: list[GroupSpec], overrides: dict[str, float], prefix: str) -> list[float | None]:
    out: list[float | None] = []
    for g in groups:
        path = f"{prefix}{g.name}"
        if path in overrides:
            out.append(overrides[path])
        elif g.name in overrides:
            out.append(overrides[g.name])
        else:
            out.append(g.weight)
    return out


def _tree_shares(groups: list[GroupSpec], budget: float, overrides: dict[str, float], share: float = 1.0, prefix: str = "") -> dict[str, float]:
    """leaf path -> share of the stage budget."""
    out: dict[str, float] = {}
    fixed = sum((g.amount or 0.0) / budget for g in groups if g.amount is not None)
    rest = share - fixed
    if rest < -_EPS:
        raise MixError(f"absolute amounts under '{prefix or 'the stage'}' exceed its share of the budget")
    weights = _weights_for(groups, overrides, prefix)
    free = [g for g, w in zip(groups, weights, strict=True) if g.amount is None]
    free_w = [w for g, w in zip(groups, weights, strict=True) if g.amount is None]
    if free and all(w is None for w in free_w):
        free_w = [1.0] * len(free)
    free_w = [w or 0.0 for w in free_w]
    total_w = sum(free_w)
    for g in groups:
        if g.amount is not None:
            s = g.amount / budget
        else:
            w = free_w[free.index(g)]
            s = rest * w / total_w if total_w > 0 else 0.0
        path = f"{prefix}{g.name}"
        if g.groups:
            out.update(_tree_shares(g.groups, budget, overrides, s, f"{path}/"))
        else:
            out[path] = s
    return out


def _fill(caps: dict[str, float], want: dict[str, float], total: float, redistribute: bool) -> dict[str, float]:
    """Water-filling: give each key up to its cap; deficits go to unsaturated keys in
    proportion to what they wanted (when redistributing)."""
    alloc = dict.fromkeys(want, 0.0)
    if not redistribute:
        return {k: min(want[k], caps[k]) for k in want}
    open_keys = {k for k in want if want[k] > 0}
    remaining = total
    while open_keys and remaining > _EPS:
        weight = sum(want[k] for k in sorted(open_keys))  # in key order: the same float sum in every process
        saturated = set()
        given = 0.0
        for k in sorted(open_keys):
            share = remaining * want[k] / weight
            room = caps[k] - alloc[k]
            take = min(share, room)
            alloc[k] += take
            given += take
            if room - take <= _EPS:
                saturated.add(k)
        remaining -= given
        if not saturated:
            break
        open_keys -= saturated
    return alloc


def _group_fill(groups: list[GroupSpec], prefix: str, total: float, targets: dict[str, float], caps: dict[str, float], redistribute: bool) -> dict[str, float]:
    """Allocate ``total`` down the tree, each level filling its children up to their capacity."""
    child_target: dict[str, float] = {}
    child_cap: dict[str, float] = {}
    for g in groups:
        path = f"{prefix}{g.name}"
        below = [leaf for leaf in targets if leaf == path or leaf.startswith(path + "/")]
        child_target[path] = sum(targets[leaf] for leaf in below)
        child_cap[path] = sum(caps[leaf] for leaf in below)
    alloc = _fill(child_cap, child_target, total, redistribute)
    out: dict[str, float] = {}
    for g in groups:
        path = f"{prefix}{g.name}"
        if g.groups:
            out.update(_group_fill(g.groups, f"{path}/", alloc[path], targets, caps, redistribute))
        else:
            out[path] = alloc[path]
    return out


def _inherited(leaf_specs: list[GroupSpec], attr: str, default: float) -> float:
    for g in reversed(leaf_specs):
        v = getattr(g, attr)
        if v is not None:
            return v
    return default


def _integerise(values: dict, total: int) -> dict:
    """Largest-remainder rounding that keeps the sum (deterministic tie-break by key)."""
    floors = {k: int(np.floor(v + _EPS)) for k, v in values.items()}
    short = total - sum(floors.values())
    order = sorted(values, key=lambda k: (-(values[k] - floors[k]), str(k)))
    for k in order[: max(0, short)]:
        floors[k] += 1
    return floors


def plan_stage(stage: StageMix, pool: Pool, seed: int) -> Plan:
    """Targets per leaf, capped and redistributed, split over sources, then the samples."""
    unit = stage.unit
    cost = pool.costs[unit]
    leaves = {leaf.path: leaf for leaf in leaves_of(stage.groups)}
    phases, overrides = _phases(stage, leaves)
    phase_shares = [_tree_shares(stage.groups, stage.budget, o) for o in overrides]
    members, pool_size, excluded = _usable_rows(pool, cost)
    targets = {
        leaf: sum(stage.budget * (b - a) * phase_shares[k][leaf] for k, (a, b) in enumerate(phases)) for leaf in leaves
    }
    _check_not_empty(stage, targets, members, excluded)
    caps = {
        leaf: _inherited(leaves[leaf].specs, "max_repeat", stage.max_repeat) * sum(pool_size[leaf].values())
        for leaf in leaves
    }
    allocated = _group_fill(stage.groups, "", stage.budget, targets, caps, stage.shortfall == "redistribute")
    shortfalls = _shortfalls(stage, leaves, targets, allocated, caps, members)
    source_quota = {leaf: _source_quota(stage, spec, pool_size[leaf], allocated[leaf]) for leaf, spec in leaves.items()}
    quota = _phase_quota(stage, leaves, phases, phase_shares, targets, source_quota)
    streams, rows, repeats = _streams(leaves, members, len(phases), quota, pool, cost, seed)
    return Plan(
        stage=stage.name,
        unit=unit,
        budget=stage.budget,
        phases=phases,
        targets=targets,
        shares=phase_shares,
        allocated=allocated,
        capacity=caps,
        pool_size=pool_size,
        source_quota=source_quota,
        streams=streams,
        excluded_zero_cost=excluded,
        shortfalls=shortfalls,
        pool_rows={leaf: {s: len(r) for s, r in by_src.items()} for leaf, by_src in members.items()},
        rows=rows,
        repeats=repeats,
    )


def _phases(stage: StageMix, leaves: dict[str, Leaf]) -> tuple[list[tuple[float, float]], list[dict[str, float]]]:
    """The schedule's phases ((start, end) fractions of the budget) and each phase's weight
    overrides (every step adds to the ones before it); a step naming no group is an error."""
    cuts = [0.0, *[s.at for s in stage.schedule], 1.0]
    phases = [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1)]
    overrides: list[dict[str, float]] = [{}]
    for step in stage.schedule:
        overrides.append({**overrides[-1], **step.weights})
    unknown = {k for o in overrides for k in o} - set(leaves) - {p.rsplit("/", 1)[-1] for p in leaves} - {
        "/".join(p.split("/")[: i + 1]) for p in leaves for i in range(p.count("/") + 1)
    } - {g for p in leaves for g in p.split("/")}
    if unknown:
        raise MixError(f"schedule names unknown groups: {sorted(unknown)}")
    return phases, overrides


def _usable_rows(pool: Pool, cost: np.ndarray) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, float]], dict[str, int]]:
    """What each leaf can give in the stage unit: its rows per source (those that cost something,
    in pool order; sources by name), the amount of one epoch per source, and how many rows cost nothing."""
    members: dict[str, dict[str, np.ndarray]] = {}
    pool_size: dict[str, dict[str, float]] = {}
    excluded: dict[str, int] = {}
    for path, rows in pool.members.items():
        free = cost[rows] <= 0
        excluded[path] = int(free.sum())
        use = rows[~free]
        src = pool.source[use]
        order = np.argsort(src, kind="stable")  # codes follow the sorted names
        use, src = use[order], src[order]
        cuts = np.flatnonzero(np.diff(src)) + 1
        members[path] = {pool.source_names[int(part[0])]: rows_ for part, rows_ in zip(np.split(src, cuts), np.split(use, cuts), strict=True) if len(part)}
        pool_size[path] = {s: float(cost[idx].sum()) for s, idx in members[path].items()}
    return members, pool_size, excluded


def _check_not_empty(stage: StageMix, targets: dict[str, float], members: dict[str, dict[str, list[int]]], excluded: dict[str, int]) -> None:
    """A strict stage refuses a leaf with a target and no samples."""
    if not stage.strict:
        return
    for leaf, t in targets.items():
        if t > _EPS and not members[leaf]:
            why = f" ({excluded[leaf]} rows cost 0 {stage.unit})" if excluded[leaf] else ""
            raise MixError(f"group '{leaf}' has no samples in the curated table{why}")


def _shortfalls(
    stage: StageMix,
    leaves: dict[str, Leaf],
    targets: dict[str, float],
    allocated: dict[str, float],
    caps: dict[str, float],
    members: dict[str, dict[str, list[int]]],
) -> list[Shortfall]:
    """The leaves whose plan falls short of their target; an error when the stage is strict."""
    shortfalls = [
        Shortfall(
            group=leaf,
            target=targets[leaf],
            planned=allocated[leaf],
            missing=targets[leaf] - allocated[leaf],
            capacity=caps[leaf],
            reason="no samples" if not members[leaf] else "max_repeat cap reached",
        )
        for leaf in leaves
        if allocated[leaf] + 1e-6 * max(1.0, targets[leaf]) < targets[leaf]
    ]
    if shortfalls and stage.strict:
        lines = "; ".join(f"{s.group}: target {s.target:.6g} {stage.unit}, at most {s.planned:.6g}" for s in shortfalls)
        raise MixError(f"stage '{stage.name}' (strict) cannot meet its targets: {lines}")
    return shortfalls


def _source_quota(stage: StageMix, leaf: Leaf, sizes: dict[str, float], allocated: float) -> dict[str, float]:
    """A leaf's planned amount split over its sources by temperature, capped at max_repeat epochs."""
    if not sizes:
        return {}
    temp = _inherited(leaf.specs, "temperature", stage.temperature)
    rep = _inherited(leaf.specs, "max_repeat", stage.max_repeat)
    want = {s: n ** (1.0 / temp) for s, n in sizes.items()}
    norm = sum(want.values())
    want = {s: allocated * w / norm for s, w in want.items()}
    return _fill({s: rep * n for s, n in sizes.items()}, want, allocated, True)


def _phase_quota(
    stage: StageMix,
    leaves: dict[str, Leaf],
    phases: list[tuple[float, float]],
    phase_shares: list[dict[str, float]],
    targets: dict[str, float],
    source_quota: dict[str, dict[str, float]],
) -> dict[tuple[int, str, str], float]:
    """(phase, leaf, source) -> planned amount: a source's quota spread over the phases as its
    leaf's target is; whole samples (sum kept) when the unit is samples."""
    quota: dict[tuple[int, str, str], float] = {}
    for leaf in leaves:
        t_leaf = targets[leaf]
        for k, (a, b) in enumerate(phases):
            part = stage.budget * (b - a) * phase_shares[k][leaf] / t_leaf if t_leaf > _EPS else 0.0
            for s, q in source_quota[leaf].items():
                quota[(k, leaf, s)] = q * part
    if stage.unit == "samples":
        quota = _integerise(quota, int(round(sum(quota.values()))))
    return quota


class _Draw:
    """The samples one (leaf, source) gives, phase after phase: its rows in their hashed order,
    epoch after epoch, one cursor across the phases; the next sample is taken while that brings
    the total nearer to the quota. Works an epoch at a time (the next epoch's order is computed
    for every draw that reaches it at once)."""

    def __init__(self, leaf: str, source: str, rows: np.ndarray, quotas: list[float]) -> None:
        self.leaf, self.source, self.rows, self.quotas = leaf, source, rows, quotas
        self.n = len(rows)
        self.cursor = 0
        self.wanted = self.taken = 0.0  # cumulative over phases, so rounding never accumulates
        self.phase = 0
        self.open = False
        self.parts: list[np.ndarray] = []
        self.amount = 0.0
        self.streams: list[tuple[Stream, list[np.ndarray], list[tuple[int, int]]]] = []
        self.epochs: list[tuple[int, int]] = []  # (epoch, items) of the open stream

    def run(self, epoch: int, order: np.ndarray, cost: np.ndarray) -> bool:
        """Draw from ``epoch`` (its rows in order); False when the next epoch is needed."""
        while self.phase < len(self.quotas):
            if not self.open:
                self.wanted += self.quotas[self.phase]
                self.open, self.parts, self.epochs, self.amount = True, [], [], 0.0
            e, pos = divmod(self.cursor, self.n)
            if e != epoch:
                return False
            threshold = self.wanted - _EPS
            while pos < self.n:
                chunk = order[pos : pos + _CHUNK]
                c = cost[chunk]
                acc = np.cumsum(np.concatenate(([self.taken], c)))  # acc[i]: the total before sample i, summed in order
                stop = np.flatnonzero(acc[:-1] + c / 2 >= threshold)
                i = int(stop[0]) if len(stop) else len(chunk)
                if i:
                    self.parts.append(chunk[:i])
                    self.epochs.append((e, i))
                    self.amount = float(np.cumsum(np.concatenate(([self.amount], c[:i])))[-1])
                    self.taken = float(acc[i])
                    self.cursor += i
                if len(stop):
                    self._close()
                    break
                pos += i
            else:
                continue  # the epoch is used up: on to the next (asks for it above)
        return True

    def _close(self) -> None:
        if self.parts:
            st = Stream(self.phase, self.leaf, self.source, amount=self.amount)
            self.streams.append((st, self.parts, self.epochs))
        self.open = False
        self.phase += 1


def _epoch_order(rows: np.ndarray, keys: np.ndarray, pool: Pool) -> np.ndarray:
    """``rows`` sorted by (order key, id)."""
    k = keys[rows]
    o = np.argsort(k, kind="stable")
    out = rows[o]
    sk = k[o]
    ties = np.flatnonzero(sk[1:] == sk[:-1])
    if len(ties):  # two ids with one 64-bit key: their ids decide, as in a sort by (key, id)
        starts = ties[np.concatenate(([True], np.diff(ties) > 1))]
        for a in starts.tolist():
            b = a + 1
            while b < len(sk) and sk[b] == sk[a]:
                b += 1
            run = out[a:b]
            ids = pool.ids_of(run)
            out[a:b] = run[sorted(range(len(run)), key=lambda i: ids[i])]
    return out


def _streams(
    leaves: dict[str, Leaf],
    members: dict[str, dict[str, np.ndarray]],
    n_phases: int,
    quota: dict[tuple[int, str, str], float],
    pool: Pool,
    cost: np.ndarray,
    seed: int,
) -> tuple[list[Stream], np.ndarray, np.ndarray]:
    """The samples of every (phase, leaf, source), and every sample's pool row and epoch in one
    array each (the streams' items and repeats are views of them)."""
    draws = [
        _Draw(leaf, s, rows, [quota.get((k, leaf, s), 0.0) for k in range(n_phases)])
        for leaf in leaves
        for s, rows in members[leaf].items()
    ]
    active = [d for d in draws if sum(d.quotas) > 0]  # a draw with nothing to give takes nothing
    epoch = 0
    while active:
        keys = pool.order_keys(seed, 0) if epoch == 0 else pool.order_keys(seed, epoch, rows=np.concatenate([d.rows for d in active]))
        active = [d for d in active if not d.run(epoch, _epoch_order(d.rows, keys, pool), cost)]
        del keys
        epoch += 1
    done = [x for d in draws for x in d.streams]
    sizes = [sum(len(p) for p in parts) for _, parts, _ in done]
    rows = np.concatenate([p for _, parts, _ in done for p in parts]) if done else np.zeros(0, np.int64)
    repeats = np.concatenate([np.full(n, e, dtype=np.int32) for _, _, eps in done for e, n in eps]) if done else np.zeros(0, np.int32)
    streams = []
    start = 0
    for (st, _, _), n in zip(done, sizes, strict=True):
        st.start, st.items, st.repeat = start, rows[start : start + n], repeats[start : start + n]
        streams.append(st)
        start += n
    return streams, rows.astype(np.int64, copy=False), repeats
