"""Typed models of the pipeline config (YAML). Operator params are validated against each
operator's own ``Params`` model by the loader in ``curate.config``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PipelineConfig", "RayConfig", "Resources", "SourceConfig", "StageConfig"]

_NAME = r"^[A-Za-z0-9_\-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What one worker of a stage needs, and how the engine batches and scales it."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per task or actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor; > 0 makes the stage an actor pool on GPU")
    memory_mb: int | None = Field(None, ge=1, description="heap memory reserved per task or actor (MiB)")
    batch_size: int | None = Field(
        None, ge=1, description="rows per call inside a block; default: the operator's own"
    )
    concurrency: int | None = Field(
        None, ge=1, description="actors in the pool (model-backed operators) or max parallel tasks"
    )


class SourceConfig(_Strict):
    """One input corpus and the reader that turns it into records."""

    name: str = Field(..., pattern=_NAME, description="unique source name (letters, digits, _ and -)")
    reader: str = Field(..., description="registered reader name; `curate operators` lists them")
    path: str = Field(..., description="folder, file, glob or brace list (shard-{000..099}.tar) the reader starts from (relative to the config file)")
    license: str | None = Field(None, description="license recorded on every row of this source")
    enabled: bool = Field(True, description="false skips this source (e.g. --set sources.NAME.enabled=false)")
    allow_empty: bool = Field(
        False,
        description="true: a path with nothing to read (an empty folder, no file with the reader's extensions, a glob "
        "that matches nothing) gives 0 rows; default: the run stops before any work with an error naming the source",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="reader parameters")
    allow_roots: list[str] = Field(
        default_factory=list,
        description="folders besides the source's own (and its reader's media_root / site_root) that media and "
        "sidecar paths may resolve into after symlinks (relative to the config file); anything else is outside_root",
    )
    allow_schemes: list[str] = Field(
        default_factory=list,
        description="URL schemes this source's media may be read from (e.g. s3, gs, https; case-insensitive); "
        "default none: local files only, every other URL is scheme_not_allowed (http(s): remote_media)",
    )


class StageConfig(_Strict):
    """One step of the curation DAG: a registered operator with typed params and resources."""

    op: str = Field(..., description="registered operator name; `curate operators` lists them")
    name: str | None = Field(None, pattern=_NAME, description="stage name (default: the op name)")
    params: dict[str, Any] = Field(default_factory=dict, description="operator parameters")
    resources: Resources = Field(default_factory=Resources)

    @property
    def stage_name(self) -> str:
        return self.name or self.op


class RayConfig(_Strict):
    """How the engine starts or joins Ray."""

    address: str | None = Field(None, description="existing cluster address; None starts local Ray in-process")
    num_cpus: int | None = Field(None, ge=1, description="local Ray CPUs (default: all cores)")
    object_store_mb: int = Field(512, ge=64, description="local Ray object store size in MiB")
    units_per_file: int = Field(64, ge=1, description="media files per ingest unit (the unit of resume)")


class PipelineConfig(_Strict):
    """A curation DAG: sources -> stages -> curated table."""

    version: int = Field(1, description="config format version")
    name: str = Field(..., pattern=_NAME)
    description: str | None = None
    sources: list[SourceConfig] = Field(..., min_length=1)
    stages: list[StageConfig] = Field(default_factory=list)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {dup}")
        return v

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, v: list[StageConfig]) -> list[StageConfig]:
        names = [s.stage_name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique (set `name:` on repeated ops); repeated: {dup}")
        return v
