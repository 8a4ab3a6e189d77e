"""The machinery every near-duplicate operator shares: LSH keys -> candidate pairs -> verified
edges -> connected components -> one survivor per group.

A modality operator (``dedup_image_phash``, ``dedup_video``, ``dedup_audio``, ``dedup_text_minhash``,
``dedup_semantic``) subclasses ``NearDupOperator`` and supplies two things:

- ``signatures(live)``: per kept, eligible row, a compact signature (columns read by the
  verifier) and a set of 64-bit LSH keys (band values, landmark hashes, cluster ids). A row
  that cannot be read gets an error instead and is quarantined, never silently skipped.
- ``verifier(rows)``: a vectorised check of candidate pairs (Hamming distance, estimated
  Jaccard, offset-consistent matches, cosine similarity) that returns which pairs are
  near-duplicates and a score for each.

How it runs on the engine's map-reduce (``curate.global_phase``), holding a bounded number of
bytes per row in every process (the numbers: benchmarks/bench_scale_dedup.py):

1. map, ``summarize(file)`` -> ``RowSummary``: the file's ROW TABLE, one row per eligible row
   (id, ranking numbers, locator, its key set ``_keys`` capped at ``max_keys`` by a consistent
   bottom-k sample, the signature columns, an error if it could not be signed), stored once, and
   its KEY ROWS, one per (row, LSH key): ``_key`` and ``_row`` (the row's index in the row
   table), 12 bytes. Only key rows are hash-partitioned on ``_key``; the engine turns
   (file, ``_row``) into a 64-bit row reference (file index << 32 | row).
2. hot keys: keys shared by more than ``max_bucket`` key rows (counted per partition, collected
   once, a few per million rows).
3. reduce, ``decide_partition(keys, refs, rows, hot)``: rows sharing a key form a bucket; only
   pairs inside a bucket are candidates, never all pairs. Singleton buckets are dropped before
   anything is read; the signatures of the rows left (``rows.take(refs)``) are read from the row
   tables, once per row and partition. A pair that shares several keys is checked in exactly one
   bucket, the one of its smallest shared key that is not hot (both rows' key sets are in the
   row tables), so the number of verifications is the number of distinct candidate pairs. A HOT
   bucket (more than ``max_bucket`` members) is verified against representatives, not all pairs:
   its first member (by row reference) is checked against every other; the members it does not
   match are checked against the first of them, and so on, ``bucket_reps`` times; what is left
   is checked pair by pair when at most ``max_bucket`` remain, else not in this bucket (counted
   as ``hot_unverified``). A group of g near-identical rows thus gives about g star edges instead
   of g^2/2. A star pair is emitted in the smallest hot key the two share, and only when they
   share no key that is not hot (that bucket checks them). Verified pairs come out as EDGES of
   two row references, a score and a detail (``EDGE_SCHEMA``).
4. ``combine_refs(edges, rows, errors)``: run once after every partition is decided. Edges from
   all partitions are joined into duplicate groups by connected components over numpy arrays
   (``operators.dedup.components``: memory per edge and per vertex stated there, bounded by the
   number of duplicates, not by the corpus), with one survivor per group by the policy that
   ``dedup_exact`` uses (first_seen, highest_resolution, longest, best_score), then
   (``prefer_text``) a row with text before one without, then ingest order, then id. Rows that
   could not be signed are quarantined (they never enter the shuffle). ``report_stats`` then gives
   the thresholds and counts the engine writes to OUT/artifacts/<stage>/dedup.json.
5. apply: duplicates get status ``duplicate``, the operator's reason, ``duplicate_of`` = the
   survivor's id and a detail naming the survivor and the distance or similarity (to the
   survivor itself where the two share an edge, else the edge that linked the row into the group).

``decide(summary)`` and ``combine(partials)`` are the same steps on one in-memory summary with
self-contained edge rows (``PARTIAL_SCHEMA``: ids, ranking numbers and files on each edge), for
tests and notebooks; ``curate.global_phase.run_in_process`` runs the engine's path in one process.

Texts are not absorbed here, unlike ``dedup_exact``: a near-duplicate is other media (a crop, a
re-encode, another cut), so its caption need not describe the survivor. ``prefer_text`` makes a
captioned row the survivor whenever the policy ranks it equal, which keeps the captioned copy of
a group (the texts of the others stay on their duplicate rows).

Groups are transitive (a~b and b~c puts a, b and c in one group even when a and c are further
apart than the threshold): that is the standard behaviour of corpus-scale dedup (NeMo Curator,
DataTrove) and the reason thresholds should be tight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from operators.base import GlobalOperator
from operators.dedup.components import (
    describe_links,
    group_decisions,
    group_edges,
    id_ranks,
    resolve_groups,
    vertex_numbers,
)
from operators.dedup.decisions import DECISION_SCHEMA, apply_decisions, decision_table
from operators.dedup.exact import ExactDedup, SurvivorPolicyParams, rows_with_text
from operators.dedup.lsh import PAD, KeyLists, as_key, bucket_pairs, cap_key_matrix, cap_keys, hot_keys
from operators.errors import SkipSample
from schemas.enums import ReasonCode, Status

__all__ = [
    "EDGE_SCHEMA",
    "PARTIAL_SCHEMA",
    "REF_SHIFT",
    "NearDupOperator",
    "NearDupParams",
    "PartitionResult",
    "RowSource",
    "RowSummary",
    "Signatures",
    "TableRows",
    "Verified",
    "first_media",
]

log = logging.getLogger(__name__)

#: a row reference is file index << REF_SHIFT | row index in that file's row table
REF_SHIFT = 32
_ROW_MASK = (1 << REF_SHIFT) - 1

#: what ``decide_partition`` emits: one row per verified pair of row references
EDGE_SCHEMA = pa.schema(
    [
        pa.field("a", pa.int64()),
        pa.field("b", pa.int64()),
        pa.field("score", pa.float64()),  # distance (lower is closer) or similarity (higher is closer)
        pa.field("detail", pa.string()),  # the numbers behind the score
    ]
)

#: the row table's own columns (the signature columns follow): what the combine step reads of a
#: vertex, the key set of the once-per-pair rule, and why a row could not be signed
ROW_FIELDS = ("id", "primary", "seq", "locator", "has_text", "_keys", "_error_reason", "_error_detail")
VERTEX_FIELDS = ["id", "primary", "seq", "locator", "has_text"]

#: what ``decide`` (in memory) emits, one row per entry: a verified ``edge``, a row that could not
#: be signed (``error``), or the partition's ``counts``
PARTIAL_SCHEMA = pa.schema(
    [
        pa.field("entry", pa.string()),  # edge | error | counts
        pa.field("a", pa.string()),
        pa.field("b", pa.string()),
        pa.field("score", pa.float64()),  # distance (lower is closer) or similarity (higher is closer)
        pa.field("detail", pa.string()),  # edges: the numbers behind the score; errors: the message
        pa.field("reason", pa.string()),  # errors: the ReasonCode
        pa.field("a_primary", pa.float64()),
        pa.field("a_seq", pa.int64()),
        pa.field("a_locator", pa.string()),
        pa.field("a_file", pa.string()),
        pa.field("a_has_text", pa.bool_()),  # for prefer_text (null: False)
        pa.field("b_primary", pa.float64()),
        pa.field("b_seq", pa.int64()),
        pa.field("b_locator", pa.string()),
        pa.field("b_file", pa.string()),
        pa.field("b_has_text", pa.bool_()),
        pa.field("candidates", pa.int64()),  # counts: candidate pairs verified in the partition
        # counts: the partition's other counters (``COUNTERS``)
        pa.field("key_rows", pa.int64()),
        pa.field("rows_read", pa.int64()),
        pa.field("hot_buckets", pa.int64()),
        pa.field("hot_members", pa.int64()),
        pa.field("hot_unverified", pa.int64()),
    ]
)

#: the counters of a partition (summed over partitions into the report's stats)
COUNTERS = ("key_rows", "rows_read", "candidate_pairs", "edges", "hot_buckets", "hot_members", "hot_unverified")
_COUNT_COLUMNS = ("key_rows", "rows_read", "hot_buckets", "hot_members", "hot_unverified")


def first_media(rec: dict[str, Any], modality: str) -> dict[str, Any] | None:
    """The first readable media item of ``modality`` of a record."""
    for m in rec.get("media") or []:
        if m and m.get("modality") == modality and not m.get("error"):
            return m
    return None


@dataclass
class Signatures:
    """What a modality operator computes for the live rows of one file (aligned with them)."""

    keys: list[np.ndarray]  #: per row: uint64 LSH keys (empty: the row has no candidates)
    columns: dict[str, pa.Array] = field(default_factory=dict)  #: per row: the signature for verification
    #: per row: why it could not be signed (``operators.errors.media_failure`` of the error), else None
    errors: list[SkipSample | None] = field(default_factory=list)


@dataclass
class Verified:
    """One chunk of ``edges``: the verified pairs (row positions, score, detail) among
    ``candidates`` candidate pairs checked (a chunk may hold candidates and no edge)."""

    left: np.ndarray
    right: np.ndarray
    score: np.ndarray
    detail: list[str] | None
    candidates: int


class RowSummary(NamedTuple):
    """What the map step makes of one file: key rows (``_key`` int64, ``_row`` int32, ``_rank``
    uint16: the key's place in its row's sorted key list) and the row table they point into (one
    row per eligible row: ``ROW_FIELDS`` + signature columns)."""

    keys: pa.Table
    rows: pa.Table


@dataclass
class PartitionResult:
    """One partition's verified edges (``EDGE_SCHEMA``) and counters (``COUNTERS``)."""

    edges: pa.Table
    counts: dict[str, int]


