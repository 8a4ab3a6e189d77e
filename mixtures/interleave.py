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

from mixtures.planner import Plan, Slot, Stream

__all__ = ["Order", "Slot", "interleave"]  # Slot: defined with the plan it indexes


@dataclass
class Order:
    """A sample order (of a stage, or of one group folder) with what the shard cutter measures."""

    slots: list[Slot]
    lane: np.ndarray  # int64: lane of each sample (index into ``lanes``)
    phase: np.ndarray  # int64: schedule phase of each sample
    cost: np.ndarray  # float64: each sample's cost in the stage unit
    lanes: list[str]  # leaf paths (pre-mixed) or sources (per group)
    shares: np.ndarray  # (phases, lanes): planned share of each lane within each phase

    def __len__(self) -> int:
        return len(self.slots)


def _merge(queues: list[tuple[list[Slot], np.ndarray]]) -> tuple[list[Slot], np.ndarray, np.ndarray]:
    """Merge queues (slots and their costs) by the due point of each sample's middle: (slots,
    costs, queue of each) in the merged order."""
    dues, queue, pos = [], [], []
    for q, (_, c) in enumerate(queues):
        if not len(c):
            continue
        cum = np.cumsum(c)  # sequential sums: the same floats on every machine
        dues.append((cum - c / 2) / cum[-1])
        queue.append(np.full(len(c), q, dtype=np.int64))
        pos.append(np.arange(len(c), dtype=np.int64))
    if not dues:
        return [], np.zeros(0), np.zeros(0, dtype=np.int64)
    due, qi, pi = np.concatenate(dues), np.concatenate(queue), np.concatenate(pos)
    idx = np.lexsort((pi, qi, due))
    slots = [queues[q][0][p] for q, p in zip(qi[idx].tolist(), pi[idx].tolist(), strict=True)]
    costs = np.concatenate([c for _, c in queues if len(c)])
    return slots, costs[idx], qi[idx]


def _queue(streams: list[tuple[int, Stream]], cost: np.ndarray) -> list[tuple[list[Slot], np.ndarray]]:
    return [([Slot(i, p) for p in range(len(st.items))], cost[np.asarray(st.items, dtype=np.int64)]) for i, st in streams]


def interleave(plan: Plan, cost: np.ndarray, *, leaf: str | None = None) -> Order:
    """The sample order of a stage (lanes: its leaf groups) or of one leaf, for per-group shards
    (lanes: the leaf's sources)."""
    picked = [(i, st) for i, st in enumerate(plan.streams) if leaf is None or st.leaf == leaf]
    lanes = list(plan.targets) if leaf is None else sorted({st.source for _, st in picked})
    lane_of = {name: k for k, name in enumerate(lanes)}
    shares = np.zeros((len(plan.phases), len(lanes)))
    slots: list[Slot] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (lane, phase, cost) per phase
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
            s, c, _ = _merge(_queue(by_lane[lane], cost))
            queues.append((s, c))
        s, c, q = _merge(queues)
        slots += s
        parts.append((np.asarray(lane_ids, dtype=np.int64)[q], np.full(len(s), k, dtype=np.int64), c))
    lane, phase, costs = (np.concatenate(x) for x in zip(*parts, strict=True))  # a plan has at least one phase
    return Order(slots, lane.astype(np.int64), phase.astype(np.int64), costs.astype(np.float64), lanes, shares)
