"""The machinery every near-duplicate operator shares: LSH keys -> candidate pairs -> verified
edges -> connected components -> one survivor per group.

A modality operator (``dedup_image_phash``, ``dedup_video``, ``dedup_audio``, ``dedup_text_minhash``,
``dedup_semantic``) subclasses ``NearDupOperator`` and supplies two things:

- ``signatures(live)``: per kept, eligible row, a compact signature (columns carried to the
  reducers) and a set of 64-bit LSH keys (band values, landmark hashes, cluster ids). A row
  that cannot be read gets an error instead and is quarantined, never silently skipped.
- ``verifier(summary)``: a vectorised check of candidate pairs (Hamming distance, estimated
  Jaccard, offset-consistent matches, cosine similarity) that returns which pairs are
  near-duplicates and a score for each.

How it runs on the engine's key-only map-reduce (``curate.global_phase``):

1. map, ``summarize(file)``: one small key row per (row, LSH key), so a row lands in as many
   partitions as it has keys (``_key`` is an int64; each row also carries its whole key set in
   ``_keys``, capped at ``max_keys`` by a consistent bottom-k sample so the cap keeps shared keys).
2. reduce, ``decide(partition)``: rows sharing a key form a bucket; only pairs inside a bucket
   are candidates, never all pairs. A pair that shares several keys is checked in exactly one
   bucket, the one of its smallest shared key (both rows' key sets are in the summary), so the
   number of verifications is the number of distinct candidate pairs. Verified pairs come out
   as EDGES carrying both ends' ranking numbers and files.
3. ``combine(all edges)``: the hook run once after every partition is decided. Edges from all
   partitions are joined into duplicate groups by connected components (scipy's sparse-graph
   labelling, equivalent to a union-find: O(V + E) time and memory over the vertices that have
   at least one verified edge, about 100 bytes per edge with its attributes). Rows without any
   near-duplicate never reach it, so its memory is bounded by the number of duplicates, not by
   the corpus; 10 million edges fit in about 1 GB. A corpus whose verified edges outgrow one
   worker's memory would need a distributed label propagation over edge files instead, which
   this design leaves room for (the edge files are already partitioned).
   The survivor of a group is the best row by the policy that ``dedup_exact`` uses
   (first_seen, highest_resolution, longest, best_score), then ingest order, then id.
4. apply: duplicates get status ``duplicate``, the operator's reason, ``duplicate_of`` = the
   survivor's id and a detail naming the survivor and the distance or similarity (to the
   survivor itself where the two share an edge, else the edge that linked the row into the group).

Groups are transitive (a~b and b~c puts a, b and c in one group even when a and c are further
apart than the threshold): that is the standard behaviour of corpus-scale dedup (NeMo Curator,
DataTrove) and the reason thresholds should be tight.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from operators.base import GlobalOperator, StageContext, mark
from operators.dedup.exact import ExactDedup, ExactDedupParams
from operators.media_io import MediaMissing, MediaUnavailable
from schemas.enums import ReasonCode, Status
from schemas.hashing import mix64, partition_of
from schemas.record import from_table, to_table

__all__ = [
    "DECISION_SCHEMA",
    "PARTIAL_SCHEMA",
    "NearDupOperator",
    "NearDupParams",
    "Signatures",
    "bucket_pairs",
    "first_shared_key",
    "key_matrix",
    "media_error",
    "resolve_in_process",
]

log = logging.getLogger(__name__)

_PAD = np.iinfo(np.int64).max  # padding of the per-row key matrix: never a real key

#: what ``decide`` emits: verified edges, per-row errors, and per-partition counters
PARTIAL_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),  # edge | error | stats
        pa.field("a", pa.string()),
        pa.field("b", pa.string()),
        pa.field("score", pa.float64()),  # distance (lower is closer) or similarity (higher is closer)
        pa.field("detail", pa.string()),  # for edges: the numbers behind the score; for errors: the message
        pa.field("a_primary", pa.float64()),
        pa.field("a_seq", pa.int64()),
        pa.field("a_locator", pa.string()),
        pa.field("a_file", pa.string()),
        pa.field("b_primary", pa.float64()),
        pa.field("b_seq", pa.int64()),
        pa.field("b_locator", pa.string()),
        pa.field("b_file", pa.string()),
        pa.field("n", pa.int64()),  # stats rows: candidate pairs verified in the partition
    ]
)

#: what ``combine`` emits: one row per id whose record changes
DECISION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("_file", pa.string()),
        pa.field("duplicate_of", pa.string()),  # null for the survivor
        pa.field("survivor_locator", pa.string()),
        pa.field("group_size", pa.int64()),
        pa.field("score", pa.float64()),
        pa.field("detail", pa.string()),
        pa.field("error", pa.string()),  # the row could not be signed: quarantine it
    ]
)


# ----------------------------------------------------------------------------- helpers


def as_key(x: np.ndarray) -> np.ndarray:
    """uint64 key values as int64 (Arrow's and Parquet's integer), keeping the bits."""
    return np.asarray(x, dtype=np.uint64).view(np.int64)


def media_error(e: BaseException) -> str:
    """A ``reason: message`` string for a media item that could not be read."""
    if isinstance(e, MediaMissing) or isinstance(getattr(e, "__cause__", None), FileNotFoundError):
        return f"{ReasonCode.MISSING_FILE}: {e}"
    if isinstance(e, MediaUnavailable):
        return f"{ReasonCode.UNREADABLE}: {e}"
    return f"{ReasonCode.CORRUPT_MEDIA}: {type(e).__name__}: {e}"


def first_media(rec: dict[str, Any], modality: str) -> dict[str, Any] | None:
    """The first readable media item of ``modality`` of a record."""
    for m in rec.get("media") or []:
        if m and m.get("modality") == modality and not m.get("error"):
            return m
    return None


def bucket_pairs(keys: np.ndarray, max_pairs: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All pairs (i < j) of positions sharing a value in the SORTED array ``keys``, in chunks of at
    most about ``max_pairs``. Cost is the sum of bucket_size^2 / 2, never n^2 / 2."""
    n = len(keys)
    if n < 2:
        return
    first = np.ones(n, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, n))
    bucket_of = np.repeat(np.arange(len(starts)), sizes)
    ends = (starts + sizes)[bucket_of]  # one past each row's bucket
    later = ends - np.arange(n) - 1  # partners after each row in its bucket
    rows = np.flatnonzero(later > 0)
    if rows.size == 0:
        return
    counts = later[rows]
    cum = np.cumsum(counts)
    lo = 0
    while lo < len(rows):
        base = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, base + max_pairs, side="right"))
        hi = max(hi, lo + 1)
        r, c = rows[lo:hi], counts[lo:hi]
        left = np.repeat(r, c)
        run_start = np.repeat(np.cumsum(c) - c, c)
        right = left + (np.arange(int(c.sum())) - run_start) + 1
        yield left, right
        lo = hi