class RowSource:
    """Rows of the row tables by reference, in the order asked (``take``). Subclasses read one
    file's rows (``rows_of``): from memory (``TableRows``) or from the map step's files."""

    #: the row tables' columns, when known (the reduce step then reads only the ones it needs)
    column_names: list[str] | None = None

    def rows_of(self, file: int, rows: np.ndarray, columns: list[str] | None) -> pa.Table:  # pragma: no cover
        raise NotImplementedError

    def take(self, refs: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        refs = np.asarray(refs, dtype=np.int64)
        order = np.argsort(refs, kind="stable")
        files = refs[order] >> REF_SHIFT
        rows = refs[order] & _ROW_MASK
        starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]]) if len(refs) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(refs)]
        parts = [self.rows_of(int(files[lo]), rows[lo:hi], columns) for lo, hi in zip(starts, ends, strict=True)]
        if not parts:
            return self.rows_of(-1, np.zeros(0, np.int64), columns)
        table = pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else parts[0]
        if len(refs) > 1 and (order[1:] < order[:-1]).any():  # back to the order asked
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            table = table.take(pa.array(inverse))
        return table


class TableRows(RowSource):
    """Row tables held in memory, file index = position in the list."""

    def __init__(self, tables: Sequence[pa.Table]) -> None:
        self.tables = list(tables)
        self.column_names = self.tables[0].column_names if self.tables else None

    def rows_of(self, file: int, rows: np.ndarray, columns: list[str] | None) -> pa.Table:
        t = self.tables[max(0, file)]
        if columns is not None:
            t = t.select(columns)
        return t.take(pa.array(rows, pa.int64()))


