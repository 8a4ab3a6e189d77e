"""``dedup_image_phash``: near-duplicate images by perceptual hashes, at corpus scale.

Signature: pHash and dHash (imagehash, 64 bits each) of the row's first image, computed from a
bounded decode (JPEG decoded at reduced scale with ``Image.draft``), upright by EXIF, as one grey
copy of at most 128 px. With ``flip: true`` the mirrored image's hashes are added, so a mirrored
copy is found too. With ``crops: true`` (the default) five
sub-views are hashed as well (the centre 95%, and 93% of each side anchored at each corner): a
copy cropped by a few percent has a full view close to one of its original's sub-views, so the
views' band keys make it a candidate and verification takes the closest (full view, sub-view)
pair, both ways.

Candidates, banded LSH: the 128-bit signature (pHash bits then dHash bits, or the 64 pHash bits
alone with ``lsh_bits: phash``) is split into ``bands`` bands; rows sharing any band value are
candidates. By pigeonhole, a pair whose total Hamming distance over those bits is below
``bands`` differs in fewer bands than there are, so it shares at least one band: recall is
guaranteed for pairs within ``bands - 1`` bits, and pairs further apart (up to the verification
thresholds) are still found whenever one band survives intact. Candidates are verified by exact
Hamming distances: pHash <= ``phash_threshold`` and dHash <= ``dhash_threshold``.

Cost: unrelated rows collide in a band with probability 2^-(bits per band), so candidate pairs
grow as bands * n^2 / 2^(bits/band + 1) on top of the linear work. The default, 6 bands of about
21 bits, guarantees pairs within 5 bits (resize and re-encode move pHash+dHash by 0-4) and costs
~1.4 million random candidate checks at a million images, ~140 million at ten million: near
linear up to millions. 8 bands (16 bits) guarantee 7 bits and find more crops, at ~60 million
checks per million images; fewer, wider bands scale further and guarantee less.

Measured on natural-looking images (benchmarks/bench_dedup_quality.py): resize and JPEG
re-encode move pHash by 0-2 bits, brightness +-15% by up to 8, a 2-5% crop by 8-20; unrelated
images are 16+ bits apart. A 2-5% crop is found with recall 0.33 by the full view alone and 0.95
with crop views; a 4-10% crop towards a corner 0.07 and 0.94; precision 1.0 either way. Crop views
cost 2.2x the signing time and 6x the LSH keys; the crop table's wider bands (5 of ~26 bits) keep
random candidates near linear (bench_dedup_scaling.py). ``crop_bands: 6`` finds 1.0 / 0.99 of
crops but its random candidates grow ~40x at a million images.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from operators.base import FATAL_ERRORS
from operators.dedup.near import NearDupOperator, NearDupParams, Signatures, first_media
from operators.errors import SkipSample, media_failure
from operators.media_io import open_image, open_media
from operators.registry import register_operator
from schemas.hashing import mix64, popcount64
from schemas.record import from_table

__all__ = ["CROP_VIEWS", "ImagePhashDedup", "ImagePhashParams", "band_keys", "crop_view", "image_hashes", "lsh_keys"]

_DECODE = 256  # JPEG draft target: the decoder picks the smallest scale at least this big
_HASH_BASE = 128
#: (kept fraction of each side, x anchor, y anchor): a cropped copy's full view lands near one of
#: these views of its original (benchmarks/bench_dedup_quality.py: 2-5% centred and 4-10% corner crops)
CROP_VIEWS = ((0.95, 0.5, 0.5), (0.93, 0.0, 0.0), (0.93, 1.0, 0.0), (0.93, 0.0, 1.0), (0.93, 1.0, 1.0))


class ImagePhashParams(NearDupParams):
    phash_threshold: int = Field(10, ge=0, le=64, description="largest pHash Hamming distance (of 64 bits) of a near-duplicate")
    dhash_threshold: int = Field(12, ge=0, le=64, description="largest dHash Hamming distance (of 64 bits) of a near-duplicate")
    bands: int = Field(6, ge=1, le=64, description="LSH bands the signature bits are split into; recall is guaranteed for pairs within bands-1 bits")
    lsh_bits: Literal["phash+dhash", "phash"] = Field(
        "phash+dhash", description="bits the bands are cut from: pHash then dHash (128), or pHash alone (64)"
    )
    flip: bool = Field(False, description="also match horizontally mirrored copies")
    crops: bool = Field(
        True,
        description="also match copies cropped by a few percent (centred, or from one corner): the hashes of "
        "sub-views (centre 95%, each corner 93%) are indexed and compared with the other image's full view",
    )
    crop_bands: int = Field(
        5,
        ge=1,
        le=64,
        description="bands of the separate LSH table that pairs full views with crop views: wider bands than "
        "`bands`, so the extra views add few random candidates at scale",
    )

    @model_validator(mode="after")
    def _bands_fit(self) -> ImagePhashParams:
        bits = 64 if self.lsh_bits == "phash" else 128
        for name in ("bands", "crop_bands"):
            if getattr(self, name) > bits:
                raise ValueError(f"{name}={getattr(self, name)} is more than the {bits} bits of lsh_bits={self.lsh_bits}")
        return self


def _bits(h: Any) -> np.uint64:
    return np.packbits(np.asarray(h.hash, dtype=bool).reshape(-1)).view(">u8")[0].astype(np.uint64)


def image_hashes(img) -> tuple[np.uint64, np.uint64]:
    """(pHash, dHash) of a PIL image as 64-bit integers."""
    import imagehash

    return _bits(imagehash.phash(img)), _bits(imagehash.dhash(img))


def _load(media: dict[str, Any]):
    """The hash base: grey, upright, at most _HASH_BASE px. Every view is hashed from this one
    small copy (pHash looks at 32x32, dHash at 9x8), so the crop views cost less than one hash of
    the decoded image. JPEG decodes at reduced scale (``draft``)."""
    from PIL import ImageOps

    with open_media(media) as f, open_image(f) as im:
        if im.format == "JPEG":
            im.draft("L", (_DECODE, _DECODE))
        im.load()
        img = ImageOps.exif_transpose(im).convert("L")
    img.thumbnail((_HASH_BASE, _HASH_BASE))
    return img


def crop_view(img, keep: float, ax: float, ay: float):
    """The part of ``img`` that keeps ``keep`` of each side, anchored at (ax, ay) in [0, 1]."""
    w, h = img.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    x, y = round((w - cw) * ax), round((h - ch) * ay)
    return img.crop((x, y, x + cw, y + ch))


def _pack(bits: np.ndarray) -> np.ndarray:
    """(rows, w <= 64) 0/1 matrix -> the w-bit integers it spells, most significant bit first."""
    weights = np.uint64(1) << np.arange(bits.shape[1] - 1, -1, -1, dtype=np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def band_keys(words: np.ndarray, bands: int, bits: int, first_band: int = 0) -> np.ndarray:
    """LSH keys of 64-bit words (rows, k) whose first ``bits`` bits are cut into ``bands`` bands:
    key = (first_band + band index) << 48 | band value (values over 48 bits are folded by a hash).
    Keys from different ``first_band`` ranges never collide: separate LSH tables."""
    words = np.asarray(words, dtype=np.uint64)
    if words.size == 0:
        return np.zeros((len(words), bands), dtype=np.uint64)
    words = words.reshape(len(words), -1)
    allbits = np.unpackbits(words.astype(">u8").view(np.uint8).reshape(len(words), -1), axis=1)[:, :bits]
    out = np.empty((len(words), bands), dtype=np.uint64)
    for i, chunk in enumerate(np.array_split(np.arange(bits), bands)):
        if len(chunk) <= 48:
            val = _pack(allbits[:, chunk])
        else:  # wider than 48 bits: hash 32-bit pieces together
            val = np.zeros(len(words), dtype=np.uint64)
            for piece in np.array_split(chunk, -(-len(chunk) // 32)):
                val = mix64(val ^ _pack(allbits[:, piece]))
        out[:, i] = (np.uint64(first_band + i) << np.uint64(48)) | (val & np.uint64((1 << 48) - 1))
    return out


_CROP_TABLE = 64  # first band index of the crop table's keys (table 1 uses 0..bands-1 <= 63)


def lsh_keys(p: ImagePhashParams, ph: np.ndarray, dh: np.ndarray, flip=None, views=None) -> np.ndarray:
    """(rows, keys) LSH keys. Table 1: full view (and mirrored view) in ``bands`` bands. Table 2,
    with ``crops``: full view and crop views in ``crop_bands`` wider bands."""
    bits = 64 if p.lsh_bits == "phash" else 128
    parts = [band_keys(np.stack([ph, dh], axis=1), p.bands, bits)]
    if flip is not None:
        parts.append(band_keys(np.stack(flip, axis=1), p.bands, bits))
    if views is not None:
        phv, dhv = views
        parts.append(band_keys(np.stack([ph, dh], axis=1), p.crop_bands, bits, _CROP_TABLE))
        parts += [band_keys(np.stack([phv[:, v], dhv[:, v]], axis=1), p.crop_bands, bits, _CROP_TABLE) for v in range(phv.shape[1])]
    return np.concatenate(parts, axis=1)


@register_operator
class ImagePhashDedup(NearDupOperator[ImagePhashParams]):
    """Near-duplicate images: pHash+dHash, banded LSH candidates, verified by Hamming distance."""

    name = "dedup_image_phash"
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("imagehash", "imagehash>=4.3"), ("scipy", "scipy>=1.10"))
    writes = {"image_dup_group_size": "size of the row's near-duplicate image group (1 = unique)"}
    group_key = "image_dup_group_size"
    default_layouts = ("image", "image-text")
    modality = "image"
    score_name = "phash distance"

    def thresholds(self) -> dict[str, Any]:
        p = self.params
        bits = 64 if p.lsh_bits == "phash" else 128
        return {
            "phash_threshold": p.phash_threshold,
            "dhash_threshold": p.dhash_threshold,
            "bands": p.bands,
            "bits_per_band": round(bits / p.bands, 2),
            "guaranteed_within_bits": p.bands - 1,
            "lsh_bits": p.lsh_bits,
            "flip": p.flip,
            "crops": [f"{k:.0%} at ({ax:g},{ay:g})" for k, ax, ay in CROP_VIEWS] if p.crops else False,
            "crop_bands": p.crop_bands if p.crops else None,
        }

    def signatures(self, live: pa.Table) -> Signatures:
        p = self.params
        n = live.num_rows
        ph = np.zeros(n, np.uint64)
        dh = np.zeros(n, np.uint64)
        phf = np.zeros(n, np.uint64)
        dhf = np.zeros(n, np.uint64)
        nv = len(CROP_VIEWS) if p.crops else 0
        phv = np.zeros((n, nv), np.uint64)
        dhv = np.zeros((n, nv), np.uint64)
        errors: list[SkipSample | None] = [None] * n
        rows = from_table(live.select(["media"])) if n else []
        for i, row in enumerate(rows):
            media = first_media(row, "image")
            try:
                img = _load(media)
                ph[i], dh[i] = image_hashes(img)
                if p.flip:
                    from PIL import ImageOps

                    phf[i], dhf[i] = image_hashes(ImageOps.mirror(img))
                for v, view in enumerate(CROP_VIEWS[:nv]):
                    phv[i, v], dhv[i, v] = image_hashes(crop_view(img, *view))
            except FATAL_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - the row is quarantined with the reason
                errors[i] = media_failure(e)
        keys = lsh_keys(p, ph, dh, (phf, dhf) if p.flip else None, (phv, dhv) if nv else None)
        cols = {"phash": _i64(ph), "dhash": _i64(dh)}
        if p.flip:
            cols.update(phash_flip=_i64(phf), dhash_flip=_i64(dhf))
        if nv:
            cols.update(phash_crops=_views(phv), dhash_crops=_views(dhv))
        return Signatures(keys=[keys[i] if errors[i] is None else keys[i][:0] for i in range(n)], columns=cols, errors=errors)

    def verifier(self, summary: pa.Table):
        p = self.params
        ph = summary["phash"].to_numpy().view(np.uint64)
        dh = summary["dhash"].to_numpy().view(np.uint64)
        flip = p.flip and "phash_flip" in summary.column_names
        if flip:
            phf = summary["phash_flip"].to_numpy().view(np.uint64)
            dhf = summary["dhash_flip"].to_numpy().view(np.uint64)
        crops = p.crops and "phash_crops" in summary.column_names
        if crops:
            phv, dhv = _unviews(summary["phash_crops"]), _unviews(summary["dhash_crops"])

        def verify(left: np.ndarray, right: np.ndarray):
            dp = popcount64(ph[left] ^ ph[right])
            dd = popcount64(dh[left] ^ dh[right])
            how = np.zeros(len(left), dtype=np.int8)  # 0 as is, 1 mirrored, 2 cropped
            if flip:
                dpf = popcount64(ph[left] ^ phf[right])
                ddf = popcount64(dh[left] ^ dhf[right])
                better = dpf + ddf < dp + dd
                dp, dd, how = np.where(better, dpf, dp), np.where(better, ddf, dd), np.where(better, 1, how)
            if crops:  # one image's full view against the other's crop views, both ways
                for a, b in ((left, right), (right, left)):
                    dpc = popcount64(ph[a][:, None] ^ phv[b]).astype(np.int64)
                    ddc = popcount64(dh[a][:, None] ^ dhv[b]).astype(np.int64)
                    best = np.argmin(dpc + ddc, axis=1)
                    dpc, ddc = np.take_along_axis(dpc, best[:, None], 1)[:, 0], np.take_along_axis(ddc, best[:, None], 1)[:, 0]
                    better = dpc + ddc < dp + dd
                    dp, dd, how = np.where(better, dpc, dp), np.where(better, ddc, dd), np.where(better, 2, how)
            ok = (dp <= p.phash_threshold) & (dd <= p.dhash_threshold)
            tag = {0: "", 1: ", mirrored", 2: ", cropped"}
            detail = [f"dhash distance {d}{tag[h]}" for d, h in zip(dd.tolist(), how.tolist(), strict=True)]
            return ok, dp.astype(np.float64), detail

        return verify


def _views(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.view(np.int64).reshape(-1), pa.int64()), x.shape[1])


def _unviews(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks()
    return arr.values.to_numpy().view(np.uint64).reshape(len(arr), -1)


def _i64(x: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(x, dtype=np.uint64).view(np.int64), pa.int64())
