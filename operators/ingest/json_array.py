"""JSON array manifests (``[{...}, {...}]``, compact or pretty-printed) read element by element.

Many corpora ship one JSON array instead of JSON Lines (LLaVA's instruction mixes, most
annotation dumps). Read line by line, such a file is one bad row per line; here each element of
the array is one row, and memory holds one element and one read chunk, never the whole file.

- ``is_json_array(path)``: the file's first non-blank byte is ``[`` (and it is not JSON Lines
  whose first line happens to be an array).
- ``iter_elements(f, start, end)``: ``(byte offset, value)`` of each top-level element whose first
  byte lies in ``[start, end)``; ``start`` is 0 (the array's start) or the offset of an element.
  Raises ``ArrayError`` (with the byte offset) where the file stops being a readable array: an
  element that is not valid JSON, larger than ``ELEMENT_CAP``, or data after the closing ``]``.
  A valid JSON array cannot be re-synchronised after a syntax error, so the caller reports the
  rest of the file from that offset as one bad input.
- ``split_points(path, step)``: offsets of elements about ``step`` bytes apart, from one pass over
  the file (a plan step of a reader, so that a large array is several units of work).

Bytes that are not UTF-8 are decoded with ``surrogateescape``: the element still parses, and the
invalid text is caught later as for any manifest (``invalid_text``). Offsets are exact bytes.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["CHUNK", "ELEMENT_CAP", "ArrayError", "is_json_array", "iter_elements", "split_points"]

log = logging.getLogger(__name__)

#: bytes read at a time
CHUNK = 1 << 20
#: an element larger than this (or one whose JSON never closes) stops the read
ELEMENT_CAP = 64 << 20
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\r\n]*")
_PROBE = 64 << 10
_FIRST_LINE_CAP = 1 << 20
#: a parse error this close to the end of the text read so far may be a token cut by the chunk
_TAIL = 32


class ArrayError(ValueError):
    """The file stops being a readable JSON array at byte ``offset``."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def is_json_array(path: str) -> bool:
    """Whether ``path`` holds one JSON array rather than JSON Lines.

    True when the first non-blank byte (after a UTF-8 BOM) is ``[``, unless the first line is a
    complete JSON value by itself and more lines follow (JSON Lines whose first row is a list).
    """
    with open(path, "rb") as f:
        head = f.read(_PROBE)
        stripped = head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
        if not stripped.startswith(b"["):
            return False
        f.seek(len(head) - len(stripped))
        line = f.readline(_FIRST_LINE_CAP)
        if not line.endswith(b"\n"):
            return True  # one line (a compact array) or a very long first line
        try:
            json.loads(line)
        except (ValueError, RecursionError):
            return True  # the array goes on over the next lines (pretty-printed)
        rest = f.read(_PROBE)
        return not rest.strip()


class _Stream:
    """A text buffer over a binary file that knows the byte offset of its read position."""

    def __init__(self, f: IO[bytes], start: int) -> None:
        f.seek(start)
        self.f = f
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.i = 0  # read position in buf
        self.pos = start  # byte offset of buf[i]
        self.eof = False

    def fill(self) -> bool:
        """Read more (at least as much again as is pending, so a large element costs O(n log n))."""
        if self.eof:
            return False
        data = self.f.read(max(CHUNK, len(self.buf) - self.i))
        text = self.decoder.decode(data, final=not data)
        self.eof = not data
        self.buf = self.buf[self.i :] + text
        self.i = 0
        return bool(text) or not self.eof

    def advance(self, j: int) -> None:
        self.pos += len(self.buf[self.i : j].encode("utf-8", "surrogateescape"))
        self.i = j

    def byte_at(self, j: int) -> int:
        """Byte offset of buf[j] (j >= i)."""
        return self.pos + len(self.buf[self.i : j].encode("utf-8", "surrogateescape"))

    def peek(self) -> str | None:
        """The next non-blank character (the position moved onto it), or None at the end of the file."""
        while True:
            j = _WS.match(self.buf, self.i).end()
            self.advance(j)
            if j < len(self.buf):
                return self.buf[j]
            if not self.fill():
                return None

    def value(self) -> Any:
        """Parse the JSON value at the position (after ``peek``) and move past it."""
        start = self.pos
        while True:
            try:
                obj, j = _DECODER.raw_decode(self.buf, self.i)
            except json.JSONDecodeError as e:
                # more text may complete it: an error at the very end, or a string still open
                incomplete = not self.eof and (e.pos >= len(self.buf) - _TAIL or e.msg.startswith("Unterminated"))
                if incomplete and len(self.buf) - self.i <= ELEMENT_CAP:
                    self.fill()
                    continue
                if incomplete:
                    raise ArrayError(start, f"the element at byte {start} is larger than {ELEMENT_CAP >> 20} MiB "
                                     "(or a string in it never closes)") from None  # fmt: skip
                raise ArrayError(start, f"invalid JSON in the element at byte {start}: {e.msg} "
                                 f"(at byte {self.byte_at(e.pos)})") from None  # fmt: skip
            except RecursionError:
                raise ArrayError(start, f"the element at byte {start} nests too deep") from None
            if j > len(self.buf) - _TAIL and not self.eof:
                self.fill()  # a number cut by the chunk ("12" of "12.5e3") parses: again with more text
                continue
            self.advance(j)
            return obj


def iter_elements(f: IO[bytes], start: int = 0, end: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(byte offset, value)`` of the array's elements that begin in ``[start, end)``.

    ``start`` is 0 or the offset of an element (as ``split_points`` gives). Raises ``ArrayError``.
    """
    s = _Stream(f, start)
    if start == 0:
        c = s.peek()
        if c == "\ufeff":  # a UTF-8 byte order mark
            s.advance(s.i + 1)
            c = s.peek()
        if c != "[":
            raise ArrayError(
                s.pos, "expected a JSON array ('[') at the start of the file" if c else "the file is empty"
            )
        s.advance(s.i + 1)
        if s.peek() == "]":
            _close(s)
            return
    while True:
        c = s.peek()
        if c is None:
            raise ArrayError(s.pos, "the file ends where an element was expected (truncated?)")
        if end is not None and s.pos >= end:
            return
        offset = s.pos
        yield offset, s.value()
        c = s.peek()
        if c == ",":
            s.advance(s.i + 1)
            if s.peek() == "]":  # a trailing comma: tolerated
                _close(s)
                return
            continue
        if c == "]":
            _close(s)
            return
        if c is None:
            log.warning("JSON array ends after the element at byte %d without its closing ']' (truncated?)", offset)
            return
        raise ArrayError(s.pos, f"expected ',' or ']' after the element at byte {offset}, found {c!r} at byte {s.pos}")


def _close(s: _Stream) -> None:
    s.advance(s.i + 1)
    if s.peek() is not None:
        raise ArrayError(s.pos, f"data after the end of the JSON array, at byte {s.pos}")


def split_points(path: str, step: int) -> list[int]:
    """Unit starts for an array file: 0, then the offset of the first element at least ``step``
    bytes after the previous start. Stops early (the last unit takes the rest) where the file
    stops being readable: the reader reports that place."""
    starts = [0]
    with open(path, "rb") as f:
        try:
            for offset, _ in iter_elements(f):
                if offset - starts[-1] >= step:
                    starts.append(offset)
        except ArrayError:
            pass
    return starts
