"""Typed models of a mixture YAML: the stages of a training run, each a tree of weighted
groups over the curated table, in one unit (samples, tokens or seconds), with a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from operators.conditions import Match
from schemas.config_file import load_document, validate_document

__all__ = [
    "AudioEstimator",
    "Estimators",
    "GroupSpec",
    "ImageEstimator",
    "MixtureConfig",
    "ScheduleStep",
    "ShardSpec",
    "StageMix",
    "TextEstimator",
    "VideoEstimator",
    "load_mixture",
]

_NAME = r"^[A-Za-z0-9_\-]+$"
#: default ``shards.max_bytes``: a shard never holds more than this
MAX_SHARD_BYTES = 1 << 30
Unit = Literal["samples", "tokens", "seconds", "hours", "text_tokens", "image_tokens", "video_tokens", "audio_tokens"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextEstimator(_Strict):
    chars_per_token: float = Field(4.0, gt=0, description="text tokens = characters / chars_per_token")
    tokenizer: str | None = Field(
        None, description="a tokenizer.json file (Hugging Face `tokenizers` format): count real tokens instead"
    )


class ImageEstimator(_Strict):
    """Visual tokens of an image, Qwen2-VL style: resize into [min_pixels, max_pixels] keeping
    the aspect ratio, round sides to multiples of patch_size*merge, tokens = patches / merge^2."""

    patch_size: int = Field(14, ge=1)
    merge: int = Field(2, ge=1, description="spatial merge factor (tokens = patches / merge^2)")
    min_pixels: int = Field(56 * 56, ge=1)
    max_pixels: int = Field(28 * 28 * 1280, ge=1)
    fixed_tokens: int | None = Field(None, ge=1, description="a fixed count per image instead (e.g. 576 for a 24x24 grid)")

    @model_validator(mode="after")
    def _range(self) -> ImageEstimator:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        return self


class VideoEstimator(_Strict):
    fps: float = Field(2.0, gt=0, description="frames sampled per second of video")
    max_frames: int = Field(768, ge=1)
    min_frames: int = Field(4, ge=1)
    temporal_patch: int = Field(2, ge=1, description="frames merged into one temporal patch")
    max_pixels: int = Field(448 * 448, ge=1, description="per-frame pixel budget (image estimator rules otherwise)")


class AudioEstimator(_Strict):
    frame_rate_hz: float = Field(12.5, gt=0, description="audio tokens per second (12.5 for Mimi-style codecs, 25 for Whisper-style encoders)")


class Estimators(_Strict):
    text: TextEstimator = Field(default_factory=TextEstimator)
    image: ImageEstimator = Field(default_factory=ImageEstimator)
    video: VideoEstimator = Field(default_factory=VideoEstimator)
    audio: AudioEstimator = Field(default_factory=AudioEstimator)


class GroupSpec(_Strict):
    """A node of the target tree. Leaves draw samples; inner nodes split their share."""

    name: str = Field(..., pattern=_NAME)
    where: Match = Field(default_factory=Match, description="rows of this group (ANDed with the parent's)")
    buckets: list[str] | None = Field(None, description="row is eligible for one of these buckets")
    tasks: list[str] | None = Field(None, description="row has one of these tasks")
    weight: float | None = Field(None, ge=0, description="relative weight among siblings")
    amount: float | None = Field(None, ge=0, description="absolute amount in the stage unit (taken before weights)")
    temperature: float | None = Field(None, gt=0, description="source weights inside this group ∝ size^(1/T); 1 = proportional")
    max_repeat: float | None = Field(None, gt=0, description="per-source cap in epochs inside this group")
    text_first: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of samples whose text goes before their media in the training sequence (Transfusion: "
        "0.8, caption before image); drawn per sample by a hash of (seed, key), written as `text_first` in the "
        "sample JSON; inherited by child groups",
    )
    groups: list[GroupSpec] = Field(default_factory=list)

    @field_validator("buckets", "tasks", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _weight_or_amount(self) -> GroupSpec:
        if self.weight is not None and self.amount is not None:
            raise ValueError(f"group '{self.name}': give weight or amount, not both")
        names = [g.name for g in self.groups]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"group '{self.name}': repeated child names {dup}")
        return self


class ScheduleStep(_Strict):
    """From ``at`` (fraction of the stage budget) on, these weights replace the groups' own."""

    at: float = Field(..., ge=0, lt=1, description="fraction of the budget where this step starts")
    weights: dict[str, float] = Field(..., description="group path (a/b) or name -> weight")


