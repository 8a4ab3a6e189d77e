"""Every registered operator and reader. Importing this package registers the built-ins."""

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
    Unit,
)
from operators.registry import OPERATORS, READERS, get_operator, get_reader, register_operator, register_reader


def _register_builtins() -> None:
    """Import every module and sub-package here: their decorators register the built-ins."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_builtins()

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
    "Unit",
    "get_operator",
    "get_reader",
    "register_operator",
    "register_reader",
]
