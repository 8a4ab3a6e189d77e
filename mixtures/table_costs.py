"""What every row of an Arrow batch costs in every unit, computed on columns: the same numbers as
``mixtures.costs.sample_costs`` gives row by row (same formulas in IEEE double, same rounding:
Python's ``round`` is half-to-even like ``numpy.rint``, ``int()`` of a non-negative float is
``floor``), without turning rows into Python objects. The pool (every candidate row) and the
shard writer (every written sample) both use it, so a sample's cost in its JSON is the one the
plan counted.

Columns a batch lacks count as empty. A text estimator with a tokenizer file counts text tokens
row by row (the tokenizer is the cost there); everything else stays on columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixtures.config import Estimators, ImageEstimator

__all__ = ["COST_COLUMNS", "flat", "media_bytes", "table_costs"]

#: top-level record columns the costs read
COST_COLUMNS = (
    "media", "caption", "alt_text", "instruction", "response", "transcript", "text", "conversation", "interleaved",
    "preference", "interaction",
)  # fmt: skip
_TEXT = ("caption", "alt_text", "instruction", "response", "transcript", "text")


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array | None:
    if name not in batch.schema.names:
        return None
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _lengths(arr: pa.Array | None, n: int) -> np.ndarray:
    """Characters (code points) of each string, 0 for null."""
    if arr is None:
        return np.zeros(n, dtype=np.int64)
    return pc.fill_null(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _field(struct: pa.Array, name: str) -> pa.Array | None:
    """A struct field with the struct's own nulls applied (None when the struct has no such field)."""
    if struct.type.get_field_index(name) < 0:
        return None
    return struct.flatten()[struct.type.get_field_index(name)]


