"""``clip_tags``: cheap zero-shot tagging with CLIP: each image against configurable prompts.

``tags`` maps a tag name to one prompt or a list of prompts (their text embeddings are averaged,
the usual prompt ensembling), e.g. ``{watermark: "a watermark", text: "a screenshot of text",
blurry: "a blurry photo"}``. Every tag writes ``tag_<name>`` into the scores, the row's maximum
over its images (one watermarked image flags the row):

- ``mode: softmax`` (default): the probability of the tag among all tags plus the ``background``
  prompts (e.g. "a photo"), with the model's logit scale, as CLIP zero-shot classification does;
  the background prompts give an image that is none of the tags somewhere to go;
- ``mode: cosine``: the raw cosine similarity of image and prompt, in [-1, 1].

Thresholds belong in a ``filter`` stage (e.g. ``{field: tag_watermark, max: 0.5}``).
Model and weights as for ``clip_score`` (see ``operators.clip.model``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from operators.base import StageContext
from operators.clip.model import ClipOperator
from operators.clip.params import ClipParams
from operators.registry import register_operator

__all__ = ["ClipTags", "ClipTagsParams"]

_TAG = re.compile(r"^[a-z0-9_]+$")


class ClipTagsParams(ClipParams):
    tags: dict[str, str | list[str]] = Field(
        default_factory=lambda: {"watermark": "a watermark", "text": "a screenshot of text", "blurry": "a blurry photo"},
        description="tag name -> prompt (or prompts, averaged); writes scores tag_<name>",
    )
    background: list[str] = Field(
        default_factory=lambda: ["a photo"], description="prompts for 'none of the tags' (softmax mode)"
    )
    mode: Literal["softmax", "cosine"] = Field("softmax", description="softmax over tags + background, or raw cosine")

    @field_validator("tags")
    @classmethod
    def _names(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        if not v:
            raise ValueError("give at least one tag")
        for name, prompts in v.items():
            if not _TAG.match(name):
                raise ValueError(f"tag name '{name}' must be lower-case letters, digits and _ (it becomes tag_{name})")
            if not prompts or (isinstance(prompts, list) and not all(isinstance(s, str) and s.strip() for s in prompts)):
                raise ValueError(f"tag '{name}' needs a non-empty prompt")
        return v


@register_operator
class ClipTags(ClipOperator[ClipTagsParams]):
    """Zero-shot CLIP scores of each row's images against configurable prompts."""

    name: ClassVar[str] = "clip_tags"
    writes: ClassVar[dict[str, str]] = {
        "tag_<name>": "per configured tag: softmax probability among tags + background (or cosine), max over images",
    }

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        self._classes: tuple[list[str], np.ndarray] | None = None

    def classes(self) -> tuple[list[str], np.ndarray]:
        """(tag names, (n_tags + n_background, d) class embeddings)."""
        if self._classes is None:
            p = self.params
            names, vecs = [], []
            groups = [(n, [s] if isinstance(s, str) else list(s)) for n, s in p.tags.items()]
            if p.mode == "softmax":
                groups += [(None, [b]) for b in p.background]
            for name, prompts in groups:
                e = self.bundle.encode_texts(prompts).mean(axis=0)
                vecs.append(e / max(float(np.linalg.norm(e)), 1e-12))
                if name is not None:
                    names.append(name)
            self._classes = (names, np.stack(vecs))
        return self._classes

    def process_batch(self, rows: list[dict[str, Any]]) -> None:
        p = self.params
        per_row = self.row_embeddings(rows)
        names, cls = self.classes()
        for row, pairs in zip(rows, per_row, strict=True):
            if not pairs:
                continue
            sims = np.stack([e for _, e in pairs]) @ cls.T  # (images, classes)
            if p.mode == "softmax":
                logits = sims * self.bundle.logit_scale
                logits -= logits.max(axis=1, keepdims=True)
                probs = np.exp(logits)
                vals = probs / probs.sum(axis=1, keepdims=True)
            else:
                vals = sims
            best = vals[:, : len(names)].max(axis=0)
            row["scores"] = {**(row.get("scores") or {}), **{f"tag_{n}": float(v) for n, v in zip(names, best, strict=True)}}