def key_matrix(keys_col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<int64> column -> a (rows, longest) int64 matrix padded with _PAD."""
    arr = keys_col.combine_chunks() if isinstance(keys_col, pa.ChunkedArray) else keys_col
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(arr), max(1, width)), _PAD, dtype=np.int64)
    if width:
        values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        row = np.repeat(np.arange(len(arr)), lengths)
        col = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[row, col] = values
    return out


class _KeyLists:
    """Rows of a list<int64> column as padded key matrices, gathered on demand."""

    def __init__(self, col: pa.ChunkedArray | pa.Array) -> None:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        self.offsets = arr.offsets.to_numpy().astype(np.int64)
        self.values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(self.offsets)
        self.width = int(lengths.max()) if len(lengths) else 1

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        start, end = self.offsets[rows], self.offsets[rows + 1]
        lengths = end - start
        width = max(1, int(lengths.max()) if len(lengths) else 1)
        out = np.full((len(rows), width), _PAD, dtype=np.int64)
        r = np.repeat(np.arange(len(rows)), lengths)
        c = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[r, c] = self.values[np.repeat(start, lengths) + c]
        return out


def first_shared_key(kx: np.ndarray, ky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of padded key rows: (smallest shared key or _PAD, number of shared keys)."""
    eq = (kx[:, :, None] == ky[:, None, :]).any(axis=2) & (kx != _PAD)
    shared = np.where(eq, kx, _PAD)
    return shared.min(axis=1), eq.sum(axis=1)


@dataclass
class Signatures:
    """What a modality operator computes for the live rows of one file (aligned with them)."""

    keys: list[np.ndarray]  #: per row: uint64 LSH keys (empty: the row has no candidates)
    columns: dict[str, pa.Array] = field(default_factory=dict)  #: per row: the signature for verification
    errors: list[str | None] = field(default_factory=list)  #: per row: why it could not be signed


#: verifier(left, right) -> (is near-duplicate, score, detail or None) for pairs of summary rows
Verifier = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, list[str] | None]]


