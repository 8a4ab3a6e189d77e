"""JSON Schemas for editors: the pipeline config with every reader's and operator's params."""

from __future__ import annotations

import copy
from typing import Any

from schemas.config import PipelineConfig

__all__ = ["pipeline_json_schema"]


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    defs.update(schema.pop("$defs", {}))
    return schema


def pipeline_json_schema() -> dict[str, Any]:
    """PipelineConfig's schema with ``sources`` and ``stages`` as tagged unions over the registry."""
    from operators.registry import OPERATORS, READERS, get_operator

    get_operator("filter")  # loads the built-ins
    schema = PipelineConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    base_source = copy.deepcopy(defs["SourceConfig"])
    base_stage = copy.deepcopy(defs["StageConfig"])
    sources, stages = [], []
    for name, cls in sorted(READERS.items()):
        s = copy.deepcopy(base_source)
        s["properties"]["reader"] = {"const": name, "description": (cls.__doc__ or "").strip().split("\n")[0]}
        s["properties"]["params"] = _inline(cls.Params.model_json_schema(by_alias=True), defs)
        s["title"] = f"source:{name}"
        sources.append(s)
    for name, cls in sorted(OPERATORS.items()):
        s = copy.deepcopy(base_stage)
        s["properties"]["op"] = {"const": name, "description": (cls.__doc__ or "").strip().split("\n")[0]}
        s["properties"]["params"] = _inline(cls.Params.model_json_schema(by_alias=True), defs)
        s["title"] = f"stage:{name}"
        stages.append(s)
    schema["properties"]["sources"]["items"] = {"oneOf": sources}
    schema["properties"]["stages"]["items"] = {"oneOf": stages}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nmm-curate pipeline"
    return schema
