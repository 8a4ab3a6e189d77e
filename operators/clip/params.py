"""The params of the CLIP-backed operators (``clip_score``, ``aesthetic_score``, ``clip_tags``):
which open_clip model, which weights, where and how it runs. ``operators.clip.weights`` explains
how ``model``/``pretrained``/``config_file`` are resolved.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from operators.base import Params

__all__ = ["ClipParams"]


class ClipParams(Params):
    """Which open_clip model, which weights, where it runs."""

    model: str = Field(
        "ViT-B-32",
        description="open_clip architecture (ViT-B-32, ViT-L-14...), a name defined by config_file, "
        "or local-dir:/path/to/folder (open_clip_config.json + weights)",
    )
    pretrained: str | None = Field(
        None,
        description="weights: a local checkpoint (.pt/.pth/.bin/.safetensors, or a folder holding one), or an "
        "open_clip pretrained tag that is already in the local cache (nothing is downloaded)",
    )
    config_file: str | None = Field(
        None,
        description="an open_clip model config JSON (embed_dim, vision_cfg, text_cfg) for an architecture "
        "open_clip does not ship; `model` names it",
    )
    cache_dir: str | None = Field(
        None, description="where pretrained tags are looked up (default: the Hugging Face cache and ~/.cache/clip)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: the GPU when the stage asks for num_gpus and CUDA is available, else CPU"
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 on GPU, fp32 on CPU"
    )
    batch_size: int = Field(64, ge=1, description="images (or texts) per model forward pass")
    decode_workers: int = Field(
        2, ge=1, description="threads decoding and preprocessing images while the model encodes the previous batch"
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads per worker (default: OMP_NUM_THREADS, which Ray sets to num_cpus)"
    )
    max_images_per_row: int = Field(
        32, ge=1, description="images scored per row at most (long documents, many keyframes); the rest are skipped"
    )
