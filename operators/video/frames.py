"""``video_frames``: sample frames of each video by seeking and write them as JPEG keyframes.

Frames are taken ``num_frames`` evenly (the centres of ``num_frames`` equal parts of the video) or
one every ``every_s`` seconds (the centres of ``every_s``-long windows), at most ``max_frames``,
through the shared frame cache (``operators.video.decode``): each target costs the reference frames
from the keyframe before it (a seek when it is far ahead; GOPs with no target are not decoded),
never a decode of the whole file; a later ``video_quality`` stage in the same worker reuses the
decoded frames.

Thumbnails (longer side at most ``max_side``) go to ``<artifacts>/<id[:2]>/<id>_v<I>_<NNN>.jpg``
(through a temporary name, so a rerun overwrites them) and are appended to the row's ``media`` as
items with ``role: keyframe``, ``modality: image`` (uri, width, height, format, bytes, sha256 set).
They are auxiliary: the row's ``layout`` (video-text) and ``modalities`` do not change, and
``meta["keyframes"]`` lists ``{media_index, video_index, t_s}`` for each. Running the stage again
replaces the row's keyframe items instead of adding more.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from operators.base import OperatorError, Params, RowOperator
from operators.registry import register_operator
from operators.video.decode import dump_meta, duration_of, load_meta, plan_times, sample_frames, video_items
from schemas.record import new_media

__all__ = ["KEYFRAME_ROLE", "VideoFrames", "VideoFramesParams"]

KEYFRAME_ROLE = "keyframe"


class VideoFramesParams(Params):
    num_frames: int | None = Field(8, ge=1, description="frames per video, evenly spaced (ignored when every_s is set)")
    every_s: float | None = Field(None, gt=0, description="one frame every this many seconds instead of num_frames")
    max_frames: int = Field(64, ge=1, description="at most this many frames per video")
    max_side: int = Field(256, ge=16, description="longer side of the thumbnails in pixels (never upscaled)")
    quality: int = Field(85, ge=1, le=100, description="JPEG quality")

    @model_validator(mode="after")
    def _one_rule(self) -> VideoFramesParams:
        if self.num_frames is None and self.every_s is None:
            raise ValueError("set num_frames or every_s")
        return self


@register_operator
class VideoFrames(RowOperator[VideoFramesParams]):
    """Sample video frames by seeking; write JPEG keyframes and add them as media items."""

    name: ClassVar[str] = "video_frames"
    default_batch_size: ClassVar[int] = 16
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"), ("PIL", "pillow>=10"))
    writes: ClassVar[dict[str, str]] = {"num_keyframes": "keyframe thumbnails written for the row's videos"}

    def times_for(self, media: dict[str, Any]) -> list[float]:
        p = self.params
        return plan_times(duration_of(media), num=p.num_frames, every_s=p.every_s, max_frames=p.max_frames)

    def process(self, row: dict[str, Any]) -> None:
        from PIL import Image

        p = self.params
        videos = video_items(row)
        if not videos:
            return
        if not self.artifacts_dir:
            raise OperatorError("video_frames needs an artifacts folder (the engine sets OUT/artifacts/<stage>)")
        media = [m for m in row["media"] if m.get("role") != KEYFRAME_ROLE]
        index = {id(m): i for i, m in enumerate(media)}
        folder = Path(self.artifacts_dir) / (row["id"] or "noid")[:2]
        folder.mkdir(parents=True, exist_ok=True)
        listed = []
        for _, video in videos:
            vi = index[id(video)]
            sample = sample_frames(video, self.times_for(video), max_side=p.max_side)
            for j, (t, rgb) in enumerate(zip(sample.times, sample.rgb_at(p.max_side), strict=True)):
                path = folder / f"{row['id']}_v{vi}_{j:03d}.jpg"
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                Image.fromarray(rgb).save(tmp, format="JPEG", quality=p.quality)
                os.replace(tmp, path)
                data = path.read_bytes()
                h, w = rgb.shape[:2]
                item = new_media(
                    "image", str(path), role=KEYFRAME_ROLE, format="jpeg", width=w, height=h,
                    bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                )  # fmt: skip
                listed.append({"media_index": len(media), "video_index": vi, "t_s": round(float(t), 6)})
                media.append(item)
        row["media"] = media
        meta = load_meta(row)
        meta["keyframes"] = listed
        row["meta"] = dump_meta(meta)
        row["scores"] = {**(row.get("scores") or {}), "num_keyframes": float(len(listed))}
