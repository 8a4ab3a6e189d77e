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
   partitions are joined into duplicate groups by connected components, with one survivor per
   group by the policy that ``dedup_exact`` uses (first_seen, highest_resolution, longest,
   best_score), then (``prefer_text``) a row with text before one without, then ingest order,
   then id (``operators.dedup.components``: memory bounded by the number of duplicates, not by
   the corpus). ``report(partials, decisions)`` then gives the
   thresholds and counts the engine writes to OUT/artifacts/<stage>/dedup.json.
4. apply: duplicates get status ``duplicate``, the operator's reason, ``duplicate_of`` = the
   survivor's id and a detail naming the survivor and the distance or similarity (to the
   survivor itself where the two share an edge, else the edge that linked the row into the group).

Texts are not absorbed here, unlike ``dedup_exact``: a near-duplicate is other media (a crop, a
re-encode, another cut), so its caption need not describe the survivor, and key rows are repeated
once per LSH key (up to ``max_keys``), so carrying texts would multiply what the map step moves.
``prefer_text`` makes a captioned row the survivor whenever the policy ranks it equal, which keeps
the captioned copy of a group (the texts of the others stay on their duplicate rows).

Groups are transitive (a~b and b~c puts a, b and c in one group even when a and c are further
apart than the threshold): that is the standard behaviour of corpus-scale dedup (NeMo Curator,
DataTrove) and the reason thresholds should be tight.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from operators.base import GlobalOperator
from operators.dedup.components import group_edges
from operators.dedup.decisions import DECISION_SCHEMA, apply_decisions, decision_table
from operators.dedup.exact import ExactDedup, SurvivorPolicyParams, rows_with_text
from operators.dedup.lsh import KeyLists, as_key, bucket_pairs, cap_key_matrix, cap_keys, first_shared_key
from operators.errors import SkipSample
from schemas.enums import ReasonCode, Status

__all__ = [
    "PARTIAL_SCHEMA",
    "NearDupOperator",
    "NearDupParams",
    "Signatures",
    "Verified",
    "first_media",
]

log = logging.getLogger(__name__)

#: what ``decide`` emits, one row per entry: a verified ``edge``, a row that could not be signed
#: (``error``), or the partition's ``counts``
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
    ]
)


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
    """One chunk of ``edges``: the verified pairs (positions, score, detail) among ``candidates``
    candidate pairs checked (a chunk may hold candidates and no edge)."""

    left: np.ndarray
    right: np.ndarray
    score: np.ndarray
    detail: list[str] | None
    candidates: int


#: verifier(left, right) -> (is near-duplicate, score, detail or None) for pairs of summary rows
Verifier = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, list[str] | None]]


class NearDupParams(SurvivorPolicyParams):
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
        errors = sig.errors or [None] * n
        err = np.array([e is not None for e in errors], dtype=bool)
        cap = self.params.max_keys
        if isinstance(sig.keys, np.ndarray):
            km = np.asarray(sig.keys, dtype=np.uint64).reshape(n, -1)
            if only is None:
                km = cap_key_matrix(km, cap)
            elif km.shape[1] > cap:
                raise ValueError("`only` needs rows of at most max_keys keys")
            counts = np.full(n, km.shape[1], dtype=np.int64)
            flat = km.reshape(-1)
        else:
            capped = [cap_keys(k, cap) for k in sig.keys]
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
            "has_text": pa.array(rows_with_text(live) & self.params.prefer_text, pa.bool_()).take(idx),
            "_keys": key_lists.take(idx),
            "_error_reason": pa.array([e.reason if e else None for e in errors], pa.string()).take(idx),
            "_error_detail": pa.array([e.detail if e else None for e in errors], pa.string()).take(idx),
        }
        for name, col in sig.columns.items():
            cols[name] = col.take(idx)
        return pa.table(cols)

    # -- reduce ------------------------------------------------------------------------------------
    def decide(self, summary: pa.Table) -> pa.Table:
        """This partition's verified edges, its rows that could not be signed, and one ``counts``
        entry (candidate pairs verified)."""
        if summary.num_rows == 0:
            return PARTIAL_SCHEMA.empty_table()
        is_err = pc.is_valid(summary["_error_reason"])
        parts = []
        errs = summary.filter(is_err)
        if errs.num_rows:
            parts.append(_partial("error", errs, detail=errs["_error_detail"], reason=errs["_error_reason"]))
        t = summary.filter(pc.invert(is_err)) if errs.num_rows else summary
        candidates = 0
        for v in self.edges(t):
            candidates += v.candidates
            if len(v.left):
                parts.append(_partial("edge", t, v.left, v.right, score=v.score, detail=v.detail))
        parts.append(_entries("counts", 1, candidates=pa.array([candidates], pa.int64())))
        return pa.concat_tables(parts)

    def edges(self, t: pa.Table) -> Iterator[Verified]:
        """Verified pairs of row positions in ``t``, chunk by chunk. Default: every pair inside a
        bucket (rows sharing ``_key``), checked once (in the bucket of its smallest shared key),
        then verified. Only the key column is sorted; rows are gathered by index."""
        if t.num_rows < 2:
            return
        order = pc.sort_indices(t["_key"]).to_numpy()  # stable: a deterministic order
        bucket = t["_key"].to_numpy()[order]
        keys_of = KeyLists(t["_keys"])
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
            ok, score, detail = verify(left, right)
            keep = np.flatnonzero(ok)
            yield Verified(left[keep], right[keep], score[keep], [detail[i] for i in keep] if detail else None, int(left.size))

    # -- combine -----------------------------------------------------------------------------------
    def combine(self, partials: pa.Table) -> pa.Table:
        """Every partition's entries -> one decision per changed id: rows that could not be signed
        (quarantined), then the groups of the edges (``operators.dedup.components``)."""
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
        """Thresholds and counts (read by the dedup report): candidate pairs verified, edges,
        groups, duplicates, rows that could not be signed."""
        entry = partials["entry"]
        dup = pc.is_valid(decisions["duplicate_of"])
        survivors = pc.and_(pc.invert(dup), pc.is_null(decisions["error_reason"]))
        stats = {
            "candidate_pairs": int(pc.sum(partials.filter(pc.equal(entry, "counts"))["candidates"]).as_py() or 0),
            "edges": int(pc.sum(pc.equal(entry, "edge")).as_py() or 0),
            "groups": int(pc.sum(survivors).as_py() or 0),
            "duplicates": int(pc.sum(dup).as_py() or 0),
            "errors": int(pc.sum(pc.equal(entry, "error")).as_py() or 0),
        }
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
