"""The shard-level guarantee of a stage, checked before any shard is written: every full shard
(all but the last of each shard folder) holds its planned shares within the stage's tolerance,
in the stage unit. Pre-mixed, the shares are the groups'; per group, each folder's shards hold
the group's sources in their planned shares.

Where the shard size cannot hold the tolerance (typically: one sample of a group costs more
than tolerance x shard size, and the other groups are too coarse to make up for it), the check
says so with the best tolerance the cut holds, the shard and group that set it, and a larger
shard size that holds the tolerance (tried by cutting again, nothing written)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from mixtures.config import StageMix
from mixtures.interleave import Order
from mixtures.planner import Plan
from mixtures.report_model import ShardGuarantee
from mixtures.shard_cut import Cut, cut_order, shard_drifts

__all__ = ["Folder", "cut_folders", "shard_name", "shard_size", "source_phase_shares"]

#: shard sizes tried (times the stage's) when looking for one that holds the tolerance
_FACTORS = (1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)


@dataclass
class Folder:
    """One shard folder of a stage: its sample order and where its shards end."""

    name: str  # relative to the stage folder: "." (pre-mixed) or the group's folder
    leaf: str  # "" pre-mixed, else the group
    order: Order
    nbytes: np.ndarray | None  # what each sample adds to a shard (with max_bytes)
    size: float  # shard size in the unit
    cuts: list[Cut]


def shard_name(folder: str, split: str, n: int) -> str:
    """A shard's path relative to the stage folder."""
    name = f"{split}-{n:06d}.tar"
    return name if folder == "." else f"{folder}/{name}"


def shard_size(stage: StageMix, order: Order, *, max_samples: int | None = None, amount: float | None = None) -> float:
    """A folder's shard size in the stage unit: max_samples in samples; else ``amount``, or
    max_samples samples' worth at the folder's mean sample cost."""
    max_samples = max_samples or stage.shards.max_samples
    if stage.unit == "samples":
        return float(max_samples)
    if amount is not None:
        return float(amount)
    return max_samples * float(np.cumsum(order.cost)[-1]) / len(order) if len(order) else float(max_samples)


def _cut(stage: StageMix, f: Folder, size: float, tolerance: float) -> Folder:
    cuts = cut_order(f.order, size, tolerance, exact=stage.unit == "samples", nbytes=f.nbytes, max_bytes=stage.shards.max_bytes)
    return Folder(f.name, f.leaf, f.order, f.nbytes, size, cuts)


def _worst(folders: list[Folder]) -> tuple[float, int, tuple[Folder, int, int] | None]:
    """(worst full-shard drift, full shards, (folder, shard index, lane) where it is)."""
    worst, where, full = 0.0, None, 0
    for f in folders:
        drifts, lanes = shard_drifts(f.order, f.cuts[:-1])
        full += len(drifts)
        if len(drifts) and (where is None or drifts.max() > worst):
            i = int(np.argmax(drifts))
            worst, where = float(drifts[i]), (f, i, int(lanes[i]))
    return worst, full, where


def _holds(stage: StageMix, folders: list[Folder], tolerance: float) -> tuple[list[Folder], float]:
    """The folders cut again aiming at ``tolerance``, and their worst full-shard drift."""
    trial = [_cut(stage, f, f.size, tolerance) for f in folders]
    return trial, _worst(trial)[0]


def _up(v: float) -> float:
    """Rounded up to 4 decimals (what the message says, and a tolerance of it holds)."""
    return math.ceil(v * 1e4 - 1e-6) / 1e4


def _best(stage: StageMix, folders: list[Folder], worst: float) -> tuple[list[Folder], float]:
    """The tightest tolerance (4 decimals) that a cut of these shard sizes holds, and that cut.
    A cut aims at its tolerance, so a looser one moves the cuts: each value is checked by cutting."""
    hi = _up(worst)
    for _ in range(8):  # the first cut's worst, checked (raised while a cut aiming at it misses it)
        best, w = _holds(stage, folders, hi)
        if w <= hi + 1e-9:
            break
        hi = _up(max(w, hi + 1e-4))
    else:
        return best, _up(w)  # what this cut holds, though a cut aiming at it may not
    lo = stage.tolerance
    for _ in range(8):  # then tightened by bisection
        mid = _up((lo + hi) / 2)
        if mid >= hi:
            break
        trial, w = _holds(stage, folders, mid)
        if w <= mid + 1e-9:
            hi, best = mid, trial
        else:
            lo = mid
    return best, hi


