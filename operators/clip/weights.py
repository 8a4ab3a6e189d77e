"""Which open_clip model and weights the CLIP-backed operators use, resolved and checked on the
driver before any work.

Weights (``pretrained``), in the order they are tried:

- a local checkpoint file (``.pt``/``.pth``/``.bin``/``.safetensors``) or a folder holding one,
  e.g. a fine-tuned model or one saved with ``torch.save(model.state_dict(), path)``;
- an open_clip pretrained tag (``laion2b_s34b_b79k``, ``openai``...) that is ALREADY in the local
  cache (the Hugging Face cache, ``~/.cache/huggingface``, or ``~/.cache/clip`` for URL weights,
  or ``cache_dir``). Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set before loading.

``model`` is an open_clip architecture name (``ViT-B-32``, ``ViT-L-14``...), a name defined by
``config_file`` (an open_clip model config JSON: ``embed_dim``, ``vision_cfg``, ``text_cfg``),
or ``local-dir:/path`` (a folder with ``open_clip_config.json`` and the weights, as open_clip
saves them; ``pretrained`` is then not used).

``validate_setup`` resolves all of this on the driver, then builds the model on torch's "meta"
device (no memory, no compute) and compares its parameter shapes with the checkpoint's, so a
missing file, an uncached tag or weights of another architecture fail before the run starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.base import OperatorError
from operators.clip.params import ClipParams

__all__ = ["ClipSpec", "check_weights", "embed_dim_of", "model_shapes", "register_config", "resolve_spec"]

log = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_PREFERRED_IN_DIR = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
)


@dataclass(frozen=True)
class ClipSpec:
    """A resolved model + weights, the same on the driver and on every worker."""

    model: str  #: the name passed to open_clip
    pretrained: str | None  #: tag or absolute checkpoint path (None with local-dir:)
    weights_file: str  #: the file the weights come from
    config_file: str | None = None
    config_json: str | None = None  #: the architecture config (for config_file models)
    cache_dir: str | None = None

    @property
    def ident(self) -> str:
        """A short name of the embedding space (model + weights), stored beside embeddings."""
        w = self.pretrained if self.pretrained and not os.path.isabs(self.pretrained) else Path(self.weights_file).name
        return f"{self.model}:{w}"


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith(("~", ".")) or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def _checkpoint_in_dir(folder: Path) -> Path | None:
    for name in _PREFERRED_IN_DIR:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file())
    return found[0] if found else None


def register_config(model: str, cfg: dict[str, Any]) -> None:
    """Make ``model`` an open_clip architecture name in this process (driver or worker)."""
    import open_clip

    if open_clip.get_model_config(model) == cfg:
        return
    folder = Path(tempfile.gettempdir()) / f"nmm-open-clip-configs-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)


def _cached_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local file of a pretrained tag, or None when it is not cached (never downloads)."""
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    hub = tag_cfg.get("hf_hub") or ""
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        if filename == "open_clip_pytorch_model.bin":
            names.insert(0, "open_clip_model.safetensors")
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = tag_cfg.get("url") or ""
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def resolve_spec(p: ClipParams, where: str) -> ClipSpec:
    """Resolve model and weights, or raise OperatorError naming the param and what to configure.

    ``where`` is how the user addresses the params, e.g. ``clip_score.params``.
    """
    import open_clip

    cache_dir = os.path.expanduser(p.cache_dir) if p.cache_dir else None
    model = p.model.strip()
    if model.startswith("hf-hub:"):
        raise OperatorError(
            f"{where}.model: '{model}' would be fetched from the Hugging Face Hub, and nothing can be downloaded; "
            f"download it beforehand and give `local-dir:/path/to/folder` (open_clip_config.json + weights)"
        )
    if model.startswith("local-dir:"):
        folder = Path(os.path.expanduser(model[len("local-dir:") :])).resolve()
        cfg_path = folder / "open_clip_config.json"
        if not cfg_path.is_file():
            raise OperatorError(f"{where}.model: {folder} has no open_clip_config.json (open_clip's local-dir layout)")
        weights = _checkpoint_in_dir(folder)
        if weights is None:
            raise OperatorError(f"{where}.model: no weights file (.safetensors/.bin/.pth) in {folder}")
        if p.pretrained:
            raise OperatorError(f"{where}.pretrained: not used with model 'local-dir:...' (the folder holds the weights); remove it")
        return ClipSpec(model=f"local-dir:{folder}", pretrained=None, weights_file=str(weights), cache_dir=cache_dir)

    config_json = None
    config_file = None
    if p.config_file:
        cfg_path = Path(os.path.expanduser(p.config_file)).resolve()
        if not cfg_path.is_file():
            raise OperatorError(f"{where}.config_file: no such file: {cfg_path}")
        try:
            cfg = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise OperatorError(f"{where}.config_file: {cfg_path} is not JSON: {e}") from None
        cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else cfg
        if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise OperatorError(
                f"{where}.config_file: {cfg_path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)"
            )
        register_config(model, cfg)
        config_json, config_file = json.dumps(cfg, sort_keys=True), str(cfg_path)
    elif open_clip.get_model_config(model) is None:
        raise OperatorError(
            f"{where}.model: '{model}' is not an open_clip architecture (e.g. ViT-B-32, ViT-B-16, ViT-L-14); "
            f"give config_file for a custom one"
        )

    pretrained = (p.pretrained or "").strip()
    if not pretrained:
        raise OperatorError(
            f"{where}.pretrained is not set: give a local checkpoint path, or an open_clip pretrained tag already in "
            f"the local cache (tags of {model}: {', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'}); "
            f"random weights would score nothing"
        )
    tag_cfg = {} if config_file else open_clip.get_pretrained_cfg(model, pretrained)
    if tag_cfg:
        hit = _cached_tag_file(tag_cfg, cache_dir)
        if hit is None:
            where_cache = cache_dir or "~/.cache/huggingface" + (" or ~/.cache/clip" if tag_cfg.get("url") else "")
            raise OperatorError(
                f"{where}.pretrained: '{pretrained}' is not in the open_clip cache ({where_cache}) and nothing can be "
                f"downloaded; give a local checkpoint path (e.g. the open_clip_pytorch_model.bin or .safetensors of "
                f"{model} {pretrained}), or fill the cache beforehand"
            )
        return ClipSpec(
            model=model, pretrained=pretrained, weights_file=hit, config_file=config_file,
            config_json=config_json, cache_dir=cache_dir,
        )  # fmt: skip
    path = Path(os.path.expanduser(pretrained)).resolve()
    if path.is_dir():
        found = _checkpoint_in_dir(path)
        if found is None:
            raise OperatorError(f"{where}.pretrained: no checkpoint file (.safetensors/.pt/.pth/.bin) in {path}")
        path = found
    if not path.is_file():
        if _looks_like_path(pretrained):
            raise OperatorError(
                f"{where}.pretrained: no such checkpoint file: {path}; give the path of the model's weights "
                f"(a .pt/.pth/.bin/.safetensors state_dict of {model})"
            )
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise OperatorError(
            f"{where}.pretrained: '{pretrained}' is neither a pretrained tag of {model} (known: {tags}) nor a "
            f"checkpoint file"
        )
    return ClipSpec(
        model=model, pretrained=str(path), weights_file=str(path), config_file=config_file,
        config_json=config_json, cache_dir=cache_dir,
    )  # fmt: skip


