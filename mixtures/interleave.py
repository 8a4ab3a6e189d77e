"""Order the planned samples so every prefix follows the planned mix.

Stride scheduling over streams: the next sample comes from the stream that, after emitting it,
is least ahead of its planned pace (emitted / planned total). Measured in the stage unit, every
prefix of the sequence is then within one sample's cost of the plan for every stream; phases
of a schedule follow one another."""

from __future__ import annotations

import heapq

import numpy as np

from mixtures.planner import Plan, Slot, Stream

__all__ = ["Slot", "interleave"]  # Slot: defined with the plan it indexes


def _merge(streams: list[tuple[int, Stream]], cost: np.ndarray) -> list[Slot]:
    heap: list[tuple[float, int, int]] = []
    emitted = {i: 0.0 for i, _ in streams}
    pos = {i: 0 for i, _ in streams}
    by_index = dict(streams)
    for i, st in streams:
        if st.items and st.amount > 0:
            heapq.heappush(heap, ((float(cost[st.items[0]])) / st.amount, i, 0))
    out: list[Slot] = []
    while heap:
        _, i, _ = heapq.heappop(heap)
        st = by_index[i]
        p = pos[i]
        out.append(Slot(i, p))
        emitted[i] += float(cost[st.items[p]])
        pos[i] = p + 1
        if pos[i] < len(st.items):
            nxt = (emitted[i] + float(cost[st.items[pos[i]]])) / st.amount
            heapq.heappush(heap, (nxt, i, pos[i]))
    return out


def interleave(plan: Plan, cost: np.ndarray, *, leaf: str | None = None) -> list[Slot]:
    """The sample order of a stage (or of one leaf, for per-group shards)."""
    order: list[Slot] = []
    for k in range(len(plan.phases)):
        streams = [(i, s) for i, s in enumerate(plan.streams) if s.phase == k and (leaf is None or s.leaf == leaf)]
        order += _merge(streams, cost)
    return order
