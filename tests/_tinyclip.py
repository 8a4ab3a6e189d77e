"""A tiny open_clip architecture with random weights, saved the way a user's checkpoint is: a
config JSON (for ``config_file``) and a ``state_dict`` file (for ``pretrained``). Building the
model from a fixed seed makes the same file every time; loading it goes through the real code."""

from __future__ import annotations

import json
from pathlib import Path

TINY_NAME = "TinyCLIP-test"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_clip(folder: Path, *, seed: int = 0, fmt: str = "pt") -> tuple[Path, Path]:
    """Write ``TinyCLIP-test.json`` and its random weights; return (config path, weights path)."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / f"{TINY_NAME}.json"
    cfg_path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    # a random init has a temperature of 1/0.07; keep it, it is what a real checkpoint carries
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        weights = folder / f"tiny-seed{seed}.safetensors"
        save_file(sd, str(weights))
    else:
        weights = folder / f"tiny-seed{seed}.pt"
        torch.save(sd, weights)
    return cfg_path, weights


def tiny_params(cfg: Path, weights: Path, **extra) -> dict:
    """The params a user writes for this model (stage ``params:``)."""
    return {"model": TINY_NAME, "config_file": str(cfg), "pretrained": str(weights), "device": "cpu", **extra}