def flat(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The elements of a list column (those of null lists left out) and the row of each."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    return pc.list_flatten(lists), np.repeat(np.arange(len(lists), dtype=np.int64), lengths)


def _per_parent(parents: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` (one per list element) per row."""
    if not len(values):
        return np.zeros(n, dtype=np.int64)
    return np.bincount(parents, weights=values, minlength=n).astype(np.int64)


def _list_text(lists: pa.Array | None, name: str, n: int, keep: pa.Array | None = None) -> np.ndarray:
    """Characters of field ``name`` of every element of a list<struct> column, per row; ``keep``: a
    boolean per element (others count 0)."""
    if lists is None:
        return np.zeros(n, dtype=np.int64)
    items, parents = flat(lists)
    if not len(items):
        return np.zeros(n, dtype=np.int64)
    lengths = _lengths(_field(items, name), len(items))
    if keep is not None:
        lengths = np.where(pc.fill_null(keep, False).to_numpy(zero_copy_only=False), lengths, 0)
    return _per_parent(parents, lengths, n)


def _text_chars(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """``costs.text_chars`` of every row."""
    n = batch.num_rows
    chars = np.zeros(n, dtype=np.int64)
    for name in _TEXT:
        chars += _lengths(_column(batch, name), n)
    chars += _list_text(_column(batch, "conversation"), "text", n)
    inter = _column(batch, "interleaved")
    if inter is not None:
        text = _column(batch, "text")
        no_text = np.ones(n, dtype=bool) if text is None else _lengths(text, n) == 0  # `not row["text"]`
        items = pc.list_flatten(inter)
        kind = _field(items, "kind") if len(items) else None
        per_row = _list_text(inter, "text", n, None if kind is None else pc.equal(kind, "text"))
        chars += np.where(no_text, per_row, 0)
    pref = _column(batch, "preference")
    if pref is not None:
        for name in ("prompt", "chosen", "rejected"):
            chars += _lengths(_field(pref, name), n)
        cands = _field(pref, "candidates")
        if cands is not None:
            chars += _list_text(cands, "text", n)
    inter = _column(batch, "interaction")
    if inter is not None:
        chars += _lengths(_field(inter, "goal"), n)
        steps = _field(inter, "steps")
        if steps is not None:
            chars += _list_text(steps, "observation", n) + _list_text(steps, "action", n)
    return chars


def _image_tokens(width: np.ndarray, height: np.ndarray, est: ImageEstimator, max_pixels: int | None = None, fixed: bool = True) -> np.ndarray:
    """``costs.image_tokens`` of every (width, height); 0 where either is missing or 0."""
    if fixed and est.fixed_tokens:
        return np.full(len(width), est.fixed_tokens, dtype=np.int64)
    factor = est.patch_size * est.merge
    hi = max_pixels or est.max_pixels
    w0, h0 = width.astype(np.int64), height.astype(np.int64)
    ok = (w0 != 0) & (h0 != 0)
    w0, h0 = np.where(ok, w0, 1), np.where(ok, h0, 1)
    hf, wf = h0.astype(np.float64), w0.astype(np.float64)
    h = np.maximum(factor, np.rint(hf / factor).astype(np.int64) * factor)
    w = np.maximum(factor, np.rint(wf / factor).astype(np.int64) * factor)
    area = h0 * w0
    big = h * w > hi
    small = ~big & (h * w < est.min_pixels)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.sqrt(area.astype(np.float64) / hi)
        hb = np.maximum(factor, np.floor(hf / beta / factor).astype(np.int64) * factor)
        wb = np.maximum(factor, np.floor(wf / beta / factor).astype(np.int64) * factor)
        beta_s = np.sqrt(est.min_pixels / area.astype(np.float64))
        hs = np.ceil(hf * beta_s / factor).astype(np.int64) * factor
        ws = np.ceil(wf * beta_s / factor).astype(np.int64) * factor
    h = np.where(big, hb, np.where(small, hs, h))
    w = np.where(big, wb, np.where(small, ws, w))
    tokens = (h // est.patch_size) * (w // est.patch_size) // (est.merge * est.merge)
    return np.where(ok, tokens, 0)


def _num(arr: pa.Array | None, n: int, dtype: Any, fill: Any = 0) -> np.ndarray:
    if arr is None:
        return np.full(n, fill, dtype=dtype)
    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False).astype(dtype)


def _media_costs(batch: pa.RecordBatch | pa.Table, est: Estimators) -> dict[str, np.ndarray]:
    """Per row: image, video and audio tokens, frames, images and seconds of its usable media."""
    n = batch.num_rows
    out = {k: np.zeros(n, dtype=np.int64) for k in ("image_tokens", "video_tokens", "audio_tokens", "frames", "images")}
    out["seconds"] = np.zeros(n, dtype=np.float64)
    media = _column(batch, "media")
    if media is None:
        return out
    items, parent = flat(media)
    k = len(items)
    if not k:
        return out
    error = _field(items, "error")
    role = _field(items, "role")
    usable = np.ones(k, dtype=bool)
    if error is not None:
        usable &= pc.fill_null(pc.utf8_length(error), 0).to_numpy(zero_copy_only=False) == 0  # `not m["error"]`
    if role is not None:
        usable &= ~pc.fill_null(pc.equal(role, "keyframe"), False).to_numpy(zero_copy_only=False)
    modality = _field(items, "modality")
    if modality is None:
        return out
    is_image = usable & pc.fill_null(pc.equal(modality, "image"), False).to_numpy(zero_copy_only=False)
    is_video = usable & pc.fill_null(pc.equal(modality, "video"), False).to_numpy(zero_copy_only=False)
    is_audio = usable & pc.fill_null(pc.equal(modality, "audio"), False).to_numpy(zero_copy_only=False)
    width = _num(_field(items, "width"), k, np.int64)
    height = _num(_field(items, "height"), k, np.int64)
    duration = _num(_field(items, "duration_s"), k, np.float64, 0.0)  # `m["duration_s"] or 0.0`
    has_audio = _num(_field(items, "has_audio"), k, bool, False)

    def per_row(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(parent[mask], weights=values[mask], minlength=n)

    if is_image.any():
        out["image_tokens"] += per_row(_image_tokens(width, height, est.image), is_image).astype(np.int64)
        out["images"] += np.bincount(parent[is_image], minlength=n)
    if is_video.any():
        v = est.video
        frames = np.minimum(v.max_frames, np.maximum(v.min_frames, np.trunc(duration * v.fps).astype(np.int64)))
        frames = np.maximum(v.temporal_patch, frames - frames % v.temporal_patch)
        per_frame = _image_tokens(width, height, est.image, max_pixels=v.max_pixels, fixed=False)
        out["video_tokens"] += per_row(per_frame * frames // v.temporal_patch, is_video).astype(np.int64)
        out["frames"] += per_row(frames, is_video).astype(np.int64)
    audio_tokens = np.ceil(duration * est.audio.frame_rate_hz).astype(np.int64)
    with_sound = is_audio | (is_video & has_audio)
    if with_sound.any():
        out["audio_tokens"] += per_row(audio_tokens, with_sound).astype(np.int64)
    timed = is_video | is_audio
    if timed.any():
        # added in media order, from 0.0, as the row loop adds them: the same float sums
        out["seconds"] = np.bincount(parent[timed], weights=duration[timed], minlength=n)
    return out


def _tokenized(batch: pa.RecordBatch | pa.Table, est: Estimators) -> np.ndarray:
    """Text tokens from a tokenizer file, row by row."""
    from mixtures.costs import text_tokens

    names = [c for c in COST_COLUMNS if c != "media" and c in batch.schema.names]
    rows = batch.select(names).to_pylist()
    return np.asarray([text_tokens(r, est.text.chars_per_token, est.text.tokenizer) for r in rows], dtype=np.int64)


def table_costs(batch: pa.RecordBatch | pa.Table, est: Estimators) -> dict[str, np.ndarray]:
    """Unit -> cost of every row (float64), for every key of ``mixtures.pool.COST_KEYS``."""
    n = batch.num_rows
    if est.text.tokenizer:
        text = _tokenized(batch, est)
    else:
        text = np.ceil(_text_chars(batch).astype(np.float64) / est.text.chars_per_token).astype(np.int64)
    m = _media_costs(batch, est)
    tokens = text + m["image_tokens"] + m["video_tokens"] + m["audio_tokens"]
    return {
        "samples": np.ones(n, dtype=np.float64),
        "tokens": tokens.astype(np.float64),
        "seconds": m["seconds"],
        "hours": m["seconds"] / 3600.0,
        "text_tokens": text.astype(np.float64),
        "image_tokens": m["image_tokens"].astype(np.float64),
        "video_tokens": m["video_tokens"].astype(np.float64),
        "audio_tokens": m["audio_tokens"].astype(np.float64),
        "frames": m["frames"].astype(np.float64),
        "images": m["images"].astype(np.float64),
    }


def media_bytes(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Per row: the sum of its media's ``bytes`` (every item, 0 where unknown)."""
    n = batch.num_rows
    media = _column(batch, "media")
    if media is None:
        return np.zeros(n, dtype=np.int64)
    items, parent = flat(media)
    size = _field(items, "bytes") if len(items) else None
    if size is None:
        return np.zeros(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, parent, _num(size, len(items), np.int64))
    return out
