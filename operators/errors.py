"""The error policy every operator and reader shares, written once.

- ``FATAL_ERRORS`` and ``OperatorError`` stop the run: the environment is broken, not a sample.
- ``SkipSample(reason, detail)``: this row's input is broken; the row is quarantined with that
  reason code (a structured field end to end, never parsed back from a message).
- Any other exception while handling one row quarantines that row as ``operator_error``.
- ``media_failure(e)`` is the one mapping from an error met while opening or decoding media to
  its reason: ``missing_file``, ``unreadable`` (cannot be opened) or ``corrupt_media`` (opened,
  not decodable). ``media_errors()`` applies it to a block of code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from operators.media_io import MediaMissing, MediaUnavailable
from schemas.enums import ReasonCode

__all__ = ["FATAL_ERRORS", "OperatorError", "SkipSample", "media_errors", "media_failure"]

#: Errors that always stop the run: the environment is broken, not the sample.
FATAL_ERRORS: tuple[type[BaseException], ...] = (MemoryError, ImportError, KeyboardInterrupt, SystemExit)


class OperatorError(Exception):
    """A fatal error: the operator cannot work at all (bad weights, missing dependency)."""


class SkipSample(Exception):
    """Raised by an operator for one row whose input is broken: the row is quarantined."""

    def __init__(self, reason: ReasonCode | str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = str(reason)
        self.detail = detail


def media_failure(e: BaseException, where: str | None = None) -> SkipSample:
    """The reason an error met while opening or decoding media quarantines its row.

    ``where`` (a media reference) prefixes the detail when the message does not name the file.
    """
    if isinstance(e, SkipSample):
        return e
    if isinstance(e, MediaUnavailable | FileNotFoundError):
        missing = isinstance(e, MediaMissing | FileNotFoundError) or isinstance(e.__cause__, FileNotFoundError)
        reason = ReasonCode.MISSING_FILE if missing else ReasonCode.UNREADABLE
        return SkipSample(reason, f"{where}: {e}" if where else str(e))
    detail = f"{type(e).__name__}: {e}"
    return SkipSample(ReasonCode.CORRUPT_MEDIA, f"{where}: {detail}" if where else detail)


@contextmanager
def media_errors(where: str | None = None) -> Iterator[None]:
    """Turn any non-fatal error of the block into ``media_failure(e, where)``."""
    try:
        yield
    except FATAL_ERRORS:
        raise
    except (OperatorError, SkipSample):
        raise
    except Exception as e:  # noqa: BLE001 - every per-file failure gets a reason
        raise media_failure(e, where) from e