def _suggest(stage: StageMix, folders: list[Folder]) -> tuple[str | None, str]:
    """A larger shard size that holds the tolerance, as the YAML would say it ("max_samples: 2000"),
    and the sentence that says so, or why there is none."""
    by_samples = stage.unit == "samples" or stage.shards.amount is None
    for f in _FACTORS:
        if by_samples:
            ms = math.ceil(stage.shards.max_samples * f)
            trial = [_cut(stage, x, shard_size(stage, x.order, max_samples=ms), stage.tolerance) for x in folders]
            text = f"max_samples: {ms}"
        else:
            trial = [_cut(stage, x, stage.shards.amount * f, stage.tolerance) for x in folders]
            text = f"amount: {stage.shards.amount * f:.6g}"
        worst, full, _ = _worst(trial)
        if not full:
            return None, f"A shard size that holds {stage.tolerance} leaves no full shard in this stage."
        if worst <= stage.tolerance + 1e-9:
            return text, f"`shards: {{{text}}}` holds {stage.tolerance}."
    return None, f"No shard size up to {_FACTORS[-1]}x this one holds {stage.tolerance}."


def _amount(v: float, unit: str) -> str:
    if unit == "samples" and v == 1:
        return "1 sample"
    return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.4g} {unit}"


def cut_folders(stage: StageMix, orders: dict[str, tuple[str, Order, np.ndarray | None]]) -> tuple[list[Folder], ShardGuarantee]:
    """Cut every folder (name -> (leaf, order, bytes per sample)) at the stage's shard size, and
    check the guarantee. Where the tolerance cannot be held, the cut returned is the one that
    holds the tightest tolerance it can, and the guarantee says which and why."""
    folders = []
    for name, (leaf, order, nbytes) in orders.items():
        f = Folder(name, leaf, order, nbytes, shard_size(stage, order, amount=stage.shards.amount), [])
        folders.append(_cut(stage, f, f.size, stage.tolerance))
    worst, full, where = _worst(folders)
    amounts = {f.name: round(f.size, 6) for f in folders}
    if worst <= stage.tolerance + 1e-9 or where is None:
        return folders, ShardGuarantee(stage.tolerance, amounts, full, math.ceil(worst * 1e6 - 1e-6) / 1e6, True)
    folders, achievable = _best(stage, folders, worst)
    _, full, (f, i, lane) = _worst(folders)
    c = f.cuts[i]
    lanes = np.bincount(f.order.lane[c.start : c.end], weights=f.order.cost[c.start : c.end], minlength=len(f.order.lanes))
    phases = np.bincount(f.order.phase[c.start : c.end], weights=f.order.cost[c.start : c.end], minlength=f.order.shares.shape[0])
    share, planned = float(lanes[lane] / lanes.sum()), float(phases @ f.order.shares[:, lane] / phases.sum())
    costly = float(f.order.cost[f.order.lane == lane].max())
    group, source = (f.order.lanes[lane], None) if not f.leaf else (f.leaf, f.order.lanes[lane])
    name = shard_name(f.name, stage.shards.split, i)
    suggestion, hint = _suggest(stage, folders)
    who = f"group '{group}'" if source is None else f"source '{source}' of group '{group}'"
    why = f"; max_bytes closed it at {_amount(float(lanes.sum()), stage.unit)}" if c.by_bytes else ""
    by_bytes = sum(c.by_bytes for x in folders for c in x.cuts)
    if by_bytes:
        why += f"; max_bytes closes {by_bytes} shards before their size"
    message = (
        f"stage '{stage.name}': shards of {_amount(f.size, stage.unit)} cannot hold every group within tolerance "
        f"{stage.tolerance} of its planned share: the best they hold is {achievable:.4f} ({name}: {who} at "
        f"{100 * share:.1f}% against {100 * planned:.1f}% planned; one of its samples costs up to "
        f"{_amount(costly, stage.unit)}, {100 * costly / f.size:.0f}% of a shard{why})."
        + f" {hint}"
    )
    guarantee = ShardGuarantee(
        stage.tolerance, amounts, full, achievable, False, worst_shard=name, worst_group=group, worst_source=source,
        worst_share=round(share, 6), worst_planned=round(planned, 6), max_sample_cost=costly, suggestion=suggestion,
        message=message,
    )  # fmt: skip
    return folders, guarantee


def source_phase_shares(plan: Plan, leaf: str) -> list[dict[str, float]]:
    """Per schedule phase, the planned share of each of ``leaf``'s sources inside the leaf."""
    sources = sorted({st.source for st in plan.streams if st.leaf == leaf})
    out = []
    for k in range(len(plan.phases)):
        amounts: dict[str, float] = defaultdict(float)
        for st in plan.streams:
            if st.leaf == leaf and st.phase == k:
                amounts[st.source] += st.amount
        total = sum(amounts.values())
        out.append({s: (amounts[s] / total if total else 0.0) for s in sources})
    return out
