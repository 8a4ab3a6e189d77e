"""Operators and readers: the bases, the registry. ``operators.registry.load_builtins()`` (called by
``get_operator`` / ``get_reader``) imports the built-in modules listed in ``BUILTIN_MODULES``."""

from operators.base import (
    BatchOperator,
    ExpandOperator,
    GlobalOperator,
    Operator,
    OperatorError,
    Params,
    Reader,
    RowOperator,
    SkipSample,
    StageContext,
    Unit,
)
from operators.registry import (
    OPERATORS,
    READERS,
    get_operator,
    get_reader,
    load_builtins,
    register_operator,
    register_reader,
)

__all__ = [
    "OPERATORS",
    "READERS",
    "BatchOperator",
    "ExpandOperator",
    "GlobalOperator",
    "Operator",
    "OperatorError",
    "Params",
    "Reader",
    "RowOperator",
    "SkipSample",
    "StageContext",
    "Unit",
    "get_operator",
    "get_reader",
    "load_builtins",
    "register_operator",
    "register_reader",
]