#: loads one partition's edges: columns -> table (``EDGE_SCHEMA`` columns)
EdgeLoader = Callable[[list[str]], pa.Table]

#: verifier(left, right) -> (is near-duplicate, score, detail or None) for pairs of row positions
Verifier = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, list[str] | None]]


class NearDupParams(SurvivorPolicyParams):
    """Survivor policy (as in dedup_exact) plus which rows take part and how buckets are checked."""

    layouts: list[str] | None = Field(
        None, description="layouts whose rows take part (null: the operator's default set; [] : every layout)"
    )
    max_keys: int = Field(64, ge=1, description="LSH keys kept per row (a consistent bottom-k sample past that)")
    max_bucket: int = Field(
        200,
        ge=2,
        description="a bucket (rows sharing one LSH key) with more members is verified against representatives "
        "(star edges), not pair by pair: a group of g identical rows costs ~g checks, not g^2/2 (a bucket "
        "checked pair by pair costs each of its rows up to max_bucket/2 checks, per key they share)",
    )
    bucket_reps: int = Field(
        8, ge=1, description="representatives per hot bucket (each checks the members the earlier ones did not match)"
    )


NP = TypeVar("NP", bound=NearDupParams)


class NearDupOperator(GlobalOperator[NP]):
    """Base of the near-duplicate operators (see the module docstring)."""

    #: the engine runs the row-reference protocol (``curate.global_phase``): summarize returns a
    #: RowSummary, decide_partition reads rows by reference, combine_refs joins the edges
    row_refs: ClassVar[bool] = True
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
    #: OUT/artifacts/<stage>/ file of ``report`` (read by the dedup report)
    report_file: ClassVar[str | None] = "dedup.json"

    _primary = ExactDedup._primary  # the survivor ranking dedup_exact uses

    # -- what subclasses implement -------------------------------------------------------------
    def signatures(self, live: pa.Table) -> Signatures:  # pragma: no cover - abstract
        raise NotImplementedError

    def verifier(self, summary: pa.Table) -> Verifier:  # pragma: no cover - abstract
        raise NotImplementedError

    def thresholds(self) -> dict[str, Any]:
        """The numbers that decide a near-duplicate, for logs, details and the dedup report."""
        return {}

    def keys_per_row(self) -> int:
        """About how many key rows a row makes (the engine sizes its partitions with it)."""
        return self.params.max_keys

    def bucket_cap(self) -> int | None:
        """Buckets with more members than this are hot (None: every bucket is checked pair by pair)."""
        return self.params.max_bucket

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
    def summarize(self, table: pa.Table) -> RowSummary:  # type: ignore[override]
        live = table.filter(pa.array(self.eligible(table)))
        sig = self.signatures(live) if live.num_rows else Signatures(keys=[])
        return self.summary_from_signatures(live, sig)

    def summary_from_signatures(self, live: pa.Table, sig: Signatures) -> RowSummary:
        """The row table (one row per row of ``live``) and its key rows (one per capped key).

        ``sig.keys`` is a list of per-row arrays, or one (rows, k) matrix (the vectorised path the
        benchmarks use for millions of rows)."""
        n = live.num_rows
        errors = sig.errors or [None] * n
        err = np.array([e is not None for e in errors], dtype=bool)
        cap = self.params.max_keys
        if isinstance(sig.keys, np.ndarray):  # a row's repeated keys (equal views) are kept once
            km = np.sort(as_key(cap_key_matrix(np.asarray(sig.keys, dtype=np.uint64).reshape(n, -1), cap)), axis=1)
            distinct = np.ones(km.shape, dtype=bool)
            distinct[:, 1:] = km[:, 1:] != km[:, :-1]
            counts = distinct.sum(axis=1).astype(np.int64)
            flat = km[distinct]
        else:
            capped = [cap_keys(k, cap) for k in sig.keys]
            counts = np.array([len(k) for k in capped], dtype=np.int64)
            flat = np.concatenate(capped) if capped else np.zeros(0, np.uint64)
        if err.any():  # an error row keeps no keys
            flat = flat[np.repeat(~err, counts)]
            counts[err] = 0
        flat = as_key(flat)
        owner = np.repeat(np.arange(n), counts)
        if not isinstance(sig.keys, np.ndarray) and (flat < 0).any():  # cap_keys sorts as uint64
            flat = flat[np.lexsort((flat, owner))]  # each row's keys sorted as int64 (KeyLists.shared_below)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if offsets[-1] < 2**31:
            key_lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat, pa.int64()))
        else:
            key_lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int64()))
        rank = np.arange(len(flat), dtype=np.int64) - np.repeat(offsets[:-1], counts)
        keys = pa.table(
            {
                "_key": pa.array(flat, pa.int64()),
                "_row": pa.array(owner.astype(np.int32), pa.int32()),
                "_rank": pa.array(rank.astype(np.uint16), pa.uint16()),  # the key's place in the row's sorted list
            }
        )
        cols: dict[str, Any] = {
            "id": live["id"] if n else pa.array([], pa.string()),
            "primary": pa.array(_numpy(self._primary(live)) if n else np.zeros(0), pa.float64()),
            "seq": live["seq"] if n else pa.array([], pa.int64()),
            "locator": live["locator"] if n else pa.array([], pa.string()),
            "has_text": pa.array(rows_with_text(live) & self.params.prefer_text if n else np.zeros(0, bool), pa.bool_()),
            "_keys": key_lists,
            "_error_reason": pa.array([e.reason if e else None for e in errors], pa.string()),
            "_error_detail": pa.array([e.detail if e else None for e in errors], pa.string()),
        }
        cols.update(sig.columns)
        return RowSummary(keys, pa.table(cols))

    # -- reduce ------------------------------------------------------------------------------------
    def decide_partition(
        self, key: np.ndarray, ref: np.ndarray, rows: RowSource, hot: np.ndarray, rank: np.ndarray | None = None
    ) -> PartitionResult:
        """One partition's key rows (``_key``, row reference, ``_rank``) -> its verified edges. Rows
        are read from ``rows`` only for buckets of at least two members; ``hot`` are the hot keys
        of every partition (sorted)."""
        counts = dict.fromkeys(COUNTERS, 0)
        counts["key_rows"] = len(key)
        empty = PartitionResult(EDGE_SCHEMA.empty_table(), counts)
        if len(key) < 2:
            return empty
        order = np.lexsort((ref, key))
        key, ref = np.asarray(key, np.int64)[order], np.asarray(ref, np.int64)[order]
        rank = np.asarray(rank)[order] if rank is not None else None
        first = np.r_[True, key[1:] != key[:-1]]
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, len(key)))
        keep = np.repeat(sizes >= 2, sizes)
        key, ref = key[keep], ref[keep]
        rank = rank[keep] if rank is not None else None
        del order, first, starts, sizes, keep
        if len(key) == 0:
            return empty
        distinct = np.unique(ref)
        counts["rows_read"] = len(distinct)
        sigs = rows.take(distinct, self.signature_columns(rows))
        pos = np.searchsorted(distinct, ref)
        parts = []
        for v in self.edges(key, pos, sigs, np.asarray(hot, np.int64), counts, rank=rank):
            counts["candidate_pairs"] += v.candidates
            if len(v.left):
                parts.append(
                    pa.table(
                        {
                            "a": pa.array(distinct[v.left]),
                            "b": pa.array(distinct[v.right]),
                            "score": pa.array(np.asarray(v.score, dtype=np.float64)),
                            "detail": pa.array(v.detail, pa.string()) if v.detail is not None else pa.nulls(len(v.left), pa.string()),
                        },
                        schema=EDGE_SCHEMA,
                    )
                )
        edges = pa.concat_tables(parts) if parts else EDGE_SCHEMA.empty_table()
        counts["edges"] = edges.num_rows
        return PartitionResult(edges, counts)

    def signature_columns(self, rows: RowSource) -> list[str] | None:
        """Columns of the row tables the reduce step reads (None: all but the vertex ones)."""
        if rows.column_names is None:
            return None
        return [c for c in rows.column_names if c not in VERTEX_FIELDS and c not in ("_error_reason", "_error_detail")]

    def edges(
        self, bucket: np.ndarray, pos: np.ndarray, sigs: pa.Table, hot: np.ndarray, counts: dict[str, int], rank: np.ndarray | None = None
    ) -> Iterator[Verified]:
        """Verified pairs of positions in ``sigs``, chunk by chunk, from key rows sorted by
        (``bucket`` key, row reference), ``pos`` being each key row's position in ``sigs``.
        Default: every pair inside a bucket of at most ``bucket_cap()`` members, checked once
        (in the bucket of its smallest shared key that is not hot); hot buckets by
        representatives (see the module docstring). Only key columns are sorted; signatures are
        gathered by index."""
        if len(bucket) < 2:
            return
        keys_of = KeyLists(sigs["_keys"], hot)
        verify = self.verifier(sigs)
        cap = self.bucket_cap()
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        sizes = np.diff(np.append(starts, len(bucket)))
        is_hot = sizes > cap if cap is not None else np.zeros(len(sizes), dtype=bool)
        normal = np.repeat(~is_hot, sizes)
        nb, npos = bucket[normal], pos[normal]
        if rank is None:  # each key's place in its row's sorted list
            rank = keys_of.rank_of(pos, bucket)
        nrank = np.asarray(rank, dtype=np.int64)[normal]
        width = keys_of.width
        counting = self.min_shared_keys > 1  # needs every shared key counted: the full comparison
        chunk = max(1024, (1 << 25) // max(1, width * width) if counting else (1 << 22) // max(1, width))
        for lo_all, hi_all in bucket_pairs(nb, max_pairs=chunk):
            left_all, right_all = npos[lo_all], npos[hi_all]
            if counting:
                smallest, _, shared = keys_of.shared(left_all, right_all)
                once = (smallest == nb[lo_all]) & (shared >= self.min_shared_keys)
            else:  # checked here unless they share a smaller key that is not hot
                once = ~keys_of.shared_below(left_all, right_all, nrank[lo_all], nrank[hi_all])
            left, right = left_all[once], right_all[once]
            if left.size == 0:
                continue
            yield self._verified(verify, left, right, int(left.size))
        for s, size in zip(starts[is_hot].tolist(), sizes[is_hot].tolist(), strict=True):
            counts["hot_buckets"] += 1
            counts["hot_members"] += size
            yield from self._star(int(bucket[s]), pos[s : s + size], keys_of, verify, cap, counts)

    def _verified(self, verify: Verifier, left: np.ndarray, right: np.ndarray, candidates: int, emit=None) -> Verified:
        ok, score, detail = verify(left, right)
        if emit is not None:
            ok = ok & emit
        keep = np.flatnonzero(ok)
        return Verified(left[keep], right[keep], np.asarray(score)[keep], [detail[i] for i in keep] if detail else None, candidates)

    def _star(self, key: int, members: np.ndarray, keys_of: KeyLists, verify: Verifier, cap: int, counts: dict[str, int]) -> Iterator[Verified]:
        """A hot bucket: members (row positions, in reference order) checked against
        representatives. An edge is emitted where the pair shares no key that is not hot and
        this is the smallest hot key they share (so each pair comes out once)."""
        remaining = members
        step = max(1024, (1 << 25) // max(1, keys_of.width**2))
        for _ in range(self.params.bucket_reps):
            if len(remaining) <= cap:
                break
            rep, others = remaining[0], remaining[1:]
            matched = np.zeros(len(others), dtype=bool)
            for lo in range(0, len(others), step):
                right = others[lo : lo + step]
                left = np.full(len(right), rep)
                cold, hot_min, shared = keys_of.shared(left, right)
                enough = shared >= self.min_shared_keys
                ok, score, detail = verify(left, right)
                ok = np.asarray(ok, dtype=bool) & enough
                matched[lo : lo + len(right)] = ok
                emit = ok & (cold == PAD) & (hot_min == key)
                keep = np.flatnonzero(emit)
                yield Verified(left[keep], right[keep], np.asarray(score)[keep], [detail[i] for i in keep] if detail else None, len(right))
            remaining = others[~matched]
        if len(remaining) > cap:
            counts["hot_unverified"] += len(remaining)
            return
        if len(remaining) < 2:
            return
        m = len(remaining)  # what is left, pair by pair (each pair once: smallest shared hot key)
        i, j = np.triu_indices(m, k=1)
        for lo in range(0, len(i), step):
            left, right = remaining[i[lo : lo + step]], remaining[j[lo : lo + step]]
            cold, hot_min, shared = keys_of.shared(left, right)
            emit = (cold == PAD) & (hot_min == key) & (shared >= self.min_shared_keys)
            if emit.any():
                yield self._verified(verify, left[emit], right[emit], int(emit.sum()))

    # -- combine -----------------------------------------------------------------------------------
    def combine_refs(self, parts: Sequence[EdgeLoader], rows: RowSource, errors: pa.Table | None = None) -> pa.Table:
        """Every partition's edges -> one decision per changed row, with its reference ``_ref``
        (``_file`` is left null: the engine knows each reference's file): rows that could not be
        signed (``errors``: ``_ref``, ``id``, ``_error_reason``, ``_error_detail``) are
        quarantined, then the groups of the edges (``operators.dedup.components``)."""
        out = []
        if errors is not None and errors.num_rows:
            err = decision_table(errors.num_rows, id=errors["id"], error_reason=errors["_error_reason"], error_detail=errors["_error_detail"])
            out.append(err.append_column("_ref", errors["_ref"]))
        loaded = [load(["a", "b", "score"]) for load in parts]
        sizes = np.array([t.num_rows for t in loaded], dtype=np.int64)
        if sizes.sum():
            a = np.concatenate([t["a"].to_numpy() for t in loaded])
            b = np.concatenate([t["b"].to_numpy() for t in loaded])
            score = np.concatenate([t["score"].to_numpy() for t in loaded])
            del loaded
            verts, ai, bi = vertex_numbers(a, b)
            del a, b
            v = rows.take(verts, VERTEX_FIELDS)
            ids = v["id"].combine_chunks()
            res = resolve_groups(
                ai,
                bi,
                score,
                len(verts),
                primary=v["primary"].to_numpy(),
                textless=~pc.fill_null(v["has_text"], False).to_numpy(zero_copy_only=False),
                seq=pc.fill_null(v["seq"], np.iinfo(np.int64).max).to_numpy(),
                id_rank=id_ranks(ids),
                higher_is_closer=self.higher_is_closer,
            )
            details = _cited_details(parts, sizes, res.link)
            locators = v["locator"].combine_chunks()
            out_score, detail = describe_links(
                res, ai, bi, score, locators, details, higher_is_closer=self.higher_is_closer, score_name=self.score_name
            )
            groups = group_decisions(res, ids, locators, out_score, detail)
            out.append(groups.append_column("_ref", pa.array(verts)))
        if not out:
            return DECISION_SCHEMA.empty_table().append_column("_ref", pa.array([], pa.int64()))
        return pa.concat_tables(out)

    def report_stats(self, counts: dict[str, int], decisions: pa.Table) -> dict[str, Any]:
        """Thresholds and counts (read by the dedup report): candidate pairs verified, edges,
        groups, duplicates, rows that could not be signed, key rows, rows read by the reducers,
        hot buckets and their members (and those left unverified)."""
        dup = pc.is_valid(decisions["duplicate_of"])
        err = pc.is_valid(decisions["error_reason"])
        survivors = pc.and_(pc.invert(dup), pc.invert(err))
        stats = {
            "candidate_pairs": int(counts.get("candidate_pairs", 0)),
            "edges": int(counts.get("edges", 0)),
            "groups": int(pc.sum(survivors).as_py() or 0),
            "duplicates": int(pc.sum(dup).as_py() or 0),
            "errors": int(pc.sum(err).as_py() or 0),
        }
        stats.update({k: int(counts.get(k, 0)) for k in COUNTERS if k not in stats})
        log.info("%s: %s; thresholds %s", self.stage, stats, self.thresholds())
        return {
            "operator": self.name,
            "stage": self.stage,
            "reason": str(self.reason),
            "score": self.score_name,
            "params": self.params.model_dump(mode="json"),
            "thresholds": self.thresholds(),
            "stats": stats,
        }

    # -- the same steps in memory, on self-contained edge rows -------------------------------------
    def decide(self, summary: RowSummary) -> pa.Table:  # type: ignore[override]
        """``decide_partition`` on one in-memory summary as a single partition, as ``PARTIAL_SCHEMA``
        entries: edges carrying both ends' ids and ranking numbers, errors, one ``counts``."""
        rows = summary.rows
        src = TableRows([rows])
        key = summary.keys["_key"].to_numpy()
        ref = summary.keys["_row"].to_numpy().astype(np.int64)
        rank = summary.keys["_rank"].to_numpy() if "_rank" in summary.keys.column_names else None
        res = self.decide_partition(key, ref, src, hot_keys(key, self.bucket_cap()), rank)
        parts = []
        errs = rows.filter(pc.is_valid(rows["_error_reason"]))
        if errs.num_rows:
            parts.append(_partial("error", errs, detail=errs["_error_detail"], reason=errs["_error_reason"]))
        e = res.edges
        if e.num_rows:
            t = rows.select(VERTEX_FIELDS)
            parts.append(_partial("edge", t, e["a"].to_numpy(), e["b"].to_numpy(), score=e["score"], detail=e["detail"]))
        counts = {c: pa.array([res.counts[c]], pa.int64()) for c in _COUNT_COLUMNS}
        parts.append(_entries("counts", 1, candidates=pa.array([res.counts["candidate_pairs"]], pa.int64()), **counts))
        return pa.concat_tables(parts)

    def combine(self, partials: pa.Table) -> pa.Table:
        """Self-contained entries (``PARTIAL_SCHEMA``) -> one decision per changed id: rows that
        could not be signed (quarantined), then the groups of the edges."""
        entry = partials["entry"]
        errors = partials.filter(pc.equal(entry, "error"))
        edges = partials.filter(pc.equal(entry, "edge"))
        out = []
        if errors.num_rows:
            out.append(
                decision_table(
                    errors.num_rows,
                    id=errors["a"],
                    _file=errors["a_file"],
                    error_reason=errors["reason"],
                    error_detail=errors["detail"],
                )
            )
        if edges.num_rows:
            out.append(group_edges(edges, higher_is_closer=self.higher_is_closer, score_name=self.score_name))
        if not out:
            return DECISION_SCHEMA.empty_table()
        return pa.concat_tables(out).sort_by("_file")

    def report(self, partials: pa.Table, decisions: pa.Table) -> dict[str, Any]:
        """``report_stats`` of self-contained entries (``PARTIAL_SCHEMA``)."""
        entry = partials["entry"]
        rows = partials.filter(pc.equal(entry, "counts"))
        counts = {c: int(pc.sum(rows[c]).as_py() or 0) for c in _COUNT_COLUMNS if c in rows.column_names}
        counts["candidate_pairs"] = int(pc.sum(rows["candidates"]).as_py() or 0)
        counts["edges"] = int(pc.sum(pc.equal(entry, "edge")).as_py() or 0)
        return self.report_stats(counts, decisions)

    # -- apply -------------------------------------------------------------------------------------
    def apply(self, table: pa.Table, decisions: pa.Table) -> pa.Table:
        return apply_decisions(
            table,
            decisions,
            stage=self.stage,
            reason=self.reason,
            group_key=self.group_key,
            describe=lambda d: f"near-duplicate of {d['survivor_locator']}: {d['detail']}",
            eligible=self.eligible(table),
        )


def _cited_details(parts: Sequence[EdgeLoader], sizes: np.ndarray, link: np.ndarray) -> Callable[[np.ndarray], list[str | None]]:
    """The detail texts of the edges that decisions cite, read part by part (one part's detail
    column at a time), as a lookup by global edge number."""
    cited = np.unique(link[link >= 0])
    bounds = np.r_[0, np.cumsum(sizes)]
    found: list[pa.Array] = []
    for p, load in enumerate(parts):
        lo, hi = np.searchsorted(cited, [bounds[p], bounds[p + 1]])
        if hi > lo:
            col = load(["detail"])["detail"].combine_chunks()
            found.append(col.take(pa.array(cited[lo:hi] - bounds[p])))
    values = pa.concat_arrays(found) if found else pa.array([], pa.string())

    def details(edges: np.ndarray) -> list[str | None]:
        return values.take(pa.array(np.searchsorted(cited, edges))).to_pylist()

    return details


def _entries(entry: str, n: int, **cols: Any) -> pa.Table:
    """A PARTIAL_SCHEMA table of ``n`` ``entry`` rows from the given columns (the others null)."""
    cols["entry"] = pa.array([entry] * n, pa.string())
    return pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in PARTIAL_SCHEMA}, schema=PARTIAL_SCHEMA)


