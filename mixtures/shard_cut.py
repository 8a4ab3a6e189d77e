"""Where shards end: cut a sample order (mixtures/interleave.py) into shards sized in the stage's
unit, each holding its lanes' planned shares.

A shard closes at the first sample boundary where it holds at least its size and every lane is
within the tolerance of its planned share (the shares of the phases it spans, weighted by what it
holds of each, as the report measures it). Where no boundary up to twice the size is, it closes at
the boundary nearest to the plan there. Samples cost 1 in a stage counted in samples: shards
are exactly the size there. ``max_bytes`` is a hard limit: a shard never grows past it, even
before its size. Because the order keeps every lane within half a sample of its plan at every
point, a cut never carries an error into the next shard: each shard is off by at most one
sample per lane, and every prefix of the order by half a sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixtures.interleave import Order

__all__ = ["Cut", "cut_order", "shard_drifts"]

#: how far past its size a shard may grow looking for a boundary within the tolerance
GROWTH = 2.0
_EPS = 1e-9
_CHUNK = 4096  # candidate ends looked at together


@dataclass(frozen=True)
class Cut:
    """One shard: samples ``start:end`` of the order."""

    start: int
    end: int
    by_bytes: bool = False  # closed by max_bytes before reaching its size


def _drift(order: Order, lanes: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Drift of stretches whose amounts per lane and per phase are the rows of ``lanes``, ``phases``."""
    total = lanes.sum(axis=1, keepdims=True)
    return np.abs(lanes / total - phases @ order.shares / total).max(axis=1)


def _amounts(order: Order, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample ``a:b``, its amount in its lane's and its phase's column."""
    rows = np.arange(b - a)
    lanes = np.zeros((b - a, len(order.lanes)))
    lanes[rows, order.lane[a:b]] = order.cost[a:b]
    phases = np.zeros((b - a, order.shares.shape[0]))
    phases[rows, order.phase[a:b]] = order.cost[a:b]
    return lanes, phases


def _end(order: Order, start: int, lo: int, hi: int, tolerance: float) -> int:
    """The first end in ``lo..hi`` whose shard ``start:end`` is within ``tolerance``, else the
    one of least drift; candidates taken a chunk at a time (memory stays chunk x lanes)."""
    w = order.cost[start:lo]
    acc_l = np.bincount(order.lane[start:lo], weights=w, minlength=len(order.lanes))
    acc_p = np.bincount(order.phase[start:lo], weights=w, minlength=order.shares.shape[0])
    best_end, best = lo, float(_drift(order, acc_l[None], acc_p[None])[0])
    if best <= tolerance + _EPS:
        return lo
    a = lo
    while a < hi:
        b = min(hi, a + _CHUNK)
        lanes, phases = _amounts(order, a, b)
        lanes = acc_l + np.cumsum(lanes, axis=0)  # shards start:e for e in a+1..b
        phases = acc_p + np.cumsum(phases, axis=0)
        drift = _drift(order, lanes, phases)
        ok = np.flatnonzero(drift <= tolerance + _EPS)
        if len(ok):
            return a + 1 + int(ok[0])
        i = int(np.argmin(drift))
        if drift[i] < best:
            best_end, best = a + 1 + i, float(drift[i])
        acc_l, acc_p, a = lanes[-1], phases[-1], b
    return best_end


def shard_drifts(order: Order, cuts: list[Cut]) -> tuple[np.ndarray, np.ndarray]:
    """(drift, lane furthest from its share) of every shard: max over lanes of |share - planned|."""
    drifts, worst = np.zeros(len(cuts)), np.zeros(len(cuts), dtype=np.int64)
    for i, c in enumerate(cuts):
        lanes = np.bincount(order.lane[c.start : c.end], weights=order.cost[c.start : c.end], minlength=len(order.lanes))
        phases = np.bincount(order.phase[c.start : c.end], weights=order.cost[c.start : c.end], minlength=order.shares.shape[0])
        total = lanes.sum()
        if total <= 0:
            continue
        off = np.abs(lanes / total - phases @ order.shares / total)
        worst[i] = int(np.argmax(off))
        drifts[i] = float(off[worst[i]])
    return drifts, worst


def cut_order(order: Order, size: float, tolerance: float, *, exact: bool, nbytes: np.ndarray | None = None, max_bytes: int | None = None) -> list[Cut]:
    """Shards of ``size`` (in the unit) along ``order``; ``exact``: the unit is samples, cut
    exactly there. ``nbytes``: what each sample adds to a shard, for ``max_bytes``."""
    n = len(order)
    cum = np.concatenate(([0.0], np.cumsum(order.cost)))
    bcum = np.concatenate(([0], np.cumsum(nbytes))) if max_bytes and nbytes is not None else None
    eps = _EPS * max(1.0, size)
    grow = 1.0 if exact else GROWTH
    cuts: list[Cut] = []
    start = 0
    while start < n:
        base = cum[start]
        lo = max(start + 1, int(np.searchsorted(cum, base + size - eps, side="left")))  # first end holding `size`
        fits = n if bcum is None else max(start + 1, int(np.searchsorted(bcum, bcum[start] + max_bytes, side="right")) - 1)
        if fits < min(lo, n):
            cuts.append(Cut(start, fits, by_bytes=True))
            start = fits
            continue
        if lo >= n and cum[n] - base < size - eps:
            cuts.append(Cut(start, n))  # the rest: the last shard, not full
            break
        hi = min(n, fits, max(lo, int(np.searchsorted(cum, base + grow * size + eps, side="right")) - 1))
        end = _end(order, start, lo, hi, tolerance)
        cuts.append(Cut(start, end))
        start = end
    return cuts
