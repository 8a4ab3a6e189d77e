"""Config files as users write them: YAML with every key's line remembered, ``--set`` overrides,
and errors that name the file, the line, the key and what was expected (pipelines and mixtures
alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

__all__ = ["ConfigDoc", "ConfigError", "apply_overrides", "load_document", "load_yaml", "pydantic_errors", "validate_document"]


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
class ConfigDoc:
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


def pydantic_errors(doc: ConfigDoc, err: ValidationError, prefix: tuple) -> ConfigError:
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


def load_document(path: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], ConfigDoc]:
    """A config file's data with ``overrides`` applied, and the document that places errors."""
    file = Path(path).resolve()
    data, lines = load_yaml(file)
    overridden = apply_overrides(data, overrides or [], file)
    return data, ConfigDoc(file, lines, overridden)


def validate_document(model: type[M], data: Any, doc: ConfigDoc, prefix: tuple = ()) -> M:
    """``model.model_validate(data)``; a validation error becomes a ConfigError naming each key."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise pydantic_errors(doc, e, prefix) from None
