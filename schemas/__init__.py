"""The contract between parts: the sample record, config models and vocabularies."""

from schemas.config import PipelineConfig, RayConfig, Resources, SourceConfig, StageConfig
from schemas.enums import Bucket, Layout, Modality, ReasonCode, Status, Task
from schemas.record import (
    MEDIA_TYPE,
    SAMPLE_SCHEMA,
    TEXT_FIELDS,
    content_hash,
    derive,
    from_table,
    new_media,
    new_record,
    normalise_text,
    record_id,
    to_table,
)

__all__ = [
    "MEDIA_TYPE",
    "SAMPLE_SCHEMA",
    "TEXT_FIELDS",
    "Bucket",
    "Layout",
    "Modality",
    "PipelineConfig",
    "RayConfig",
    "ReasonCode",
    "Resources",
    "SourceConfig",
    "StageConfig",
    "Status",
    "Task",
    "content_hash",
    "derive",
    "from_table",
    "new_media",
    "new_record",
    "normalise_text",
    "record_id",
    "to_table",
]
