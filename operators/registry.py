"""Typed registries: YAML refers to operators and readers by these names."""

from __future__ import annotations

import difflib
from typing import TypeVar

from operators.base import Operator, Reader

__all__ = ["OPERATORS", "READERS", "get_operator", "get_reader", "register_operator", "register_reader"]

OPERATORS: dict[str, type[Operator]] = {}
READERS: dict[str, type[Reader]] = {}

OpT = TypeVar("OpT", bound=type[Operator])
ReaderT = TypeVar("ReaderT", bound=type[Reader])


def register_operator(cls: OpT) -> OpT:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in OPERATORS and OPERATORS[cls.name] is not cls:
        raise ValueError(f"operator name '{cls.name}' is already registered by {OPERATORS[cls.name].__name__}")
    OPERATORS[cls.name] = cls
    return cls


def register_reader(cls: ReaderT) -> ReaderT:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in READERS and READERS[cls.name] is not cls:
        raise ValueError(f"reader name '{cls.name}' is already registered by {READERS[cls.name].__name__}")
    READERS[cls.name] = cls
    return cls


def _unknown(kind: str, name: str, known: dict) -> KeyError:
    hint = difflib.get_close_matches(name, list(known), n=1)
    more = f"; did you mean '{hint[0]}'?" if hint else ""
    return KeyError(f"unknown {kind} '{name}'{more} (registered: {', '.join(sorted(known))})")


def get_operator(name: str) -> type[Operator]:
    _load_builtins()
    if name not in OPERATORS:
        raise _unknown("operator", name, OPERATORS)
    return OPERATORS[name]


def get_reader(name: str) -> type[Reader]:
    _load_builtins()
    if name not in READERS:
        raise _unknown("reader", name, READERS)
    return READERS[name]


def _load_builtins() -> None:
    import operators  # noqa: F401  (importing the package registers the built-ins)
