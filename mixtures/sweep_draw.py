"""Draw mixture variants of one stage: a Dirichlet centred on the stage's weights, level by level
of the group tree, and the leaf shares of the stage budget that a variant's weights give.

Every set of siblings is drawn on its own. Its weight-based children (those without an absolute
``amount``) have normalised weights ``w`` (the planner's reading: all unset = equal, an unset
weight next to set ones = 0); a variant's weights are ``Dirichlet(concentration * w)`` over the
children with ``w > 0``. The mean of a draw is ``w``, its variance ``w (1 - w) / (concentration
+ 1)``: a higher concentration keeps the variants closer to the base (``concentration`` equal to
the number of equal siblings is uniform over their simplex). Children of weight 0 stay 0; a set
with fewer than two positive children has nothing to draw and keeps its (normalised) weights;
``amount`` groups keep their amount.

Variant ``i`` of seed ``K`` draws from ``numpy.random.Generator(PCG64(SeedSequence(K,
spawn_key=(i,))))``, sibling sets in tree order: it is a function of (K, i, base weights,
concentration) only, so a longer sweep with the same seed starts with the same variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixtures.config import GroupSpec, StageMix

__all__ = ["SiblingSet", "base_weights", "draw_variant", "leaf_paths", "sibling_sets", "stage_shares", "variant_rng", "weight_paths"]


@dataclass(frozen=True)
class SiblingSet:
    """The weight-based children of one node ("" is the stage's top level)."""

    parent: str
    paths: tuple[str, ...]  # children without an ``amount``, in file order
    base: tuple[float, ...]  # their normalised weights (all 0 when none is positive)

    @property
    def drawn(self) -> bool:
        """At least two positive weights: something to draw."""
        return sum(w > 0 for w in self.base) >= 2


def _effective(groups: list[GroupSpec]) -> list[float]:
    """Weights of the weight-based children as the planner reads them, normalised to sum 1."""
    free = [g for g in groups if g.amount is None]
    raw = [g.weight for g in free]
    ws = [1.0] * len(free) if free and all(w is None for w in raw) else [w or 0.0 for w in raw]
    total = sum(ws)
    return [w / total if total > 0 else 0.0 for w in ws]


def sibling_sets(groups: list[GroupSpec], parent: str = "") -> list[SiblingSet]:
    """Every set of siblings with weight-based children, parents before children (tree order)."""
    out: list[SiblingSet] = []
    prefix = f"{parent}/" if parent else ""
    free = [g for g in groups if g.amount is None]
    if free:
        out.append(SiblingSet(parent, tuple(prefix + g.name for g in free), tuple(_effective(groups))))
    for g in groups:
        if g.groups:
            out += sibling_sets(g.groups, prefix + g.name)
    return out


def weight_paths(groups: list[GroupSpec]) -> list[str]:
    """Paths of every weight-based group, in tree order (the ``weight:`` columns)."""
    out: list[str] = []

    def walk(gs: list[GroupSpec], prefix: str) -> None:
        for g in gs:
            path = prefix + g.name
            if g.amount is None:
                out.append(path)
            if g.groups:
                walk(g.groups, path + "/")

    walk(groups, "")
    return out


def leaf_paths(groups: list[GroupSpec], prefix: str = "") -> list[str]:
    """Paths of the leaf groups, in tree order (the ``share:`` columns)."""
    out: list[str] = []
    for g in groups:
        path = prefix + g.name
        out += leaf_paths(g.groups, path + "/") if g.groups else [path]
    return out


def base_weights(sets: list[SiblingSet]) -> dict[str, float]:
    """Group path -> its normalised weight in the stage as written."""
    return {p: w for s in sets for p, w in zip(s.paths, s.base, strict=True)}


def variant_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of variant ``index``: independent of how many variants the sweep has."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))


def draw_variant(sets: list[SiblingSet], rng: np.random.Generator, concentration: float) -> dict[str, float]:
    """Group path -> drawn weight (every sibling set sums to 1, or 0 where the base does)."""
    out: dict[str, float] = {}
    for s in sets:
        if not s.drawn:
            out.update(zip(s.paths, s.base, strict=True))
            continue
        live = [i for i, w in enumerate(s.base) if w > 0]
        x = rng.dirichlet([concentration * s.base[i] for i in live])
        total = float(x.sum())
        drawn = dict(zip(live, (float(v) / total for v in x), strict=True)) if total > 0 else {i: s.base[i] for i in live}
        out.update((p, drawn.get(i, 0.0)) for i, p in enumerate(s.paths))
    return out


def _tree_shares(groups: list[GroupSpec], budget: float, weight: dict[str, float], share: float, prefix: str, out: dict[str, float]) -> None:
    """Leaf path -> share of the budget for one phase: ``amount`` groups take amount / budget,
    the weight-based siblings split the rest of their parent's share by their weights."""
    fixed = sum(g.amount / budget for g in groups if g.amount is not None)
    rest = share - fixed
    free = [g for g in groups if g.amount is None]
    ws = [weight.get(prefix + g.name, 0.0) for g in free]
    total = sum(ws)
    for g in groups:
        path = prefix + g.name
        s = g.amount / budget if g.amount is not None else (rest * ws[free.index(g)] / total if total > 0 else 0.0)
        if g.groups:
            _tree_shares(g.groups, budget, weight, s, path + "/", out)
        else:
            out[path] = s


def _phase_weights(groups: list[GroupSpec], weights: dict[str, float], overrides: dict[str, float]) -> dict[str, float]:
    """A phase's normalised weights: ``weights`` with a schedule step's overrides (by path, then
    by name, as the planner reads them), each sibling set normalised again."""
    if not overrides:
        return weights
    out: dict[str, float] = {}

    def walk(gs: list[GroupSpec], prefix: str) -> None:
        free = [g for g in gs if g.amount is None]
        raw = []
        for g in free:
            path = prefix + g.name
            raw.append(overrides.get(path, overrides.get(g.name, weights.get(path, 0.0))))
        total = sum(raw)
        out.update((prefix + g.name, (w / total if total > 0 else 0.0)) for g, w in zip(free, raw, strict=True))
        for g in gs:
            if g.groups:
                walk(g.groups, prefix + g.name + "/")

    walk(groups, "")
    return out


def stage_shares(stage: StageMix, weights: dict[str, float], *, schedule: bool = True) -> dict[str, float]:
    """Leaf path -> target share of the whole stage budget under ``weights`` (group path ->
    normalised weight): the product of the weights down the tree, ``amount`` groups taken first,
    averaged over the schedule's phases by their length when ``schedule`` (a step's weights
    override the variant's in its phase, as in the planner)."""
    cuts = [0.0, *[s.at for s in stage.schedule], 1.0] if schedule else [0.0, 1.0]
    steps: list[dict[str, float]] = [{}]
    for step in stage.schedule if schedule else []:
        steps.append({**steps[-1], **step.weights})
    total: dict[str, float] = dict.fromkeys(leaf_paths(stage.groups), 0.0)
    for k, overrides in enumerate(steps):
        phase: dict[str, float] = {}
        _tree_shares(stage.groups, stage.budget, _phase_weights(stage.groups, weights, overrides), 1.0, "", phase)
        length = cuts[k + 1] - cuts[k]
        for leaf, s in phase.items():
            total[leaf] += length * s
    return total