def _partial(entry: str, t: pa.Table, left=None, right=None, **cols: Any) -> pa.Table:
    """Entries for pairs (left, right) of rows of ``t``, or for every row of ``t`` (no pairs)."""
    files = t["_file"] if "_file" in t.column_names else pa.nulls(t.num_rows, pa.string())
    li = pa.array(np.arange(t.num_rows) if left is None else left, pa.int64())
    sides = {"a": li} if right is None else {"a": li, "b": pa.array(right, pa.int64())}
    for prefix, idx in sides.items():
        cols[prefix] = t["id"].take(idx)
        cols[f"{prefix}_primary"] = t["primary"].take(idx)
        cols[f"{prefix}_seq"] = t["seq"].take(idx)
        cols[f"{prefix}_locator"] = t["locator"].take(idx)
        cols[f"{prefix}_file"] = files.take(idx)
        if "has_text" in t.column_names:
            cols[f"{prefix}_has_text"] = t["has_text"].take(idx)
    if "score" in cols:
        cols["score"] = pa.array(np.asarray(cols["score"], dtype=np.float64))
    if cols.get("detail") is None:
        cols.pop("detail", None)
    elif isinstance(cols["detail"], list):
        cols["detail"] = pa.array(cols["detail"], pa.string())
    return _entries(entry, len(li), **cols)


def _numpy(values) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)
