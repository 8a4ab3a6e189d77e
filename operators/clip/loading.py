"""Loading the CLIP model once per worker process: the device it runs on, and the loaded bundle
(model, preprocessing, tokenizer) that encodes images and texts. Never downloads anything; the
weights are those ``operators.clip.weights`` resolved on the driver.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from operators.base import OperatorError
from operators.clip.weights import ClipSpec, embed_dim_of, register_config

__all__ = ["ClipBundle", "load_clip", "pick_device"]

log = logging.getLogger(__name__)


def _in_ray_worker_without_gpu() -> bool:
    try:
        import ray

        if not ray.is_initialized():
            return False
        ctx = ray.get_runtime_context()
        if ctx.worker.mode != ray._private.worker.WORKER_MODE:  # the driver
            return False
        return not ray.get_gpu_ids()
    except Exception:  # noqa: BLE001
        return False


def pick_device(pref: str) -> str:
    import torch

    if pref == "cpu":
        return "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise OperatorError("device: cuda was asked for but torch sees no CUDA device here")
        return "cuda"
    # auto: a GPU only when this worker was given one (the stage asked for num_gpus) or outside Ray
    if torch.cuda.is_available() and not _in_ray_worker_without_gpu():
        return "cuda"
    return "cpu"


@dataclass
class ClipBundle:
    """A loaded model with its preprocessing and tokenizer, on one device."""

    spec: ClipSpec
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    dtype: Any
    image_size: int
    embed_dim: int
    logit_scale: float
    batch_size: int = 64
    calls: dict[str, int] = field(default_factory=lambda: {"images": 0, "texts": 0})

    def encode_images(self, pixels: Any) -> np.ndarray:
        """(n, 3, H, W) preprocessed tensor -> (n, d) L2-normalised float32 embeddings."""
        import torch

        with torch.inference_mode():
            x = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
            f = self.model.encode_image(x).float()
            f = torch.nn.functional.normalize(f, dim=-1)
        self.calls["images"] += len(pixels)
        return f.cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, d) L2-normalised float32 embeddings (truncated to the context length)."""
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
            with torch.inference_mode():
                f = self.model.encode_text(tokens).float()
                out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        self.calls["texts"] += len(texts)
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)


_LOADED: dict[tuple, ClipBundle] = {}
_LOCK = threading.Lock()


def load_clip(spec: ClipSpec, *, device: str = "auto", precision: str = "auto", threads: int | None = None,
              batch_size: int = 64) -> ClipBundle:  # fmt: skip
    """Load (once per process) the model of ``spec``. Never downloads anything."""
    key = (spec, device, precision)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        os.environ["HF_HUB_OFFLINE"] = "1"
        import open_clip
        import torch

        if threads:
            torch.set_num_threads(threads)
        dev = pick_device(device)
        prec = precision if precision != "auto" else ("fp16" if dev == "cuda" else "fp32")
        if spec.config_json:
            register_config(spec.model, json.loads(spec.config_json))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=spec.pretrained, precision=prec, device=dev, cache_dir=spec.cache_dir,
                pretrained_text=False,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the weights cannot be used: nothing can run
            raise OperatorError(f"cannot load {spec.model} weights from {spec.weights_file}: {type(e).__name__}: {e}") from e
        model.eval()
        tokenizer = open_clip.get_tokenizer(spec.model, cache_dir=spec.cache_dir)
        size = getattr(model.visual, "image_size", 224)
        size = int(size[0] if isinstance(size, tuple | list) else size)
        dtype = next(model.parameters()).dtype
        scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
        bundle = ClipBundle(
            spec=spec, model=model, preprocess=preprocess, tokenizer=tokenizer, device=dev, dtype=dtype,
            image_size=size, embed_dim=embed_dim_of(spec), logit_scale=scale, batch_size=batch_size,
        )  # fmt: skip
        log.info("loaded %s on %s (%s, %d threads)", spec.ident, dev, prec, torch.get_num_threads())
        _LOADED[key] = bundle
        return bundle
