"""Every registered operator and reader. Importing this package registers the built-ins."""

from operators import dedup_exact, filter, ingest, probe, route  # noqa: F401  (registers the built-ins)
from operators.base import BatchOperator, Operator, OperatorError, Params, Reader, RowOperator, SkipSample, Unit
from operators.registry import OPERATORS, READERS, get_operator, get_reader, register_operator, register_reader

__all__ = [
    "OPERATORS",
    "READERS",
    "BatchOperator",
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
