"""Verified near-duplicate edges -> duplicate groups -> one survivor per group.

The engine's path (``NearDupOperator.combine_refs``) holds edges and vertices as numpy arrays:

- per edge: both ends as 64-bit row references (16 B) turned into int32 vertex numbers (8 B)
  by one ``np.unique`` (about 40 B per edge while it sorts), the score (8 B), and scipy's
  sparse-graph labelling (connected components, equivalent to a union-find, O(V + E)): its CSR
  copies with float64 data and the transpose, about 25 B per edge while it runs. About 16 B per
  edge stay held, ~70 B at the peak. An edge's ``detail`` text is read only for the one edge per
  duplicate that its decision cites.
- per vertex (a row with at least one verified edge): its reference, label, survivor and chosen
  edge (~40 B) plus what the decision needs: id, locator, policy number, ingest order, has-text
  (~30 B + the two strings), and the decision row itself once built (~60 B + id, survivor id,
  locator and detail strings).

Rows without any near-duplicate never reach it, so memory is bounded by the number of
duplicates, not by the corpus: 10 million edges among 10 million vertices fit in ~3 GB
(benchmarks/bench_scale_dedup.py measures it). A corpus whose edges outgrow one worker would need
a distributed labelling over the edge files (they are already partitioned), see
benchmarks/README.md.

The survivor of a group is the best row by the policy number (``primary``, higher wins: the
ranking ``dedup_exact`` uses), then a row with text (``has_text``, set only under ``prefer_text``),
then ingest order (``seq``), then id. Each duplicate's score and detail come from its edge to
the survivor when there is one, else from its closest edge (``via <locator>``).

``group_edges`` takes the self-contained edge table the in-process helpers and tests use (both
ends' id, ranking numbers, locator and file on every edge) and runs the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.dedup.decisions import decision_table

__all__ = ["EDGE_COLUMNS", "GroupResult", "group_edges", "resolve_groups", "vertex_numbers"]

#: the columns ``group_edges`` reads: both ends' id, policy number, ingest order, locator and file
#: (and ``{side}_has_text`` when present: a row with text survives before one without)
EDGE_COLUMNS = ("a", "b", "score", "detail") + tuple(
    f"{side}_{what}" for side in "ab" for what in ("primary", "seq", "locator", "file")
)
#: duplicates whose detail text is built at once (bounds the Python strings alive)
_DETAIL_CHUNK = 100_000


def vertex_numbers(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct endpoints sorted, a's and b's vertex numbers) of edges given by row references."""
    ends, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    inverse = inverse.astype(np.int32 if len(ends) < 2**31 else np.int64)
    return ends, inverse[: len(a)], inverse[len(a) :]


class GroupResult:
    """Per vertex: its group's survivor (vertex number), the group size, and the edge its
    decision cites (-1 for survivors and for a vertex without one), direct to the survivor or not."""

    def __init__(self, survivor: np.ndarray, size: np.ndarray, link: np.ndarray, direct: np.ndarray, groups: int) -> None:
        self.survivor, self.size, self.link, self.direct, self.groups = survivor, size, link, direct, groups


def resolve_groups(
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray,
    nv: int,
    *,
    primary: np.ndarray,
    textless: np.ndarray,
    seq: np.ndarray,
    id_rank: np.ndarray,
    higher_is_closer: bool,
) -> GroupResult:
    """Connected components of the edges (a[i], b[i]) over vertices 0..nv-1, and per vertex its
    survivor (policy, text, ingest order, id) and the edge that explains its decision."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(nv, nv)).tocsr()
    groups, labels = connected_components(graph, directed=False)
    del graph
    order = np.lexsort((id_rank, seq, textless, -primary, labels))
    first = np.ones(nv, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    survivor_of_label = np.empty(groups, dtype=np.int64)
    survivor_of_label[labels[order][first]] = order[first]
    survivor = survivor_of_label[labels]
    size = np.bincount(labels, minlength=groups)[labels]
    link, direct = _link(a, b, score, survivor, higher_is_closer)
    link[survivor == np.arange(nv)] = -1
    return GroupResult(survivor, size.astype(np.int64), link, direct, groups)


def _link(a, b, s, survivor, higher_is_closer: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per vertex: its edge to the survivor, else its closest edge (the last of equals in edge
    order), and whether that edge goes to the survivor."""
    nv = len(survivor)
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
    return best_edge, direct


