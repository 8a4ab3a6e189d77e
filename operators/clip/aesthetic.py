"""``aesthetic_score``: a LAION-style aesthetic predictor, a linear or small MLP head over CLIP
image embeddings, with its weights from a file.

The head file (``head``) holds the weights of a stack of linear layers, in any of these formats:
``.safetensors``, ``.pt``/``.pth`` (a ``state_dict``, or ``{"state_dict": ...}``), ``.npz``.
Keys are ``<layer>.weight`` with shape ``(out, in)`` and, optionally, ``<layer>.bias`` with shape
``(out,)``; layers run in the natural order of their names. Examples:

- a linear probe: ``weight (1, D)``, ``bias (1,)`` (LAION aesthetic predictor v1,
  ``sa_0_4_vit_l_14_linear.pth``);
- the LAION improved aesthetic predictor (``sac+logos+ava1-l14-linearMSE.pth``, ViT-L-14, D=768):
  ``layers.0 (1024, 768)``, ``layers.2 (128, 1024)``, ``layers.4 (64, 128)``, ``layers.6 (16, 64)``,
  ``layers.7 (1, 16)``, with no activation between them (``activation: none``, the default).

The first layer takes D inputs, D being the CLIP model's embedding size (512 for ViT-B-32, 768
for ViT-L-14), and the last gives one output: ``validate_setup`` checks the shapes, and that D
matches the model, before any work. The image embedding is L2-normalised first
(``normalize: true``), as LAION's predictors expect. The head runs in numpy, on the worker.

A row whose one-image CLIP embedding an earlier ``clip_score`` stage kept (``keep_embedding:
true``, same model and weights) is scored from that embedding (float16-rounded) with no image
decoded or encoded (``reuse_embedding``, on by default); other rows are encoded as usual.

Scores: ``aesthetic_score`` (the mean over the row's images: images, keyframes or a video's
middle frame, document images) and ``aesthetic_score_min``. LAION-Aesthetics kept images >= 5, 6 or
6.5 on the improved predictor's 1-10 scale.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from operators._meta import load_meta
from operators.base import OperatorError, StageContext
from operators.clip.model import ClipOperator
from operators.clip.params import ClipParams
from operators.clip.weights import embed_dim_of
from operators.registry import register_operator

__all__ = ["AestheticHead", "AestheticScore", "AestheticScoreParams", "load_head"]


class AestheticScoreParams(ClipParams):
    head: str = Field(..., description="weights of the head: .safetensors, .pt/.pth or .npz (see the operator docs)")
    activation: Literal["none", "relu", "gelu"] = Field(
        "none", description="activation between the head's linear layers (none: LAION's improved predictor)"
    )
    normalize: bool = Field(True, description="L2-normalise the CLIP embedding before the head (LAION: true)")
    reuse_embedding: bool = Field(
        True,
        description="score the embedding an earlier clip_score stage kept (keep_embedding: true, same model) "
        "instead of encoding the image again, for rows with one image",
    )


def _natural(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if suffix == ".npz":
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    if suffix in (".pt", ".pth", ".bin"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ValueError(f"expected a state_dict (a dict of tensors), got {type(obj).__name__}")
        return {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, "detach")}
    raise ValueError(f"unsupported head format '{suffix}' (use .safetensors, .pt, .pth or .npz)")


class AestheticHead:
    """Linear layers applied in order, with an optional activation between them."""

    def __init__(self, layers: list[tuple[str, np.ndarray, np.ndarray]], activation: str = "none") -> None:
        self.layers = layers
        self.activation = activation

    @property
    def in_features(self) -> int:
        return int(self.layers[0][1].shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = x.astype(np.float32)
        for i, (_, w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                if self.activation == "relu":
                    h = np.maximum(h, 0)
                elif self.activation == "gelu":
                    h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))
        return h[:, 0]


def load_head(path: str | Path, activation: str = "none") -> AestheticHead:
    """Read and check a head file; raise ValueError saying what is wrong with its keys or shapes."""
    path = Path(path)
    tensors = _read_tensors(path)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        stem, _, kind = key.rpartition(".")
        if kind not in ("weight", "bias"):
            stem, kind = key, ""
        if key in ("weight", "bias"):
            stem, kind = "", key
        if kind not in ("weight", "bias"):
            raise ValueError(f"unexpected key '{key}': a head holds only <layer>.weight and <layer>.bias")
        groups.setdefault(stem, {})[kind] = np.asarray(value, dtype=np.float32)
    if not groups:
        raise ValueError("no weights in the file")
    layers = []
    for stem in sorted(groups, key=_natural):
        g = groups[stem]
        label = f"{stem}.weight" if stem else "weight"
        if "weight" not in g:
            raise ValueError(f"'{stem}.bias' has no matching weight")
        w = g["weight"]
        if w.ndim != 2:
            raise ValueError(f"'{label}' has shape {tuple(w.shape)}; a linear layer's weight is (out, in)")
        b = g.get("bias", np.zeros(w.shape[0], np.float32))
        if b.shape != (w.shape[0],):
            raise ValueError(f"'{stem + '.' if stem else ''}bias' has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
        if layers and layers[-1][1].shape[0] != w.shape[1]:
            prev = layers[-1]
            raise ValueError(
                f"'{label}' takes {w.shape[1]} inputs but the layer before ('{prev[0] or 'weight'}') gives {prev[1].shape[0]}"
            )
        layers.append((stem, w, b))
    if layers[-1][1].shape[0] != 1:
        raise ValueError(f"the last layer gives {layers[-1][1].shape[0]} outputs; an aesthetic head gives 1")
    return AestheticHead(layers, activation)


@register_operator
class AestheticScore(ClipOperator[AestheticScoreParams]):
    """LAION-style aesthetic predictor: a linear/MLP head over CLIP image embeddings."""

    name: ClassVar[str] = "aesthetic_score"
    writes: ClassVar[dict[str, str]] = {
        "aesthetic_score": "predicted aesthetic score (the head's scale; LAION: 1-10), mean over the row's images",
        "aesthetic_score_min": "the lowest aesthetic score of the row's images",
    }

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        self._head: AestheticHead | None = None

    def head(self) -> AestheticHead:
        if self._head is None:
            p = self.params
            path = Path(os.path.expanduser(p.head)).resolve()
            if not path.is_file():
                raise OperatorError(f"{self.where}.head: no such file: {path}; give the head's weights (.safetensors/.pt/.npz)")
            try:
                self._head = load_head(path, p.activation)
            except Exception as e:  # noqa: BLE001 - any unreadable head is a setup error
                raise OperatorError(f"{self.where}.head: {path}: {e}") from None
        return self._head

    def validate_setup(self) -> None:
        super().validate_setup()
        head, dim = self.head(), embed_dim_of(self.spec())
        if head.in_features != dim:
            raise OperatorError(
                f"{self.where}.head: the head takes {head.in_features}-dim embeddings but {self.spec().model} makes "
                f"{dim}-dim ones; use a head trained on this CLIP model's embeddings"
            )

    def stored_embedding(self, row: dict[str, Any]) -> np.ndarray | None:
        """The one-image embedding an earlier clip_score kept for this model, if any."""
        meta = load_meta(row)
        emb = meta.get("clip_embedding")
        if not emb or meta.get("clip_embedding_images") != 1 or meta.get("clip_embedding_model") != self.spec().ident:
            return None
        return np.asarray(emb, dtype=np.float32)

    def process_batch(self, rows: list[dict[str, Any]]) -> None:
        p = self.params
        head = self.head()
        stored = [self.stored_embedding(r) if p.reuse_embedding else None for r in rows]
        todo = [i for i, e in enumerate(stored) if e is None]
        computed = dict(zip(todo, self.row_embeddings([rows[i] for i in todo]), strict=True)) if todo else {}
        self.reused_embeddings = getattr(self, "reused_embeddings", 0) + len(rows) - len(todo)
        for i, row in enumerate(rows):
            vectors = [stored[i]] if stored[i] is not None else [e for _, e in computed[i]]
            if not vectors:
                continue
            x = np.stack(vectors)
            if p.normalize:
                x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            y = head(x)
            row["scores"] = {
                **(row.get("scores") or {}),
                "aesthetic_score": float(np.mean(y)),
                "aesthetic_score_min": float(np.min(y)),
            }