class ShardSpec(_Strict):
    """How big a shard is. Shards are cut in the stage's unit: a shard closes at the first sample
    boundary past its size where every group is within the stage's tolerance of its planned
    share (else, before twice the size, where it is nearest), so shards of a stage in tokens hold
    about ``max_samples`` samples, not exactly; a stage in samples cuts exactly ``max_samples``."""

    split: str = Field("train", pattern=_NAME)
    max_samples: int = Field(
        1000,
        ge=1,
        description="samples per shard; in a stage counted in another unit, the shard size is max_samples samples' "
        "worth of it (max_samples x the stage's mean sample cost) unless `amount` says otherwise",
    )
    amount: float | None = Field(
        None,
        gt=0,
        description="shard size in the stage unit (tokens, seconds, ...), for stages not counted in samples",
    )
    max_bytes: int | None = Field(
        MAX_SHARD_BYTES,
        ge=1024,
        description="bytes per shard (a hard limit: a shard never grows past it; default 1 GiB, null for none): "
        "what the samples' media weigh by the curated table, plus 1 KiB a sample for its JSON and headers",
    )
    mode: Literal["premixed", "per_group"] = Field(
        "premixed", description="premixed: one interleaved shard sequence; per_group: shards per leaf + loader configs"
    )


class StageMix(_Strict):
    name: str = Field(..., pattern=_NAME)
    description: str | None = None
    unit: Unit = Field(
        "samples",
        description="what the ratios and the budget count: samples, tokens (all modalities), seconds or hours of "
        "media, or one modality's tokens (text_tokens, image_tokens, ...)",
    )
    budget: float = Field(..., gt=0, description="total amount in the unit (samples, tokens, or seconds)")
    strict: bool = Field(
        False,
        description="fail instead of reporting when a target cannot be met, or when a full shard cannot hold the "
        "tolerance (before any shard is written)",
    )
    temperature: float = Field(1.0, gt=0, description="default source temperature inside groups")
    max_repeat: float = Field(1.0, gt=0, description="default per-source cap in epochs")
    shortfall: Literal["redistribute", "shrink"] = Field(
        "redistribute",
        description="a group that cannot reach its target: give the rest to its siblings, or shrink the budget",
    )
    tolerance: float = Field(
        0.02,
        gt=0,
        lt=1,
        description="allowed absolute deviation of a group's share in every full shard (all but the last of a shard "
        "folder), in the stage unit; per-group shards: of a source's share in its group. Checked before writing: "
        "a shard size that cannot hold it is reported with the best tolerance it can hold (an error when strict)",
    )
    groups: list[GroupSpec] = Field(..., min_length=1)
    schedule: list[ScheduleStep] = Field(default_factory=list)
    shards: ShardSpec = Field(default_factory=ShardSpec)
    estimators: Estimators | None = Field(None, description="overrides the mixture's estimators for this stage")

    @model_validator(mode="after")
    def _shard_amount_unit(self) -> StageMix:
        if self.unit == "samples" and self.shards.amount is not None:
            raise ValueError("shards.amount is the shard size of a stage counted in tokens, seconds, ...; in samples use shards.max_samples")
        return self

    @field_validator("schedule")
    @classmethod
    def _ordered(cls, v: list[ScheduleStep]) -> list[ScheduleStep]:
        ats = [s.at for s in v]
        if ats != sorted(ats) or len(set(ats)) != len(ats):
            raise ValueError(f"schedule steps must have increasing `at`: {ats}")
        return v


class MixtureConfig(_Strict):
    version: int = 1
    name: str = Field(..., pattern=_NAME)
    description: str | None = None
    seed: int = Field(0, description="selection and order are a pure function of (seed, sample ids)")
    estimators: Estimators = Field(default_factory=Estimators)
    stages: list[StageMix] = Field(..., min_length=1)

    @field_validator("stages")
    @classmethod
    def _unique(cls, v: list[StageMix]) -> list[StageMix]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique; repeated: {dup}")
        return v

    def stage(self, name: str) -> StageMix:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage '{name}' (stages: {', '.join(s.name for s in self.stages)})")


def load_mixture(path: str | Path, overrides: list[str] | None = None) -> MixtureConfig:
    """Parse and validate a mixture YAML, with the same file:line: key errors as pipelines."""
    data, doc = load_document(path, overrides)
    return validate_document(MixtureConfig, data, doc)
