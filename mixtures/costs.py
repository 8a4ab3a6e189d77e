"""What one sample costs in every unit: samples, tokens (text + visual + audio), seconds.

Token counts are estimates from per-modality parameters in the mixture YAML, so a ratio
"in tokens" means what the trainer will see for the model being trained."""

from __future__ import annotations

import functools
import math
from typing import Any

from mixtures.config import Estimators, ImageEstimator, VideoEstimator

__all__ = ["image_tokens", "sample_costs", "text_chars", "text_tokens", "texts", "video_tokens"]


def image_tokens(width: int | None, height: int | None, est: ImageEstimator, *, max_pixels: int | None = None) -> int:
    """Qwen2-VL-style smart resize: fit into [min_pixels, max_pixels], sides multiple of
    patch*merge; tokens = (h/patch * w/patch) / merge^2."""
    if est.fixed_tokens:
        return est.fixed_tokens
    if not width or not height:
        return 0
    factor = est.patch_size * est.merge
    hi = max_pixels or est.max_pixels
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > hi:
        beta = math.sqrt(height * width / hi)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < est.min_pixels:
        beta = math.sqrt(est.min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return (h // est.patch_size) * (w // est.patch_size) // (est.merge * est.merge)


def video_tokens(media: dict[str, Any], est: VideoEstimator, image: ImageEstimator) -> tuple[int, int]:
    """(tokens, sampled frames) of one video."""
    duration = media.get("duration_s") or 0.0
    frames = min(est.max_frames, max(est.min_frames, int(duration * est.fps)))
    frames = max(est.temporal_patch, frames - frames % est.temporal_patch)
    per_frame = image_tokens(media.get("width"), media.get("height"), image.model_copy(update={"fixed_tokens": None}), max_pixels=est.max_pixels)
    return per_frame * frames // est.temporal_patch, frames


def texts(row: dict[str, Any]) -> list[str]:
    """Every text a trainer will see for this sample."""
    out = [row.get(k) or "" for k in ("caption", "alt_text", "instruction", "response", "transcript", "text")]
    out += [turn.get("text") or "" for turn in row.get("conversation") or []]
    if not row.get("text"):
        out += [seg.get("text") or "" for seg in row.get("interleaved") or [] if seg.get("kind") == "text"]
    pref = row.get("preference") or {}
    out += [pref.get(k) or "" for k in ("prompt", "chosen", "rejected")]
    out += [c.get("text") or "" for c in pref.get("candidates") or []]
    inter = row.get("interaction") or {}
    out.append(inter.get("goal") or "")
    for step in inter.get("steps") or []:
        out += [step.get("observation") or "", step.get("action") or ""]
    return [t for t in out if t]


def text_chars(row: dict[str, Any]) -> int:
    return sum(len(t) for t in texts(row))


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def text_tokens(row: dict[str, Any], chars_per_token: float, tokenizer: str | None) -> int:
    if tokenizer:
        tok = _tokenizer(tokenizer)
        return sum(len(e.ids) for e in tok.encode_batch(texts(row), add_special_tokens=False))
    return math.ceil(text_chars(row) / chars_per_token)


def sample_costs(row: dict[str, Any], est: Estimators) -> dict[str, float]:
    """Cost of one curated row in every unit."""
    text = text_tokens(row, est.text.chars_per_token, est.text.tokenizer)
    img = vid = aud = frames = images = 0
    seconds = 0.0
    for m in row.get("media") or []:
        if m.get("error") or m.get("role") == "keyframe":
            continue
        kind = m.get("modality")
        if kind == "image":
            img += image_tokens(m.get("width"), m.get("height"), est.image)
            images += 1
        elif kind == "video":
            t, f = video_tokens(m, est.video, est.image)
            vid += t
            frames += f
            seconds += m.get("duration_s") or 0.0
            if m.get("has_audio"):
                aud += math.ceil((m.get("duration_s") or 0.0) * est.audio.frame_rate_hz)
        elif kind == "audio":
            aud += math.ceil((m.get("duration_s") or 0.0) * est.audio.frame_rate_hz)
            seconds += m.get("duration_s") or 0.0
    return {
        "samples": 1.0,
        "tokens": float(text + img + vid + aud),
        "seconds": float(seconds),
        "hours": float(seconds) / 3600.0,
        "text_tokens": float(text),
        "image_tokens": float(img),
        "video_tokens": float(vid),
        "audio_tokens": float(aud),
        "frames": float(frames),
        "images": float(images),
    }
