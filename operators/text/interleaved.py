"""``interleaved_clean``: tidy interleaved documents (HTML pages, OBELICS rows) for training.

For rows whose layout is ``interleaved`` (other rows pass untouched):

1. **Drop decorative and broken images.** An image media item is dropped when
   - it has an ``error`` (missing file, unreadable, corrupt; web images that were never fetched
     carry ``remote_media``: dropped too unless ``keep_remote: true``);
   - its probed size says it is an icon or a spacer: shortest side below ``min_side`` or aspect
     ratio (long side / short side) above ``max_aspect`` (``probe`` runs earlier and fills width
     and height; unprobed images are judged by name only);
   - its file name or URL path has a word from ``name_patterns`` (icon, logo, spacer, pixel,
     sprite, badge... as a separate word: ``site-logo.png``, ``/icons/x.svg``, ``pixel.gif``; not
     ``logotype`` or ``pixelart``).
   Its ``media`` segments go, the remaining ``media_index`` values are remapped to the new
   positions, and ``meta["alt_texts"]`` (from the HTML reader) is realigned. Nothing is lost
   silently: ``meta["dropped_images"]`` lists each removed item (uri, reason, width, height, alt).
2. **Normalise the sequence.** Empty or whitespace-only text segments are removed, adjacent text
   segments are merged with a blank line between them (the paragraph break the reader used), and
   ``text`` is rebuilt from the text segments (it stays equal to their concatenation).
3. **Documents with no image left to read.** When a document referenced images and every one
   of them is unavailable (an ``error``: missing file, unreadable, corrupt, outside the roots, or
   a web image not downloaded while ``keep_remote`` is off), the document is dropped with reason
   ``all_media_missing`` (the detail counts the errors and names the first image), so a corpus
   whose media paths resolve to the wrong folder shows up in the summary's drop reasons instead
   of turning silently into text. ``all_missing: keep`` keeps them, as text documents.
   Documents that only lost decorative images (icons, spacers, logos) are not affected.
4. **Count.** Text tokens are estimated as ``ceil(chars / 4)`` over the text segments (a BPE
   tokenizer averages about four characters per token on English web text; ``token_estimate:
   words`` counts whitespace-separated words instead); ``image_text_ratio`` is images per 1000
   tokens. A document left without images becomes layout ``text`` (modalities ``[text]``).

Media items of other modalities in the row are left alone. The row's ``id`` and ``content_hash``
do not change.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlparse

from pydantic import Field

from operators.audio.transcode import load_meta, store_meta
from operators.base import Params, RowOperator
from operators.registry import register_operator
from schemas.enums import Layout, Modality, ReasonCode

__all__ = ["InterleavedClean", "InterleavedCleanParams", "drop_reason"]

DEFAULT_NAME_PATTERNS = ["icon", "logo", "spacer", "pixel", "sprite", "badge", "favicon", "blank", "transparent"]


class InterleavedCleanParams(Params):
    min_side: int = Field(64, ge=0, description="images whose shortest side (pixels) is below this are icons: dropped")
    max_aspect: float = Field(
        5.0, ge=1, description="images whose long side / short side exceeds this are spacers or banners: dropped"
    )
    name_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NAME_PATTERNS),
        description="a file name or URL path with one of these as a separate word (plural too) is decorative: dropped",
    )
    keep_remote: bool = Field(False, description="keep web images that were not fetched (error remote_media)")
    token_estimate: Literal["chars4", "words"] = Field(
        "chars4", description="text tokens: chars4 = ceil(characters / 4), words = whitespace-separated words"
    )
    merge_separator: str = Field("\n\n", description="put between adjacent text segments when they are merged")
    all_missing: Literal["drop", "keep"] = Field(
        "drop",
        description="a document whose images are all unavailable (missing, unreadable, not downloaded): "
        "drop it (reason all_media_missing) or keep it as text",
    )


def _name_regex(patterns: list[str]) -> re.Pattern[str] | None:
    words = [re.escape(p.lower()) for p in patterns if p.strip()]
    if not words:
        return None
    return re.compile(r"(?<![a-z])(?:" + "|".join(words) + r")s?(?![a-z])")


def _path_of(media: dict[str, Any]) -> str:
    uri = media.get("member") or media.get("uri") or ""
    if "://" in uri:
        uri = urlparse(uri).path
    return unquote(uri).lower()


def drop_reason(media: dict[str, Any], p: InterleavedCleanParams, names: re.Pattern[str] | None = None) -> str | None:
    """Why an image item should go (``missing``, ``remote``, ``icon``, ``spacer``, ``name``), or None."""
    if media.get("error"):
        if media.get("error_reason") == ReasonCode.REMOTE_MEDIA.value:
            return None if p.keep_remote else "remote"
        return "missing"
    w, h = media.get("width"), media.get("height")
    if w and h:
        if max(w, h) / min(w, h) > p.max_aspect:
            return "spacer"
        if min(w, h) < p.min_side:
            return "icon"
    if names is None:
        names = _name_regex(p.name_patterns)
    if names is not None and names.search(_path_of(media)):
        return "name"
    return None


@register_operator
class InterleavedClean(RowOperator[InterleavedCleanParams]):
    """Drop icon/spacer/missing images from interleaved documents, merge text, count tokens and images."""

    name: ClassVar[str] = "interleaved_clean"
    default_batch_size: ClassVar[int] = 256
    writes: ClassVar[dict[str, str]] = {
        "num_images_kept": "image items left in the document",
        "images_dropped": "image items removed (missing, remote, icon, spacer, decorative name)",
        "images_missing": "image items removed because they could not be read (missing, unreadable, remote)",
        "text_tokens": "estimated text tokens of the text segments (ceil(chars/4), or words)",
        "image_text_ratio": "images per 1000 text tokens",
    }

    def process(self, row: dict[str, Any]) -> None:
        if row.get("layout") != Layout.INTERLEAVED.value:
            return
        p = self.params
        names = _name_regex(p.name_patterns)
        media = list(row.get("media") or [])
        meta = load_meta(row)
        alts = meta.get("alt_texts") if isinstance(meta.get("alt_texts"), list) else None
        keep: dict[int, int] = {}  # old media index -> new one
        dropped: list[dict[str, Any]] = []
        for i, m in enumerate(media):
            reason = drop_reason(m, p, names) if m.get("modality") == Modality.IMAGE.value else None
            if reason is None:
                keep[i] = len(keep)
                continue
            dropped.append({"uri": m.get("uri"), "member": m.get("member"), "reason": reason, "error": m.get("error"),
                            "width": m.get("width"), "height": m.get("height"), "media_index": i,
                            "alt": alts[i] if alts and i < len(alts) else None})  # fmt: skip
        segments: list[dict[str, Any]] = []
        for seg in row.get("interleaved") or []:
            if seg.get("kind") == "text":
                text = (seg.get("text") or "").strip()
                if not text:
                    continue
                if segments and segments[-1]["kind"] == "text":
                    segments[-1]["text"] += p.merge_separator + text
                else:
                    segments.append({"kind": "text", "text": text, "media_index": None})
            else:
                idx = seg.get("media_index")
                if idx is None or idx not in keep:
                    continue
                segments.append({"kind": seg.get("kind") or "media", "text": seg.get("text"), "media_index": keep[idx]})
        row["interleaved"] = segments
        if dropped:
            row["media"] = [m for i, m in enumerate(media) if i in keep]
            if alts is not None:
                meta["alt_texts"] = [a for i, a in enumerate(alts) if i in keep]
            meta["dropped_images"] = [*(meta.get("dropped_images") or []), *dropped]
            store_meta(row, meta)
        texts = [s["text"] for s in segments if s["kind"] == "text"]
        row["text"] = p.merge_separator.join(texts) or None
        images = sum(1 for m in row["media"] or [] if m.get("modality") == Modality.IMAGE.value)
        if p.token_estimate == "words":
            tokens = sum(len(t.split()) for t in texts)
        else:
            tokens = sum(math.ceil(len(t) / 4) for t in texts)
        if not row.get("media"):
            row["layout"] = Layout.TEXT.value
            row["modalities"] = [Modality.TEXT.value] if texts else []
        elif images == 0:
            row["modalities"] = [m for m in row.get("modalities") or [] if m != Modality.IMAGE.value]
        unavailable = [d for d in dropped if d["reason"] in _UNAVAILABLE]
        row["scores"] = {
            **(row.get("scores") or {}),
            "num_images_kept": float(images),
            "images_dropped": float(len(dropped)),
            "images_missing": float(len(unavailable)),
            "text_tokens": float(tokens),
            "image_text_ratio": images * 1000.0 / tokens if tokens else 0.0,
        }
        if p.all_missing == "drop" and unavailable and len(unavailable) == len(dropped) and not row.get("media"):
            self.drop(row, ReasonCode.ALL_MEDIA_MISSING, _all_missing_detail(unavailable))


#: ``drop_reason`` values that mean the image could not be had (not that it was decorative)
_UNAVAILABLE = frozenset({"missing", "remote"})


def _all_missing_detail(items: list[dict[str, Any]]) -> str:
    causes: dict[str, int] = {}
    for d in items:
        cause = (d.get("error") or d["reason"]).split(":", 1)[0]
        causes[cause] = causes.get(cause, 0) + 1
    counted = ", ".join(f"{c}: {n}" for c, n in sorted(causes.items()))
    n = len(items)
    first = items[0].get("member") or items[0].get("uri")
    return (
        f"all {n} image{'s' * (n != 1)} of the document could not be read ({counted}; first: {first}); "
        "check the source's media_root, or set all_missing: keep to keep such documents as text"
    )
