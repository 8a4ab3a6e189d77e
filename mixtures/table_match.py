"""Which rows of an Arrow batch each leaf group takes, on columns: the same answer as
``Leaf.matches`` row by row. ``buckets``, ``tasks``, ``layout``, ``source`` and the modality
clauses are set tests on columns; ``has``, ``missing`` and score ``rules`` (whose values may sit in
the scores map or in any nested field) run the row code on the rows still in, built from only the
columns they read."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixtures.config import GroupSpec
from mixtures.table_costs import flat
from schemas.record import from_table

__all__ = ["match_columns", "match_leaves"]


def _col(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array | None:
    if name not in batch.schema.names:
        return None
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _top(field: str) -> str:
    return field.split(".")[0]


def _row_fields(g: GroupSpec) -> set[str]:
    """Top-level columns the row code of ``g.where`` reads for has / missing / rules."""
    w = g.where
    names = {*w.has, *w.missing, *(r.field for r in w.rules)}
    return {_top(n) for n in names} | ({"scores"} if names else set())


def match_columns(leaves: list[Any]) -> set[str]:
    """Every column the leaves' conditions read."""
    out: set[str] = set()
    for leaf in leaves:
        for g in leaf.specs:
            if g.buckets is not None:
                out.add("buckets")
            if g.tasks is not None:
                out.add("tasks")
            w = g.where
            if w.layout is not None:
                out.add("layout")
            if w.source is not None:
                out.add("source")
            if w.modalities_all is not None or w.modalities_any is not None:
                out.add("modalities")
            out |= _row_fields(g)
    return out


def _is_in(arr: pa.Array | None, values: list[str], n: int) -> np.ndarray:
    if arr is None:
        return np.zeros(n, dtype=bool)
    return pc.fill_null(pc.is_in(arr, value_set=pa.array(values, pa.string())), False).to_numpy(zero_copy_only=False)


def _any_in(lists: pa.Array | None, values: list[str], n: int) -> np.ndarray:
    """Rows whose list holds at least one of ``values``."""
    if lists is None or not values:
        return np.zeros(n, dtype=bool)
    items, parents = flat(lists)
    if not len(items):
        return np.zeros(n, dtype=bool)
    hit = pc.fill_null(pc.is_in(items, value_set=pa.array(values, pa.string())), False).to_numpy(zero_copy_only=False)
    return np.bincount(parents[hit], minlength=n) > 0


def _spec_mask(g: GroupSpec, batch: pa.RecordBatch | pa.Table, alive: np.ndarray) -> np.ndarray:
    """Rows of ``batch`` that pass group ``g``'s own conditions (among ``alive``)."""
    n = batch.num_rows
    m = alive.copy()
    if g.buckets is not None:
        m &= _any_in(_col(batch, "buckets"), list(g.buckets), n)
    if g.tasks is not None:
        m &= _any_in(_col(batch, "tasks"), list(g.tasks), n)
    w = g.where
    if w.layout is not None:
        m &= _is_in(_col(batch, "layout"), list(w.layout), n)
    if w.source is not None:
        m &= _is_in(_col(batch, "source"), list(w.source), n)
    if w.modalities_all is not None:
        for mod in set(w.modalities_all):
            m &= _any_in(_col(batch, "modalities"), [mod], n)
    if w.modalities_any is not None:
        m &= _any_in(_col(batch, "modalities"), list(w.modalities_any), n)
    fields = _row_fields(g)
    if fields and m.any():
        rows = np.flatnonzero(m)
        names = [c for c in sorted(fields) if c in batch.schema.names]
        only = type(w)(has=w.has, missing=w.missing, rules=w.rules)  # the clauses not tested above
        records = from_table(batch.select(names).take(pa.array(rows)))
        m[rows] = [only.matches(r) for r in records]
    return m


def match_leaves(leaves: list[Any], batch: pa.RecordBatch | pa.Table, alive: np.ndarray | None = None) -> np.ndarray:
    """(rows, leaves) booleans: which leaf groups take each row (of ``alive`` only, when given).
    Specs shared by leaves (their ancestors) are tested once."""
    n = batch.num_rows
    out = np.zeros((n, len(leaves)), dtype=bool)
    cache: dict[int, np.ndarray] = {}
    everyone = np.ones(n, dtype=bool) if alive is None else alive
    for j, leaf in enumerate(leaves):
        m = everyone
        for g in leaf.specs:
            if id(g) not in cache:
                cache[id(g)] = _spec_mask(g, batch, everyone)
            m = m & cache[id(g)]
        out[:, j] = m
    return out