class NearDupParams(ExactDedupParams):
    """Survivor policy (as in dedup_exact) plus which rows take part."""

    layouts: list[str] | None = Field(
        None, description="layouts whose rows take part (null: the operator's default set; [] : every layout)"
    )
    max_keys: int = Field(64, ge=1, description="LSH keys kept per row (a consistent bottom-k sample past that)")


NP = TypeVar("NP", bound=NearDupParams)


class NearDupOperator(GlobalOperator[NP]):
    """Base of the near-duplicate operators (see the module docstring)."""

    #: reason written on duplicates
    reason: ClassVar[ReasonCode] = ReasonCode.NEAR_DUPLICATE
    #: score key written on the kept rows that took part: size of the row's group (1 = unique)
    group_key: ClassVar[str] = "near_dup_group_size"
    #: layouts taking part when ``params.layouts`` is null
    default_layouts: ClassVar[tuple[str, ...]] = ()
    #: modality a row needs in its media (None: text rows)
    modality: ClassVar[str | None] = None
    #: True when a higher score means closer (similarity), False for distances
    higher_is_closer: ClassVar[bool] = False
    #: what the score is, for details and reports ("phash distance", "jaccard")
    score_name: ClassVar[str] = "distance"
    #: a pair needs at least this many shared keys to be a candidate
    min_shared_keys: int = 1

    _primary = ExactDedup._primary  # the survivor ranking dedup_exact uses

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        #: counters of the last decide/combine run in this process (tests and benchmarks read them)
        self.stats: dict[str, int] = {}

    # -- what subclasses implement -------------------------------------------------------------
    def signatures(self, live: pa.Table) -> Signatures:  # pragma: no cover - abstract
        raise NotImplementedError

    def verifier(self, summary: pa.Table) -> Verifier:  # pragma: no cover - abstract
        raise NotImplementedError

    def thresholds(self) -> dict[str, Any]:
        """The numbers that decide a near-duplicate, for logs, details and the dedup report."""
        return {}

    # -- eligibility -----------------------------------------------------------------------------
    def layouts(self) -> list[str]:
        p = self.params.layouts
        return list(self.default_layouts) if p is None else list(p)

    def eligible(self, table: pa.Table) -> np.ndarray:
        """Kept rows of the configured layouts (that carry the operator's modality)."""
        mask = pc.fill_null(pc.equal(table["status"], Status.KEPT.value), False)
        layouts = self.layouts()
        if layouts:
            mask = pc.and_(mask, pc.fill_null(pc.is_in(table["layout"], pa.array(layouts, pa.string())), False))
        out = mask.to_numpy(zero_copy_only=False)
        if self.modality is not None and out.any():
            flat = pc.list_flatten(table["media"])
            parents = pc.list_parent_indices(table["media"]).to_numpy(zero_copy_only=False)
            has = pc.fill_null(pc.equal(pc.struct_field(flat, "modality"), self.modality), False).to_numpy(
                zero_copy_only=False
            )
            with_media = np.zeros(table.num_rows, dtype=bool)
            with_media[parents[has]] = True
            out &= with_media
        return out

    # -- map ---------------------------------------------------------------------------------------
    def summarize(self, table: pa.Table) -> pa.Table:
        live = table.filter(pa.array(self.eligible(table)))
        if live.num_rows == 0:
            return pa.table({"id": pa.array([], pa.string()), "_key": pa.array([], pa.int64())})
        sig = self.signatures(live)
        return self.summary_from_signatures(live, sig)

    def summary_from_signatures(self, live: pa.Table, sig: Signatures, only: np.ndarray | None = None) -> pa.Table:
        """Explode each row into one key row per LSH key (error rows: one row keyed by the id).

        ``sig.keys`` is a list of per-row arrays, or one (rows, k) matrix whose rows hold distinct
        keys (the vectorised path the benchmarks use for a million rows). With a matrix, ``only``
        (a boolean matrix of the same shape) limits the key rows emitted to some keys, as one
        reducer's share (``_keys`` still lists all of a row's keys)."""
        n = live.num_rows
        err = np.array([e is not None for e in sig.errors], dtype=bool) if sig.errors else np.zeros(n, dtype=bool)
        if isinstance(sig.keys, np.ndarray):
            km = np.asarray(sig.keys, dtype=np.uint64).reshape(n, -1)
            if only is None:
                km = self._cap_matrix(km)
            elif km.shape[1] > self.params.max_keys:
                raise ValueError("`only` needs rows of at most max_keys keys")
            counts = np.full(n, km.shape[1], dtype=np.int64)
            flat = km.reshape(-1)
        else:
            capped = [self._cap(k) for k in sig.keys]
            counts = np.array([len(k) for k in capped], dtype=np.int64)
            flat = np.concatenate(capped) if capped else np.zeros(0, np.uint64)
        if err.any():  # an error row keeps no keys, and gets one row keyed by its id's hash
            flat = flat[np.repeat(~err, counts)]
            counts[err] = 0
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        key_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(as_key(flat), pa.int64()))
        bad = np.flatnonzero(err)
        if only is not None:  # emit a subset of the keys; _keys keeps them all
            emit = np.asarray(only, dtype=bool).reshape(n, -1) & ~err[:, None]
            flat = km[emit]
            counts = emit.sum(axis=1)
        take = np.concatenate([np.repeat(np.arange(n), counts), bad])
        ids = live["id"].combine_chunks() if isinstance(live["id"], pa.ChunkedArray) else live["id"]
        bad_keys = np.array([zlib.crc32(ids[int(i)].as_py().encode()) for i in bad], dtype=np.int64)
        idx = pa.array(take, pa.int64())
        cols: dict[str, Any] = {
            "id": live["id"].take(idx),
            "_key": pa.array(np.concatenate([as_key(flat), bad_keys]), pa.int64()),
            "primary": pa.array(_numpy(self._primary(live)), pa.float64()).take(idx),
            "seq": live["seq"].take(idx),
            "locator": live["locator"].take(idx),
            "_keys": key_lists.take(idx),
            "_error": pa.array(sig.errors or [None] * n, pa.string()).take(idx),
        }
        for name, col in sig.columns.items():
            cols[name] = col.take(idx)
        return pa.table(cols)

    def _cap(self, keys: np.ndarray) -> np.ndarray:
        keys = np.unique(np.asarray(keys, dtype=np.uint64))
        cap = self.params.max_keys
        if len(keys) > cap:  # consistent sampling: the same keys survive in every copy of a row
            keys = np.sort(keys[np.argsort(mix64(keys), kind="stable")[:cap]])
        return keys

    def _cap_matrix(self, keys: np.ndarray) -> np.ndarray:
        cap = self.params.max_keys
        if keys.shape[1] <= cap:
            return keys
        pick = np.argsort(mix64(keys), axis=1, kind="stable")[:, :cap]
        return np.sort(np.take_along_axis(keys, pick, axis=1), axis=1)

    # -- reduce ------------------------------------------------------------------------------------
    def decide(self, summary: pa.Table) -> pa.Table:
        self.stats = {"summary_rows": summary.num_rows, "candidate_pairs": 0, "edges": 0}
        if summary.num_rows == 0:
            return PARTIAL_SCHEMA.empty_table()
        is_err = pc.is_valid(summary["_error"])
        parts = []
        errs = summary.filter(is_err)
        if errs.num_rows:
            parts.append(self._partial("error", errs, None, None, detail=errs["_error"]))
        t = summary.filter(pc.invert(is_err)) if errs.num_rows else summary
        edges = []
        for left, right, score, detail in self.edges(t):
            edges.append(self._partial("edge", t, left, right, score=score, detail=detail))
            self.stats["edges"] += len(left)
        parts.extend(edges)
        parts.append(
            pa.table(
                {"kind": ["stats"], "n": [self.stats["candidate_pairs"]]},
                schema=pa.schema([PARTIAL_SCHEMA.field("kind"), PARTIAL_SCHEMA.field("n")]),
            )
        )
        return pa.concat_tables([p.select(PARTIAL_SCHEMA.names) if p.num_columns == len(PARTIAL_SCHEMA) else _pad(p) for p in parts])

    def edges(self, t: pa.Table) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[str] | None]]:
        """Verified pairs (left, right, score, detail) of row positions in ``t``. Default: every
        pair inside a bucket (rows sharing ``_key``), checked once (in the bucket of its smallest
        shared key), then verified. Only the key column is sorted; rows are gathered by index."""
        if t.num_rows < 2:
            return
        order = pc.sort_indices(t["_key"]).to_numpy()  # stable: a deterministic order
        bucket = t["_key"].to_numpy()[order]
        keys_of = _KeyLists(t["_keys"])
        verify = self.verifier(t)
        width = keys_of.width
        chunk = max(1024, (1 << 25) // max(1, width * width))
        for lo_all, hi_all in bucket_pairs(bucket, max_pairs=chunk):
            left_all, right_all = order[lo_all], order[hi_all]
            smallest, shared = first_shared_key(keys_of(left_all), keys_of(right_all))
            once = (smallest == bucket[lo_all]) & (shared >= self.min_shared_keys)
            left, right = left_all[once], right_all[once]
            if left.size == 0:
                continue
            self.stats["candidate_pairs"] += int(left.size)
            ok, score, detail = verify(left, right)
            if ok.any():
                yield left[ok], right[ok], score[ok], [detail[i] for i in np.flatnonzero(ok)] if detail else None

    def _partial(self, kind: str, t: pa.Table, left, right, *, score=None, detail=None) -> pa.Table:
        files = t["_file"] if "_file" in t.column_names else pa.nulls(t.num_rows, pa.string())
        if left is None:  # error rows: one per summary row
            li = pa.array(np.arange(t.num_rows), pa.int64())
            n = t.num_rows
            cols = {"kind": pa.array([kind] * n, pa.string()), "a": t["id"], "b": pa.nulls(n, pa.string())}
            cols["score"] = pa.nulls(n, pa.float64())
            cols["detail"] = detail
            cols.update(_side("a", t, files, li))
            for name in ("b_primary", "b_seq", "b_locator", "b_file"):
                cols[name] = pa.nulls(n, PARTIAL_SCHEMA.field(name).type)
            cols["n"] = pa.nulls(n, pa.int64())
            return pa.table(cols, schema=PARTIAL_SCHEMA)
        li, ri = pa.array(left, pa.int64()), pa.array(right, pa.int64())
        n = len(left)
        cols = {
            "kind": pa.array([kind] * n, pa.string()),
            "a": t["id"].take(li),
            "b": t["id"].take(ri),
            "score": pa.array(np.asarray(score, dtype=np.float64)),
            "detail": pa.array(detail, pa.string()) if detail is not None else pa.nulls(n, pa.string()),
        }
        cols.update(_side("a", t, files, li))
        cols.update(_side("b", t, files, ri))
        cols["n"] = pa.nulls(n, pa.int64())
        return pa.table(cols, schema=PARTIAL_SCHEMA)

    # -- combine -----------------------------------------------------------------------------------
    def combine(self, partials: pa.Table) -> pa.Table:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        kind = partials["kind"]
        stats = partials.filter(pc.equal(kind, "stats"))
        errors = partials.filter(pc.equal(kind, "error"))
        edges = partials.filter(pc.equal(kind, "edge"))
        out = []
        if errors.num_rows:
            n = errors.num_rows
            out.append(
                pa.table(
                    {
                        "id": errors["a"],
                        "_file": errors["a_file"],
                        "duplicate_of": pa.nulls(n, pa.string()),
                        "survivor_locator": pa.nulls(n, pa.string()),
                        "group_size": pa.nulls(n, pa.int64()),
                        "score": pa.nulls(n, pa.float64()),
                        "detail": pa.nulls(n, pa.string()),
                        "error": errors["detail"],
                    },
                    schema=DECISION_SCHEMA,
                )
            )
        groups = dup = 0
        if edges.num_rows:
            nodes = _nodes(edges)
            ids = nodes["id"]
            a = pc.index_in(edges["a"], value_set=ids).to_numpy()
            b = pc.index_in(edges["b"], value_set=ids).to_numpy()
            nv = len(ids)
            graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(nv, nv)).tocsr()
            groups, labels = connected_components(graph, directed=False)
            primary = nodes["primary"].to_numpy(zero_copy_only=False)
            seq = pc.fill_null(nodes["seq"], np.iinfo(np.int64).max).to_numpy()
            id_list = ids.to_pylist()
            id_rank = np.argsort(np.argsort(np.array(id_list, dtype=object), kind="stable"), kind="stable")
            order = np.lexsort((id_rank, seq, -primary, labels))
            first = np.ones(nv, dtype=bool)
            first[1:] = labels[order][1:] != labels[order][:-1]
            survivor_of_label = np.empty(groups, dtype=np.int64)
            survivor_of_label[labels[order][first]] = order[first]
            survivor = survivor_of_label[labels]
            size = np.bincount(labels, minlength=groups)[labels]
            score, detail = self._link(edges, a, b, survivor, nodes)
            is_surv = survivor == np.arange(nv)
            sid = ids.take(pa.array(survivor))
            dup = int((~is_surv).sum())
            out.append(
                pa.table(
                    {
                        "id": ids,
                        "_file": nodes["file"],
                        "duplicate_of": pc.if_else(pa.array(is_surv), pa.scalar(None, pa.string()), sid),
                        "survivor_locator": nodes["locator"].take(pa.array(survivor)),
                        "group_size": pa.array(size.astype(np.int64)),
                        "score": pa.array(np.where(is_surv, np.nan, score)),
                        "detail": pa.array([None if s else d for s, d in zip(is_surv, detail, strict=True)], pa.string()),
                        "error": pa.nulls(nv, pa.string()),
                    },
                    schema=DECISION_SCHEMA,
                )
            )
        self.stats = dict(
            candidate_pairs=int(pc.sum(stats["n"]).as_py() or 0),
            edges=edges.num_rows,
            groups=int(groups),
            duplicates=dup,
            errors=errors.num_rows,
        )
        self._write_report()
        log.info("%s: %s; thresholds %s", self.stage, self.stats, self.thresholds())
        if not out:
            return DECISION_SCHEMA.empty_table()
        return pa.concat_tables(out).sort_by("_file")

    def _link(self, edges: pa.Table, a: np.ndarray, b: np.ndarray, survivor: np.ndarray, nodes: pa.Table):
        """Per node: the score and detail of its edge to the survivor, else of its closest edge."""
        nv = len(survivor)
        s = edges["score"].to_numpy(zero_copy_only=False)
        d = edges["detail"].to_pylist()
        closeness = s if self.higher_is_closer else -s
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
            number = f"{s[e]:.3f}" if self.higher_is_closer else f"{s[e]:g}"
            what = f"{self.score_name} {number}" + (f" ({d[e]})" if d[e] else "")
            if direct[v]:
                detail[v] = what
            else:
                other = b[e] if a[e] == v else a[e]
                detail[v] = f"via {locs[other]}: {what}"
        return score, detail

    def _write_report(self) -> None:
        """OUT/artifacts/<stage>/dedup.json: thresholds and counts, read by the dedup report."""
        if not self.artifacts_dir:
            return
        path = Path(self.artifacts_dir) / "dedup.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "operator": self.name,
            "stage": self.stage,
            "reason": str(self.reason),
            "score": self.score_name,
            "params": self.params.model_dump(mode="json"),
            "thresholds": self.thresholds(),
            "stats": self.stats,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body, indent=2, default=str))
        tmp.replace(path)

    # -- apply -------------------------------------------------------------------------------------
    def apply(self, table: pa.Table, decisions: pa.Table) -> pa.Table:
        eligible = self.eligible(table)
        by_id: dict[str, dict[str, Any]] = {d["id"]: d for d in decisions.to_pylist()}
        rows = from_table(table)
        for row, ok in zip(rows, eligible, strict=True):
            if row["status"] != Status.KEPT.value:
                continue
            row["lineage"] = [*(row.get("lineage") or []), self.stage]
            d = by_id.get(row["id"])
            if d is None:
                if ok:
                    row["scores"][self.group_key] = 1.0
            elif d.get("error"):
                reason, _, msg = d["error"].partition(": ")
                try:
                    code = ReasonCode(reason)
                except ValueError:
                    code, msg = ReasonCode.OPERATOR_ERROR, d["error"]
                mark(row, Status.QUARANTINED, self.stage, code, msg)
            elif d["duplicate_of"] is None:
                row["scores"][self.group_key] = float(d["group_size"])
            else:
                mark(row, Status.DUPLICATE, self.stage, self.reason, f"near-duplicate of {d['survivor_locator']}: {d['detail']}")
                row["duplicate_of"] = d["duplicate_of"]
        return to_table(rows)


