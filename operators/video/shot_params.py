"""The params of ``video_shots`` (see ``operators.video.shots``): how shots are detected, which
pieces are written, and the training format (``transcode``) the clips are written in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from operators.base import Params

__all__ = ["TranscodeParams", "VideoShotsParams"]


class TranscodeParams(Params):
    """The training format clips are written in."""

    codec: str = Field("libx264", description="FFmpeg video encoder (libx264, libx265, libvpx-vp9, mpeg4...)")
    container: str = Field("mp4", description="container format and file suffix (mp4, mov, mkv, webm)")
    width: int | None = Field(None, ge=2, description="output width; with height: exact size, alone: keeps the aspect")
    height: int | None = Field(None, ge=2, description="output height; with width: exact size, alone: keeps the aspect")
    max_side: int | None = Field(None, ge=2, description="scale down so the longer side is at most this (never up)")
    fps: float | None = Field(
        None, gt=0, description="constant output frame rate; None keeps the source's average rate"
    )
    crf: int | None = Field(23, ge=0, le=63, description="constant quality for x264/x265/vpx/av1 (lower is better)")
    bitrate_kbps: int | None = Field(None, gt=0, description="target video bitrate; used instead of crf when set")
    preset: str | None = Field("veryfast", description="x264/x265 speed preset")
    pix_fmt: str = Field("yuv420p", description="output pixel format")
    keyint_s: float | None = Field(2.0, gt=0, description="keyframe interval in seconds (None: the encoder's default)")
    threads: int = Field(
        1, ge=0, description="encoder threads (0: FFmpeg decides; a fixed count gives the same bytes everywhere)"
    )
    reproducible: bool = Field(
        True,
        description="libx264: turn macroblock-tree rate control off (it is not bit-reproducible), so equal inputs "
        "give equal bytes and exact dedup sees equal clips; costs a few percent of bitrate",
    )
    faststart: bool = Field(True, description="mp4/mov: put the index first so readers can stream the clip")
    audio_codec: str = Field("aac", description="FFmpeg audio encoder for the kept audio track")
    audio_bitrate_kbps: int = Field(128, gt=0, description="audio bitrate")
    audio_sample_rate: int | None = Field(None, gt=0, description="output sample rate; None keeps the source's")
    audio_channels: Literal[1, 2] | None = Field(None, description="1 or 2; None keeps the source's (at most 2)")


class VideoShotsParams(Params):
    method: Literal["pixel", "histogram"] = Field(
        "pixel",
        description="pixel: mean absolute RGB difference of consecutive tiny frames (0..1); histogram: half the L1 "
        "distance of their 4x4x4-bin colour histograms (0..1, blind to motion, misses cuts between similar colours)",
    )
    threshold: float = Field(
        0.12, gt=0, le=1, description="a frame whose score vs the previous frame is >= this starts a shot"
    )
    adaptive_ratio: float | None = Field(
        2.5,
        ge=1,
        description="also require the score to be >= this times the median score of the previous adaptive_window "
        "frames, so fast motion is not taken for cuts; None: the threshold alone decides",
    )
    adaptive_window: int = Field(8, ge=2, le=240, description="frames in the median the adaptive rule compares with")
    analysis_width: int = Field(64, ge=8, le=640, description="width of the frames the detector compares")
    analysis_height: int = Field(36, ge=8, le=640, description="height of the frames the detector compares")
    min_clip_s: float = Field(1.0, ge=0, description="shots shorter than this are not written (dropped child rows)")
    max_clip_s: float | None = Field(
        30.0, gt=0, description="longer shots are cut into the fewest equal pieces of at most this; None: no cut"
    )
    always_write: bool = Field(False, description="write a clip even when the video is one shot needing no cut")
    drop_audio: bool = Field(False, description="write clips without audio (else the audio track is re-encoded)")
    transcode: TranscodeParams = Field(default_factory=TranscodeParams, description="the clips' format")

    @model_validator(mode="after")
    def _check(self) -> VideoShotsParams:
        if self.max_clip_s is not None and self.max_clip_s < self.min_clip_s:
            raise ValueError(f"max_clip_s {self.max_clip_s} < min_clip_s {self.min_clip_s}")
        return self