def describe_links(
    res: GroupResult,
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray,
    locators: pa.Array,
    details: Callable[[np.ndarray], list[str | None]],
    *,
    higher_is_closer: bool,
    score_name: str,
) -> tuple[np.ndarray, pa.Array]:
    """(score, detail) per vertex: null for survivors, else "<score_name> <n> (<detail>)", with
    "via <locator>: " in front when the cited edge does not reach the survivor. ``details(edges)``
    gives the verifier's detail of the given edges (read only for the cited ones)."""
    nv = len(res.survivor)
    out_score = np.full(nv, np.nan)
    has = np.flatnonzero(res.link >= 0)
    out_score[has] = score[res.link[has]]
    pieces: list[pa.Array] = []
    filled = np.zeros(nv, dtype=bool)
    filled[has] = True
    texts: list[str | None] = []
    for lo in range(0, len(has), _DETAIL_CHUNK):
        vs = has[lo : lo + _DETAIL_CHUNK]
        es = res.link[vs]
        found = details(es)
        others = np.where(a[es] == vs, b[es], a[es])
        via = locators.take(pa.array(others)).to_pylist()
        for v_direct, e_score, d, loc in zip(res.direct[vs].tolist(), score[es].tolist(), found, via, strict=True):
            number = f"{e_score:.3f}" if higher_is_closer else f"{e_score:g}"
            what = f"{score_name} {number}" + (f" ({d})" if d else "")
            texts.append(what if v_direct else f"via {loc}: {what}")
        pieces.append(pa.array(texts, pa.string()))
        texts = []
    detail_of_has = pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())
    # scatter into vertex order: vertices without a cited edge get null
    index = np.full(nv, -1, dtype=np.int64)
    index[has] = np.arange(len(has))
    detail = detail_of_has.take(pa.array(index, mask=~filled))
    return out_score, detail


def id_ranks(ids: pa.Array) -> np.ndarray:
    """Each id's rank in code point order (the last tie-break of the survivor)."""
    order = pc.sort_indices(ids).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def group_decisions(
    res: GroupResult, ids: pa.Array, locators: pa.Array, score: np.ndarray, detail: pa.Array, **columns
) -> pa.Table:
    """One DECISION_SCHEMA row per vertex (``columns`` adds ``_file`` and the like)."""
    nv = len(res.survivor)
    is_surv = res.survivor == np.arange(nv)
    surv = pa.array(res.survivor)
    return decision_table(
        nv,
        id=ids,
        duplicate_of=pc.if_else(pa.array(is_surv), pa.scalar(None, pa.string()), ids.take(surv)),
        survivor_locator=locators.take(surv),
        group_size=pa.array(res.size),
        score=pa.array(np.where(is_surv, np.nan, score)),
        detail=pc.if_else(pa.array(is_surv), pa.scalar(None, pa.string()), detail),
        **columns,
    )


def group_edges(edges: pa.Table, *, higher_is_closer: bool, score_name: str) -> pa.Table:
    """One decision per vertex of a self-contained edge table (``EDGE_COLUMNS``): survivors
    (``duplicate_of`` null) and duplicates."""
    nodes = _nodes(edges)
    ids = nodes["id"].combine_chunks()
    a = pc.index_in(edges["a"], value_set=ids).to_numpy()
    b = pc.index_in(edges["b"], value_set=ids).to_numpy()
    score = edges["score"].to_numpy(zero_copy_only=False)
    res = resolve_groups(
        a,
        b,
        score,
        len(ids),
        primary=nodes["primary"].to_numpy(zero_copy_only=False),
        textless=~pc.fill_null(nodes["has_text"], False).to_numpy(zero_copy_only=False),
        seq=pc.fill_null(nodes["seq"], np.iinfo(np.int64).max).to_numpy(),
        id_rank=id_ranks(ids),
        higher_is_closer=higher_is_closer,
    )
    locators = nodes["locator"].combine_chunks()
    detail_col = edges["detail"].combine_chunks()
    out_score, detail = describe_links(
        res,
        a,
        b,
        score,
        locators,
        lambda es: detail_col.take(pa.array(es)).to_pylist(),
        higher_is_closer=higher_is_closer,
        score_name=score_name,
    )
    return group_decisions(res, ids, locators, out_score, detail, _file=nodes["file"])


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
