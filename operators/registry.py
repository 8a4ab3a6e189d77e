"""Typed registries: YAML refers to operators and readers by these names."""

from __future__ import annotations

import difflib
from typing import TypeVar

from operators.base import Operator, Reader

__all__ = [
    "BUILTIN_MODULES",
    "OPERATORS",
    "READERS",
    "get_operator",
    "get_reader",
    "load_builtins",
    "register_operator",
    "register_reader",
]

#: the modules that define the built-in readers and operators (importing one registers its classes)
BUILTIN_MODULES: tuple[str, ...] = (
    "operators.ingest.folders",
    "operators.ingest.manifests",
    "operators.ingest.webdataset_tar",
    "operators.ingest.html_docs",
    "operators.probe",
    "operators.dedup.exact",
    "operators.dedup.image_phash",
    "operators.dedup.video",
    "operators.dedup.audio",
    "operators.dedup.text_minhash",
    "operators.dedup.semantic",
    "operators.filter",
    "operators.route",
    "operators.image.quality",
    "operators.image.transform",
    "operators.video.frames",
    "operators.video.quality",
    "operators.video.shots",
    "operators.audio.quality",
    "operators.audio.transcode",
    "operators.audio.vad",
    "operators.text.clean",
    "operators.text.quality",
    "operators.text.interleaved",
    "operators.clip.score",
    "operators.clip.tags",
    "operators.clip.aesthetic",
    "operators.text.caption_rewrite",
)

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
    load_builtins()
    if name not in OPERATORS:
        raise _unknown("operator", name, OPERATORS)
    return OPERATORS[name]


def get_reader(name: str) -> type[Reader]:
    load_builtins()
    if name not in READERS:
        raise _unknown("reader", name, READERS)
    return READERS[name]


_loaded = False


def load_builtins() -> None:
    """Import every module of ``BUILTIN_MODULES`` once (heavy libraries stay lazy inside them)."""
    global _loaded
    if _loaded:
        return
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    _loaded = True
