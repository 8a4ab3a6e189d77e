"""What the CLIP-backed operators share (``clip_score``, ``aesthetic_score``, ``clip_tags``): the
params that name an open_clip model and its weights, checking those weights on the driver before
any work, loading the model once per worker, and turning a batch of records into image
embeddings without letting decoding starve the model.

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

Decoding: JPEGs are decoded with Pillow's draft mode straight to the smallest scale whose short
side still covers the model's input size (a 4000px photo costs a 1/8-scale decode), other
formats are reduced right after decoding; decode and preprocessing run in a thread pool
(``decode_workers``) while the model encodes the previous batch on the calling thread.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import Field

from operators.base import BatchOperator, OperatorError, Params, StageContext
from operators.errors import media_failure
from operators.media_io import open_image, open_media, uri_of
from schemas.enums import Layout
from schemas.text import pairing_text

__all__ = [
    "CLIP_REQUIRES",
    "ClipBundle",
    "ClipOperator",
    "ClipParams",
    "ClipSpec",
    "ImageJob",
    "decode_image",
    "load_clip",
    "middle_frame",
    "resolve_spec",
]

log = logging.getLogger(__name__)

CLIP_REQUIRES: tuple[tuple[str, str], ...] = (
    ("torch", "torch==2.14.1"),
    ("open_clip", "open_clip_torch==3.3.0"),
)
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
KEYFRAME_ROLE = "keyframe"


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


# ----------------------------------------------------------------------------- weights


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


def _register_config(model: str, cfg: dict[str, Any]) -> None:
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
        _register_config(model, cfg)
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
        _register_config(spec.model, json.loads(spec.config_json))
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


# ----------------------------------------------------------------------------- the model


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
            _register_config(spec.model, json.loads(spec.config_json))
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


# ----------------------------------------------------------------------------- pixels


def decode_image(media: dict[str, Any], min_side: int) -> Any:
    """Decode an image to RGB at the smallest cheap scale whose short side is >= ``min_side``."""
    from PIL import ImageOps

    with open_media(media) as f, open_image(f) as im:
        if im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im.load()
        factor = min(im.size) // (2 * min_side)
        if factor >= 2:
            im = im.reduce(factor)
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def middle_frame(media: dict[str, Any], min_side: int) -> Any:
    """The frame in the middle of a video, decoded with PyAV (seek to the keyframe before it)."""
    import av

    with open_media(media) as f, av.open(f) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        duration = media.get("duration_s")
        if not duration and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        if not duration and container.duration:
            duration = container.duration / 1_000_000
        target = (duration or 0.0) / 2
        if target > 0 and stream.time_base:
            container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        last = None
        for i, frame in enumerate(container.decode(stream)):
            last = frame
            t = frame.time if frame.time is not None else 0.0
            if t >= target - 1e-6 or i >= 600:
                break
        if last is None:
            raise ValueError("no decodable video frame")
        img = last.to_image()
    factor = min(img.size) // (2 * min_side)
    return img.reduce(factor) if factor >= 2 else img


@dataclass
class ImageJob:
    """One image to embed: a row, a media item, and how to get its pixels."""

    row: int
    media_index: int
    media: dict[str, Any]
    kind: str  #: image | keyframe | video (the middle frame is decoded)
    text: str | None = None  #: the text this image is compared with (clip_score)


def _interleaved_texts(row: dict[str, Any]) -> dict[int, str]:
    """media_index -> the nearest text segment of an interleaved document (on a tie, the one
    after the image: captions usually follow their image)."""
    segs = row.get("interleaved") or []
    texts = [(i, s["text"]) for i, s in enumerate(segs) if s and s.get("kind") == "text" and (s.get("text") or "").strip()]
    out: dict[int, str] = {}
    if not texts:
        return out
    for i, s in enumerate(segs):
        if s and s.get("kind") == "media" and s.get("media_index") is not None:
            best = min(texts, key=lambda t: (abs(t[0] - i), t[0] < i))
            out[int(s["media_index"])] = best[1].strip()
    return out


def is_document(row: dict[str, Any]) -> bool:
    return row.get("layout") == Layout.INTERLEAVED.value or bool(row.get("interleaved"))


def image_jobs(row: dict[str, Any], index: int, *, text_fields: Iterable[str] | None, limit: int) -> list[ImageJob]:
    """The images of a row: image items (keyframes included), else the middle frame of each video
    when the row has no keyframes. With ``text_fields``, each job carries its text (documents: the
    nearest text segment; other rows: the row's text)."""
    media = row.get("media") or []
    has_keyframes = any(m.get("role") == KEYFRAME_ROLE for m in media)
    doc = is_document(row)
    near = _interleaved_texts(row) if (doc and text_fields is not None) else {}
    text = pairing_text(row, text_fields) if text_fields is not None else None
    jobs = []
    for i, m in enumerate(media):
        if m.get("error"):
            continue
        if m.get("modality") == "image":
            kind = KEYFRAME_ROLE if m.get("role") == KEYFRAME_ROLE else "image"
        elif m.get("modality") == "video" and not has_keyframes:
            kind = "video"
        else:
            continue
        t = (near.get(i) or (text if not near else None)) if doc else text
        jobs.append(ImageJob(index, i, m, kind, t))
    return jobs[:limit]


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


CP = TypeVar("CP", bound=ClipParams)


class ClipOperator(BatchOperator[CP]):
    """Base of the CLIP-backed operators: weights checked on the driver, model loaded once per
    worker (the engine runs ``stateful`` operators as an actor pool), images embedded in batches."""

    stateful: ClassVar[bool] = True
    requires: ClassVar[tuple[tuple[str, str], ...]] = CLIP_REQUIRES
    default_batch_size: ClassVar[int] = 256

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        self._spec: ClipSpec | None = None
        self._bundle: ClipBundle | None = None

    # -- driver side
    @property
    def where(self) -> str:
        return f"{self.stage}.params"

    def spec(self) -> ClipSpec:
        if self._spec is None:
            self._spec = resolve_spec(self.params, self.where)  # type: ignore[arg-type]
        return self._spec

    def validate_setup(self) -> None:
        check_weights(self.spec(), self.where)

    # -- worker side
    @property
    def bundle(self) -> ClipBundle:
        if self._bundle is None:
            p = self.params
            self._bundle = load_clip(
                self.spec(), device=p.device, precision=p.precision, threads=p.threads, batch_size=p.batch_size
            )
        return self._bundle

    def __getstate__(self) -> dict[str, Any]:  # never pickle a loaded model into a task
        state = dict(self.__dict__)
        state["_bundle"] = None
        return state

    def _pixels(self, job: ImageJob) -> Any:
        b = self.bundle
        img = middle_frame(job.media, b.image_size) if job.kind == "video" else decode_image(job.media, b.image_size)
        return b.preprocess(img)

    def embed(self, jobs: list[ImageJob]) -> list[np.ndarray | BaseException]:
        """One L2-normalised embedding per job (or the exception that stopped its decoding).

        Decoding and preprocessing run in ``decode_workers`` threads, ahead of the model, which
        encodes ``batch_size`` images at a time on this thread.
        """
        import torch

        p = self.params
        b = self.bundle
        out: list[np.ndarray | BaseException] = [None] * len(jobs)  # type: ignore[list-item]

        def work(job: ImageJob) -> Any:
            try:
                return self._pixels(job)
            except Exception as e:  # noqa: BLE001 - reported per image
                return _Failed(e)

        pending: list[tuple[int, Any]] = []

        def flush() -> None:
            if not pending:
                return
            emb = b.encode_images(torch.stack([t for _, t in pending]))
            for (k, _), e in zip(pending, emb, strict=True):
                out[k] = e
            pending.clear()

        with ThreadPoolExecutor(max_workers=p.decode_workers, thread_name_prefix=f"{self.stage}-decode") as pool:
            for k, res in enumerate(_bounded_map(pool, work, jobs, ahead=2 * p.batch_size)):
                if isinstance(res, _Failed):
                    out[k] = res.error
                    continue
                pending.append((k, res))
                if len(pending) >= p.batch_size:
                    flush()
            flush()
        return out

    def fail_row(self, row: dict[str, Any], error: BaseException, media: dict[str, Any]) -> None:
        """A row whose image cannot be decoded is quarantined with the reason."""
        failure = media_failure(error, uri_of(media))
        self.quarantine(row, failure.reason, failure.detail)

    def row_embeddings(self, rows: list[dict[str, Any]], text_fields: Iterable[str] | None = None
                       ) -> list[list[tuple[ImageJob, np.ndarray]]]:  # fmt: skip
        """Per row, its (job, embedding) pairs. A broken image quarantines its row, except in
        documents (interleaved), where the image is skipped."""
        p = self.params
        fields = tuple(text_fields) if text_fields is not None else None
        jobs = [j for i, r in enumerate(rows) for j in image_jobs(r, i, text_fields=fields, limit=p.max_images_per_row)]
        embs = self.embed(jobs)
        per_row: list[list[tuple[ImageJob, np.ndarray]]] = [[] for _ in rows]
        failed: set[int] = set()
        for job, e in zip(jobs, embs, strict=True):
            if isinstance(e, BaseException):
                if not is_document(rows[job.row]) and job.row not in failed:
                    failed.add(job.row)
                    self.fail_row(rows[job.row], e, job.media)
                continue
            per_row[job.row].append((job, e))
        for i in failed:
            per_row[i] = []
        return per_row


def _bounded_map(pool: ThreadPoolExecutor, fn: Any, items: list[Any], ahead: int) -> Iterator[Any]:
    """``pool.map`` in order, but with at most ``ahead`` items decoded and waiting (bounded memory)."""
    from collections import deque

    queue: deque = deque()
    it = iter(items)
    for item in it:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            break
    while queue:
        yield queue.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            queue.append(pool.submit(fn, nxt))


def to_float16_list(vec: np.ndarray) -> list[float]:
    """A vector rounded to float16 precision, as short JSON floats."""
    return [float(str(x)) for x in vec.astype(np.float16)]


def mean_embedding(vectors: list[np.ndarray]) -> np.ndarray:
    v = np.mean(np.stack(vectors), axis=0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
