"""Load a pipeline YAML into a validated plan. Every error names the file, the key, the line
and what was expected, and is raised before any work starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel

from operators.base import EmptySourceError, GlobalOperator, Operator, Reader, StageContext
from schemas.config import PipelineConfig, SourceConfig, StageConfig
from schemas.config_file import (
    ConfigError,
    apply_overrides,
    load_document,
    load_yaml,
    validate_document,
)

__all__ = ["ConfigError", "LoadedPipeline", "PlannedSource", "PlannedStage", "apply_overrides", "load_pipeline", "load_yaml"]


@dataclass(frozen=True, slots=True)
class PlannedSource:
    """One source of the pipeline and its reader, built once."""

    spec: SourceConfig
    reader: Reader

    @property
    def params(self) -> BaseModel:
        return self.reader.params


@dataclass(frozen=True, slots=True)
class PlannedStage:
    """One stage of the pipeline and its operator, built once with its StageContext."""

    spec: StageConfig
    op: Operator

    @property
    def params(self) -> BaseModel:
        return self.op.params

    @property
    def is_global(self) -> bool:
        return isinstance(self.op, GlobalOperator)


@dataclass(frozen=True, slots=True)
class LoadedPipeline:
    """A validated pipeline: its config, its file, and every reader and operator built."""

    config: PipelineConfig
    file: Path
    sources: list[PlannedSource]
    stages: list[PlannedStage]
    #: the output folder the operators' artifact folders were set for (None: not known yet)
    output: Path | None = None

    @property
    def source_params(self) -> list[BaseModel]:
        return [s.params for s in self.sources]

    @property
    def stage_params(self) -> list[BaseModel]:
        return [s.params for s in self.stages]

    def for_output(self, output: Path) -> LoadedPipeline:
        """The same plan with each operator's artifacts under ``output`` (rebuilt only if needed)."""
        output = Path(output).resolve()
        if self.output == output:
            return self
        stages = [PlannedStage(st.spec, _build_stage(st.spec, st.op.params, output)) for st in self.stages]
        return replace(self, stages=stages, output=output)


def _build_stage(spec: StageConfig, params: BaseModel, output: Path | None) -> Operator:
    from operators.registry import get_operator

    artifacts = str(output / "artifacts" / spec.stage_name) if output is not None else None
    ctx = StageContext(spec.stage_name, spec.resources.batch_size, artifacts)
    return get_operator(spec.op)(params, ctx)


def _scheme_problem(scheme: str) -> str | None:
    """Why a URL scheme cannot be allowed (unknown to fsspec, or its filesystem is not installed)."""
    import fsspec

    name = scheme.lower().rstrip(":/")
    try:
        fsspec.get_filesystem_class(name)
    except ValueError:
        return f"unknown URL scheme '{scheme}' (fsspec knows: {', '.join(sorted(fsspec.available_protocols())[:40])}, ...)"
    except ImportError as e:
        return f"URL scheme '{scheme}' needs a package that is not installed: {e}"
    return None


def load_pipeline(path: str | Path, overrides: list[str] | None = None, *, output: str | Path | None = None) -> LoadedPipeline:
    """Parse, override, validate (including every reader's and operator's params), and build
    each reader and operator once. With ``output`` (a run is about to start), the operators know
    their artifact folders, and an enabled source with nothing to read is a ConfigError on its
    ``path`` (unless it sets ``allow_empty``)."""
    from operators.registry import get_operator, get_reader

    data, doc = load_document(path, overrides)
    file, overridden = doc.file, doc.overridden
    cfg = validate_document(PipelineConfig, data, doc)
    out = Path(output).resolve() if output is not None else None

    sources: list[PlannedSource] = []
    for i, src in enumerate(cfg.sources):
        try:
            reader = get_reader(src.reader)
        except KeyError as e:
            raise doc.error(("sources", i, "reader"), e.args[0]) from None
        params = validate_document(reader.Params, src.params, doc, ("sources", i, "params"))
        base = Path.cwd() if ("sources", i, "path") in overridden else file.parent
        if "://" not in src.path:
            src.path = os.path.normpath(base / os.path.expanduser(src.path))
        roots = [os.path.normpath(file.parent / os.path.expanduser(r)) for r in src.allow_roots]
        for j, scheme in enumerate(src.allow_schemes):
            problem = _scheme_problem(scheme)
            if problem:
                raise doc.error(("sources", i, "allow_schemes", j), problem)
        built = reader(
            source=src.name, path=src.path, license=src.license, params=params, units_per_file=cfg.ray.units_per_file,
            allow_roots=roots, allow_schemes=src.allow_schemes, allow_empty=src.allow_empty,
        )  # fmt: skip
        if out is not None and src.enabled:  # a run is about to start: refuse a source with nothing to read now
            try:
                next(iter(built.plan_checked()), None)
            except EmptySourceError as e:
                raise doc.error(("sources", i, "path"), str(e)) from None
            except (OSError, ValueError):
                pass  # a path that names nothing: the engine's plan says so, with how to point it elsewhere
        sources.append(PlannedSource(src, built))

    stages: list[PlannedStage] = []
    for i, st in enumerate(cfg.stages):
        try:
            cls = get_operator(st.op)
        except KeyError as e:
            raise doc.error(("stages", i, "op"), e.args[0]) from None
        params = validate_document(cls.Params, st.params, doc, ("stages", i, "params"))
        try:
            cls.check_requirements()
            op = _build_stage(st, params, out)
            op.validate_setup()
        except Exception as e:  # noqa: BLE001 - any setup failure is a config error
            raise doc.error(("stages", i), str(e)) from None
        stages.append(PlannedStage(st, op))
    return LoadedPipeline(cfg, file, sources, stages, out)
