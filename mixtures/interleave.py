"""Order the planned samples so that every stretch of the sequence follows the planned mix.

The order is built from lanes: in a pre-mixed stage one lane per leaf group, in a per-group
folder one lane per source of the group. In each schedule phase, a lane that plans amount A of
the phase's total T places its i-th sample where the middle of that sample is due:

    due_i = (c_1 + ... + c_(i-1) + c_i / 2) / A   (a fraction of the phase; x T in the unit)

and the phase's samples are sorted by that (ties: lane, then position). At every point x of the
phase each lane has then emitted exactly the samples due before x, so its amount is within half
a sample's cost of its planned share of x, in the stage unit: every prefix follows the plan, and
the stretch between two cuts is off by at most one sample per lane (mixtures/shard_cut.py picks
where shards end). The sources inside a pre-mixed lane are merged the same way, so a group's
samples come in the same order in a pre-mixed and in a per-group mix. Phases follow one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixtures.planner import Plan, Stream

__all__ = ["Order", "interleave"]

#: samples sorted together when merging queues (memory: a few arrays of this length)
CHUNK = 1 << 21


@dataclass
class Order:
    """A sample order (of a stage, or of one group folder) with what the shard cutter measures."""

    pos: np.ndarray  # int64: each sample's index into the plan's flat arrays (plan.rows, plan.repeats)
    lane: np.ndarray  # int32: lane of each sample (index into ``lanes``)
    phase: np.ndarray  # int32: schedule phase of each sample
    cost: np.ndarray  # float64: each sample's cost in the stage unit
    lanes: list[str]  # leaf paths (pre-mixed) or sources (per group)
    shares: np.ndarray  # (phases, lanes): planned share of each lane within each phase

    def __len__(self) -> int:
        return len(self.pos)


def _due(c: np.ndarray) -> np.ndarray:
    cum = np.cumsum(c)  # sequential sums: the same floats on every machine
    return (cum - c / 2) / cum[-1]


def _merge(queues: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge queues (sample positions and their costs) by the due point of each sample's middle:
    (positions, costs, queue of each) in the merged order; ties by queue, then place in it.

    The order is that of one sort by (due, queue, place); it is made a stretch of due points at a
    time (each queue's due points rise), so the arrays sorted at once stay near ``CHUNK`` long."""
    live = [(q, p, c) for q, (p, c) in enumerate(queues) if len(c)]
    if not live:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, dtype=np.int32)
    dues = [_due(c) for _, _, c in live]
    total = sum(len(c) for _, _, c in live)
    rising = all(len(d) < 2 or bool(np.all(d[1:] >= d[:-1])) for d in dues)
    steps = max(1, -(-total // CHUNK)) if rising else 1
    bounds = [np.searchsorted(d, np.arange(1, steps) / steps, side="left") for d in dues]
    out_p, out_c, out_q = np.empty(total, np.int64), np.empty(total), np.empty(total, np.int32)
    at = 0
    for k in range(steps):
        part_d, part_q, part_i, part_p, part_c = [], [], [], [], []
        for j, (q, p, c) in enumerate(live):
            a = 0 if k == 0 else int(bounds[j][k - 1])
            b = len(dues[j]) if k == steps - 1 else int(bounds[j][k])
            if b > a:
                part_d.append(dues[j][a:b])
                part_q.append(np.full(b - a, q, dtype=np.int32))
                part_i.append(np.arange(a, b, dtype=np.int64))
                part_p.append(p[a:b])
                part_c.append(c[a:b])
        if not part_d:
            continue
        idx = np.lexsort((np.concatenate(part_i), np.concatenate(part_q), np.concatenate(part_d)))
        n = len(idx)
        out_p[at : at + n] = np.concatenate(part_p)[idx]
        out_c[at : at + n] = np.concatenate(part_c)[idx]
        out_q[at : at + n] = np.concatenate(part_q)[idx]
        at += n
    return out_p, out_c, out_q


def _queue(streams: list[tuple[int, Stream]], cost: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.arange(st.start, st.start + len(st.items), dtype=np.int64), cost[st.items]) for _, st in streams]


def interleave(plan: Plan, cost: np.ndarray, *, leaf: str | None = None) -> Order:
    """The sample order of a stage (lanes: its leaf groups) or of one leaf, for per-group shards
    (lanes: the leaf's sources)."""
    picked = [(i, st) for i, st in enumerate(plan.streams) if leaf is None or st.leaf == leaf]
    lanes = list(plan.targets) if leaf is None else sorted({st.source for _, st in picked})
    lane_of = {name: k for k, name in enumerate(lanes)}
    shares = np.zeros((len(plan.phases), len(lanes)))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (pos, lane, phase, cost) per phase
    for k in range(len(plan.phases)):
        by_lane: dict[int, list[tuple[int, Stream]]] = {}
        amounts = np.zeros(len(lanes))
        for i, st in picked:
            if st.phase == k:
                lane = lane_of[st.leaf if leaf is None else st.source]
                by_lane.setdefault(lane, []).append((i, st))
                amounts[lane] += st.amount  # in stream order, as mixtures.shares sums them
        total = float(amounts.sum())
        if total > 0:
            shares[k] = amounts / total
        lane_ids = sorted(by_lane)
        # the sources of a lane merged by due point, then the lanes
        queues = []
        for lane in lane_ids:
            p, c, _ = _merge(_queue(by_lane[lane], cost))
            queues.append((p, c))
        p, c, q = _merge(queues)
        del queues
        parts.append((p, np.asarray(lane_ids, dtype=np.int32)[q] if len(q) else np.zeros(0, np.int32), np.full(len(p), k, dtype=np.int32), c))
    pos, lane, phase, costs = (np.concatenate(x) for x in zip(*parts, strict=True))  # a plan has at least one phase
    return Order(pos.astype(np.int64), lane.astype(np.int32), phase.astype(np.int32), costs.astype(np.float64), lanes, shares)