def _checkpoint_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of a checkpoint, read without loading the tensors."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    import torch

    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        return {}
    out = {}
    for k, v in ckpt.items():
        if hasattr(v, "shape"):
            out[k[7:] if k.startswith("module.") else k] = tuple(v.shape)
    return out


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns that a model without weights is random: true, and meant, on the meta device."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def model_shapes(spec: ClipSpec) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the architecture, built on torch's meta device (no memory, no compute)."""
    import open_clip
    import torch

    if spec.config_json:
        register_config(spec.model, json.loads(spec.config_json))
    quiet = _DropRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        with torch.device("meta"):
            model = open_clip.create_model(
                spec.model,
                pretrained=None,
                load_weights=False,
                device=torch.device("meta"),
                pretrained_text=False,
            )
    finally:
        logging.getLogger().removeFilter(quiet)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def embed_dim_of(spec: ClipSpec) -> int:
    import open_clip

    if spec.config_json:
        return int(json.loads(spec.config_json)["embed_dim"])
    if spec.model.startswith("local-dir:"):
        cfg = json.loads((Path(spec.model[len("local-dir:") :]) / "open_clip_config.json").read_text())
        return int(cfg["model_cfg"]["embed_dim"])
    return int(open_clip.get_model_config(spec.model)["embed_dim"])


def check_weights(spec: ClipSpec, where: str) -> None:
    """Fail when the checkpoint's parameters do not fit the architecture (wrong model for the file).

    Checkpoints in another layout (OpenAI JIT archives, third-party formats open_clip converts
    while loading) share few names with the model; they are not checked here.
    """
    try:
        have = _checkpoint_shapes(spec.weights_file)
    except Exception as e:  # noqa: BLE001 - an unreadable file is the user's to fix
        raise OperatorError(f"{where}.pretrained: cannot read checkpoint {spec.weights_file}: {type(e).__name__}: {e}") from None
    try:
        want = model_shapes(spec)
    except Exception:  # noqa: BLE001 - the check is a convenience; loading will tell
        log.debug("could not build %s on the meta device; weights not checked", spec.model, exc_info=True)
        return
    common = set(have) & set(want)
    if not have or len(common) < 0.5 * len(have):
        log.info("%s: checkpoint %s is not in open_clip's layout; shapes checked at load", where, spec.weights_file)
        return
    wrong = [f"{k}: checkpoint {have[k]} vs model {want[k]}" for k in sorted(common) if math.prod(have[k]) != math.prod(want[k])]
    missing = sorted(set(want) - set(have) - {"logit_bias"})
    if wrong or missing:
        detail = "; ".join(wrong[:3]) or f"missing {', '.join(missing[:5])}"
        more = len(wrong) + len(missing) - min(3, len(wrong)) - (0 if wrong else min(5, len(missing)))
        raise OperatorError(
            f"{where}.pretrained: {spec.weights_file} does not fit model '{spec.model}' ({detail}"
            f"{f' and {more} more' if more > 0 else ''}); is `model` the architecture these weights were trained with?"
        )