def resolve_in_process(op: GlobalOperator, table: pa.Table, partitions: int = 3) -> pa.Table:
    """summarize -> hash-partition on ``_key`` -> decide per partition -> combine -> apply, in one
    process: what ``curate.global_phase`` runs with Ray tasks (tests and benchmarks use it)."""

    summary = op.summarize(table)
    if summary.num_rows == 0:
        return op.apply(table, DECISION_SCHEMA.empty_table())
    part = np.asarray(partition_of(summary["_key"].combine_chunks(), partitions))
    partials = [op.decide(summary.filter(pa.array(part == p))) for p in range(partitions)]
    decisions = op.combine(pa.concat_tables(partials))
    return op.apply(table, decisions)


def _side(prefix: str, t: pa.Table, files, idx: pa.Array) -> dict[str, pa.Array]:
    return {
        f"{prefix}_primary": t["primary"].take(idx),
        f"{prefix}_seq": t["seq"].take(idx),
        f"{prefix}_locator": t["locator"].take(idx),
        f"{prefix}_file": files.take(idx),
    }


def _numpy(values) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _pad(t: pa.Table) -> pa.Table:
    cols = {f.name: (t[f.name] if f.name in t.column_names else pa.nulls(t.num_rows, f.type)) for f in PARTIAL_SCHEMA}
    return pa.table(cols, schema=PARTIAL_SCHEMA)


def _nodes(edges: pa.Table) -> pa.Table:
    """The distinct endpoints of ``edges`` with their ranking numbers, locator and file."""
    sides = []
    for p in ("a", "b"):
        sides.append(
            pa.table(
                {
                    "id": edges[p],
                    "primary": edges[f"{p}_primary"],
                    "seq": edges[f"{p}_seq"],
                    "locator": edges[f"{p}_locator"],
                    "file": edges[f"{p}_file"],
                }
            )
        )
    both = pa.concat_tables(sides)
    g = both.group_by("id", use_threads=False).aggregate(
        [("primary", "first"), ("seq", "first"), ("locator", "first"), ("file", "first")]
    )
    g = g.select(["id", "primary_first", "seq_first", "locator_first", "file_first"])
    return g.rename_columns(["id", "primary", "seq", "locator", "file"]).sort_by("id")


