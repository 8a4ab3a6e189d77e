"""Verified near-duplicate edges -> duplicate groups -> one survivor per group.

Edges from every partition are joined into groups by connected components (scipy's sparse-graph
labelling, equivalent to a union-find: O(V + E) time and memory over the vertices that have at
least one verified edge, about 100 bytes per edge with its attributes). Rows without any
near-duplicate never reach it, so memory is bounded by the number of duplicates, not by the
corpus; 10 million edges fit in about 1 GB. A corpus whose verified edges outgrow one worker's
memory would need a distributed label propagation over edge files instead (the edge files are
already partitioned).

The survivor of a group is the best row by the policy number (``primary``, higher wins: the
ranking ``dedup_exact`` uses), then a row with text (``has_text``, set only under ``prefer_text``),
then ingest order (``seq``), then id. Each duplicate's score and detail come from its edge to
the survivor when there is one, else from its closest edge (``via <locator>``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.dedup.decisions import decision_table

__all__ = ["EDGE_COLUMNS", "group_edges"]

#: the columns ``group_edges`` reads: both ends' id, policy number, ingest order, locator and file
#: (and ``{side}_has_text`` when present: a row with text survives before one without)
EDGE_COLUMNS = ("a", "b", "score", "detail") + tuple(
    f"{side}_{what}" for side in "ab" for what in ("primary", "seq", "locator", "file")
)


def group_edges(edges: pa.Table, *, higher_is_closer: bool, score_name: str) -> pa.Table:
    """One decision per vertex of ``edges``: survivors (``duplicate_of`` null) and duplicates."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = _nodes(edges)
    ids = nodes["id"]
    a = pc.index_in(edges["a"], value_set=ids).to_numpy()
    b = pc.index_in(edges["b"], value_set=ids).to_numpy()
    nv = len(ids)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(nv, nv)).tocsr()
    groups, labels = connected_components(graph, directed=False)
    primary = nodes["primary"].to_numpy(zero_copy_only=False)
    seq = pc.fill_null(nodes["seq"], np.iinfo(np.int64).max).to_numpy()
    id_rank = np.argsort(np.argsort(np.array(ids.to_pylist(), dtype=object), kind="stable"), kind="stable")
    textless = ~pc.fill_null(nodes["has_text"], False).to_numpy(zero_copy_only=False)
    order = np.lexsort((id_rank, seq, textless, -primary, labels))
    first = np.ones(nv, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    survivor_of_label = np.empty(groups, dtype=np.int64)
    survivor_of_label[labels[order][first]] = order[first]
    survivor = survivor_of_label[labels]
    size = np.bincount(labels, minlength=groups)[labels]
    score, detail = _link(edges, a, b, survivor, nodes, higher_is_closer, score_name)
    is_surv = survivor == np.arange(nv)
    return decision_table(
        nv,
        id=ids,
        _file=nodes["file"],
        duplicate_of=pc.if_else(pa.array(is_surv), pa.scalar(None, pa.string()), ids.take(pa.array(survivor))),
        survivor_locator=nodes["locator"].take(pa.array(survivor)),
        group_size=pa.array(size.astype(np.int64)),
        score=pa.array(np.where(is_surv, np.nan, score)),
        detail=pa.array([None if s else d for s, d in zip(is_surv, detail, strict=True)], pa.string()),
    )


def _link(edges, a, b, survivor, nodes, higher_is_closer: bool, score_name: str):
    """Per node: the score and detail of its edge to the survivor, else of its closest edge."""
    nv = len(survivor)
    s = edges["score"].to_numpy(zero_copy_only=False)
    d = edges["detail"].to_pylist()
    closeness = s if higher_is_closer else -s
    best = np.full(nv, -np.inf)
    best_edge = np.full(nv, -1, dtype=np.int64)
    direct = np.zeros(nv, dtype=bool)
    # edges to the survivor win over any other edge; among equals the closest wins
    for me, other in ((a, b), (b, a)):
        to_surv = survivor[me] == other
        rank = closeness + np.where(to_surv, 1e9, 0.0)
        order = np.argsort(rank, kind="stable")  # ascending: the last write per node is the best
        cand = rank[order] > best[me[order]]
        sel = order[cand]
        best[me[sel]] = rank[sel]
        best_edge[me[sel]] = sel
        direct[me[sel]] = to_surv[sel]
    locs = nodes["locator"].to_pylist()
    score = np.full(nv, np.nan)
    detail: list[str | None] = [None] * nv
    for v in range(nv):
        e = best_edge[v]
        if e < 0:
            continue
        score[v] = s[e]
        number = f"{s[e]:.3f}" if higher_is_closer else f"{s[e]:g}"
        what = f"{score_name} {number}" + (f" ({d[e]})" if d[e] else "")
        if direct[v]:
            detail[v] = what
        else:
            other = b[e] if a[e] == v else a[e]
            detail[v] = f"via {locs[other]}: {what}"
    return score, detail


def _nodes(edges: pa.Table) -> pa.Table:
    """The distinct endpoints of ``edges`` with their ranking numbers, locator and file."""
    sides = [
        pa.table(
            {
                "id": edges[p],
                "primary": edges[f"{p}_primary"],
                "seq": edges[f"{p}_seq"],
                "locator": edges[f"{p}_locator"],
                "file": edges[f"{p}_file"],
                "has_text": edges[f"{p}_has_text"]
                if f"{p}_has_text" in edges.column_names
                else pa.nulls(edges.num_rows, pa.bool_()),
            }
        )
        for p in ("a", "b")
    ]
    g = pa.concat_tables(sides).group_by("id", use_threads=False).aggregate(
        [("primary", "first"), ("seq", "first"), ("locator", "first"), ("file", "first"), ("has_text", "max")]
    )
    g = g.select(["id", "primary_first", "seq_first", "locator_first", "file_first", "has_text_max"])
    return g.rename_columns(["id", "primary", "seq", "locator", "file", "has_text"]).sort_by("id")
