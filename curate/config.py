"""Load a pipeline YAML into a validated plan. Every error names the file, the key, the line
and what was expected, and is raised before any work starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from schemas.config import PipelineConfig

__all__ = ["ConfigError", "LoadedPipeline", "apply_overrides", "load_pipeline", "load_yaml"]


class ConfigError(ValueError):
    """A config that cannot run. The message is meant for the user, as is."""


def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map every key path of a YAML document to its 1-based line."""
    out: dict[tuple, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = (*prefix, k.value)
            out[path] = k.start_mark.line + 1
            out.update({p: ln for p, ln in _key_lines(v, path).items() if p != path})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_key_lines(v, (*prefix, i)))
    return out


def _fmt_key(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s or "(top level)"


@dataclass
class _Doc:
    file: Path
    lines: dict[tuple, int]
    overridden: set[tuple]

    def error(self, path: tuple, message: str) -> ConfigError:
        path = tuple(p for p in path if p != "__root__")
        where = str(self.file)
        if path in self.overridden or any(path[: len(o)] == o for o in self.overridden):
            where += " (value from --set)"
        else:
            probe = path
            while probe and probe not in self.lines:
                probe = probe[:-1]
            if probe in self.lines:
                where += f":{self.lines[probe]}"
        return ConfigError(f"{where}: {_fmt_key(path)}: {message}")


def load_yaml(path: str | Path) -> tuple[dict[str, Any], dict[tuple, int]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    text = p.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{line}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data, (_key_lines(node) if node is not None else {})


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str], file: Path | str = "config") -> set[tuple]:
    """Apply ``dotted.key=value`` overrides in place. A list item is addressed by index or by
    its ``name`` (``sources.photos.path=/data/photos``). Returns the key paths overridden."""
    done: set[tuple] = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        dotted, raw = item.split("=", 1)
        parts = [p for p in dotted.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node: Any = data
        path: list[Any] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                idx = _list_index(node, part)
                if idx is None:
                    names = [x.get("name") for x in node if isinstance(x, dict)]
                    raise ConfigError(f"{file}: --set {dotted}: no item '{part}' in {_fmt_key(tuple(path))} (items: {names})")
                path.append(idx)
                if last:
                    node[idx] = _parse_value(raw)
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                path.append(part)
                if last:
                    node[part] = _parse_value(raw)
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"{file}: --set {dotted}: {_fmt_key(tuple(path))} is a {type(node).__name__}, not a mapping")
        done.add(tuple(path))
    return done


def _list_index(node: list, part: str) -> int | None:
    if part.lstrip("-").isdigit():
        idx = int(part)
        return idx if -len(node) <= idx < len(node) else None
    for i, x in enumerate(node):
        if isinstance(x, dict) and (x.get("name") == part or (x.get("name") is None and x.get("op") == part)):
            return i
    return None


def _pydantic_errors(doc: _Doc, err: ValidationError, prefix: tuple) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        if "input" in e and e["type"] not in ("missing", "extra_forbidden") and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        lines.append(str(doc.error((*prefix, *loc), msg)))
    return ConfigError("\n".join(lines))


@dataclass
class LoadedPipeline:
    config: PipelineConfig
    file: Path
    source_params: list[BaseModel]
    stage_params: list[BaseModel]


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> LoadedPipeline:
    """Parse, override, validate (including every reader's and operator's params)."""
    from operators.registry import get_operator, get_reader

    file = Path(path).resolve()
    data, lines = load_yaml(file)
    overridden = apply_overrides(data, overrides or [], file)
    doc = _Doc(file, lines, overridden)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise _pydantic_errors(doc, e, ()) from None

    source_params: list[BaseModel] = []
    for i, src in enumerate(cfg.sources):
        try:
            reader = get_reader(src.reader)
        except KeyError as e:
            raise doc.error(("sources", i, "reader"), e.args[0]) from None
        try:
            source_params.append(reader.Params.model_validate(src.params))
        except ValidationError as e:
            raise _pydantic_errors(doc, e, ("sources", i, "params")) from None
        base = Path.cwd() if ("sources", i, "path") in overridden else file.parent
        if "://" not in src.path:
            src.path = os.path.normpath(base / os.path.expanduser(src.path))

    stage_params: list[BaseModel] = []
    for i, st in enumerate(cfg.stages):
        try:
            op = get_operator(st.op)
        except KeyError as e:
            raise doc.error(("stages", i, "op"), e.args[0]) from None
        try:
            stage_params.append(op.Params.model_validate(st.params))
        except ValidationError as e:
            raise _pydantic_errors(doc, e, ("stages", i, "params")) from None
        try:
            op.check_requirements()
            op(stage_params[-1], stage=st.stage_name).validate_setup()
        except Exception as e:  # noqa: BLE001 - any setup failure is a config error
            raise doc.error(("stages", i), str(e)) from None
    return LoadedPipeline(cfg, file, source_params, stage_params)


def load_mixture(path: str | Path, overrides: list[str] | None = None):
    """Parse and validate a mixture YAML, with the same file:line: key errors as pipelines."""
    from mixtures.config import MixtureConfig

    file = Path(path).resolve()
    data, lines = load_yaml(file)
    overridden = apply_overrides(data, overrides or [], file)
    doc = _Doc(file, lines, overridden)
    try:
        return MixtureConfig.model_validate(data)
    except ValidationError as e:
        raise _pydantic_errors(doc, e, ()) from None
