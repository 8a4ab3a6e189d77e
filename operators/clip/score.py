"""``clip_score``: image-text similarity with an open_clip model (DataComp / LAION-style filtering).

Each image of a row is embedded and compared (cosine similarity of L2-normalised embeddings) with
the row's text:

- images (image-text rows, multi-image rows): the first non-empty of ``text_fields`` (default:
  caption, alt_text, instruction, the first user turn of the conversation);
- videos: their keyframes (media items with role ``keyframe``, which ``video_frames`` adds) when
  the row has any, else the middle frame of each video, decoded with PyAV;
- interleaved documents: every image against its nearest text segment.

Scores written (rows with images and a text; other rows are left as they are):

- ``clip_score``: the row's cosine similarity, in [-1, 1]: the mean over its images
  (``aggregate: mean``, the default) or the best image (``aggregate: max``);
- ``clip_score_min``: the worst image (a document or video with one off-topic picture);
- ``clip_score_scaled``: ``100 * max(clip_score, 0)``, the CLIPScore convention (torchmetrics);
  LAION-400M kept pairs with cosine >= 0.28 (ViT-B-32), DataComp's baselines keep the top 30%;
- ``clip_images``: how many images were scored.

With ``keep_embedding: true`` the row's image embedding (the mean of its images' embeddings,
L2-normalised, rounded to float16) is kept in ``meta["clip_embedding"]`` with the model in
``meta["clip_embedding_model"]`` and the number of images it averages in
``meta["clip_embedding_images"]``, for ``dedup_semantic`` with ``source: stored`` and for
``aesthetic_score``, which reuses a one-image embedding instead of encoding the image again.

Model and weights: see ``operators.clip.model`` (a local checkpoint, or a pretrained tag already in the
cache; nothing is downloaded; a missing file fails at ``curate validate``). The engine runs this
operator as an actor pool that loads the model once per worker; give the stage
``resources: {num_gpus: 1, concurrency: N, batch_size: 512}`` to run N GPU workers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from operators._meta import update_meta
from operators.clip.model import ClipOperator, mean_embedding, to_float16_list
from operators.clip.params import ClipParams
from operators.registry import register_operator
from schemas.text import PAIRING_TEXT_FIELDS

__all__ = ["ClipScore", "ClipScoreParams"]


class ClipScoreParams(ClipParams):
    text_fields: list[str] = Field(
        default_factory=lambda: list(PAIRING_TEXT_FIELDS),
        description="record fields tried in order for the text of an image (conversation: the first user turn)",
    )
    aggregate: Literal["mean", "max"] = Field("mean", description="clip_score over a row's images: mean or max")
    keep_embedding: bool = Field(
        False, description="keep the row's image embedding in meta.clip_embedding (float16-rounded) for semantic dedup"
    )


@register_operator
class ClipScore(ClipOperator[ClipScoreParams]):
    """Cosine similarity of each row's images (keyframes, document images) with its text."""

    name: ClassVar[str] = "clip_score"
    writes: ClassVar[dict[str, str]] = {
        "clip_score": "image-text cosine similarity in [-1, 1] (mean or max over the row's images)",
        "clip_score_min": "the lowest image-text cosine similarity of the row's images",
        "clip_score_scaled": "100 * max(clip_score, 0), the CLIPScore convention",
        "clip_images": "images scored for the row",
    }

    def process_batch(self, rows: list[dict[str, Any]]) -> None:
        p = self.params
        per_row = self.row_embeddings(rows, text_fields=p.text_fields)
        texts = sorted({job.text for pairs in per_row for job, _ in pairs if job.text})
        text_emb = dict(zip(texts, self.bundle.encode_texts(texts), strict=True)) if texts else {}
        ident = self.spec().ident
        for row, pairs in zip(rows, per_row, strict=True):
            if not pairs:
                continue
            sims = [float(np.dot(e, text_emb[job.text])) for job, e in pairs if job.text]
            scores = dict(row.get("scores") or {})
            if sims:
                best = max(sims) if p.aggregate == "max" else float(np.mean(sims))
                best = float(np.clip(best, -1.0, 1.0))
                scores.update(
                    clip_score=best,
                    clip_score_min=float(np.clip(min(sims), -1.0, 1.0)),
                    clip_score_scaled=100.0 * max(best, 0.0),
                    clip_images=float(len(sims)),
                )
            row["scores"] = scores
            if p.keep_embedding:
                update_meta(
                    row,
                    clip_embedding=to_float16_list(mean_embedding([e for _, e in pairs])),
                    clip_embedding_model=ident,
                    clip_embedding_images=len(pairs),
                )
