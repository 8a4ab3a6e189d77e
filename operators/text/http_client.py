"""The HTTP transport of the LLM backends: the standard library's ``http.client``, with what
``urllib`` does not give:

- a deadline for the whole request: ``timeout_s`` covers connecting, sending, the status line,
  the headers and the whole body, however slowly the server trickles them (a watchdog timer shuts
  the socket down when the deadline passes; urllib's timeout applies to each socket read);
- no credentials across origins: a redirect to another origin (scheme, host, port) is never
  followed, so the ``Authorization`` header goes only where ``base_url`` points; same-origin
  redirects are followed (307/308 for a POST, which keep its body; any for a GET), at most
  ``max_redirects``;
- bounded replies: a body over ``max_bytes`` is an error, not a memory blow-up.

``request(...)`` returns a ``Reply`` whatever its status (the caller decides what a 4xx or 5xx
means); it raises ``RequestTimeout``, ``RedirectRefused``, ``ReplyTooLarge``, or an ``OSError`` /
``http.client.HTTPException`` of the connection. Messages name URLs redacted (``redact_url``).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from operators.text.redaction import redact_url

__all__ = ["RedirectRefused", "Reply", "ReplyTooLarge", "RequestTimeout", "origin", "request"]

_REDIRECTS = {301, 302, 303, 307, 308}
_DEFAULT_PORT = {"http": 80, "https": 443}


class RequestTimeout(TimeoutError):
    """The whole request did not finish within its deadline."""


class RedirectRefused(Exception):
    """A redirect that is not followed (another origin, a POST turned into a GET, too many)."""


class ReplyTooLarge(Exception):
    """The reply's body is over the limit."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  #: lower-case names
    body: bytes
    url: str  #: the URL that answered (after same-origin redirects)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, lower-case, with the scheme's default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORT.get(scheme, 0)
    except ValueError:  # not a number: an origin of its own
        port = -1
    return scheme, (parts.hostname or "").lower(), port


@functools.cache
def _default_context() -> ssl.SSLContext:
    """One verifying TLS context for the process (loading the CA store each request costs)."""
    return ssl.create_default_context()


class _Deadline:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired_error(self, url: str) -> RequestTimeout:
        return RequestTimeout(f"{redact_url(url)}: no complete reply within {self.timeout_s:g} s")


class _Watchdog:
    """Shuts a connection's socket down at the deadline, waking any blocked read or write."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self.fired = False
        self.done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            sock = self.conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # the raw shutdown, under SSL too: a blocked recv returns
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def finish(self) -> bool:
        """Stop the watchdog; True when it fired first (the request is then a timeout)."""
        self._timer.cancel()
        with self._lock:
            self.done = True
            return self.fired


def _once(method: str, url: str, body: bytes | None, headers: dict[str, str], deadline: _Deadline,
          max_bytes: int, context: ssl.SSLContext | None) -> Reply:  # fmt: skip
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or not parts.hostname:
        raise ValueError(f"{redact_url(url)}: not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{redact_url(url)}: the port is not a number") from None
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.expired_error(url)
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=remaining, context=context or _default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=remaining)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    dog = _Watchdog(conn, remaining)
    try:
        conn.connect()
        if dog.fired:
            raise deadline.expired_error(url)
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ReplyTooLarge(f"{redact_url(url)}: the reply is over {max_bytes} bytes")
            chunks.append(chunk)
            if deadline.remaining() <= 0:
                raise deadline.expired_error(url)
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks), url)
    except (OSError, http.client.HTTPException, ValueError) as e:
        if dog.finish():
            raise deadline.expired_error(url) from None
        if isinstance(e, TimeoutError):
            raise deadline.expired_error(url) from None
        raise
    finally:
        fired = dog.finish()
        conn.close()
    if fired:  # the body may be cut short: a read that ended because the watchdog shut the socket
        raise deadline.expired_error(url)
    return reply


def request(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout_s: float, max_bytes: int = 16 << 20, max_redirects: int = 3,
            context: ssl.SSLContext | None = None) -> Reply:  # fmt: skip
    """One HTTP request with a deadline of ``timeout_s`` for everything (redirects included)."""
    deadline = _Deadline(timeout_s)
    method = method.upper()
    for _ in range(max_redirects + 1):
        reply = _once(method, url, body, dict(headers or {}), deadline, max_bytes, context)
        location = reply.headers.get("location")
        if reply.status not in _REDIRECTS or not location:
            return reply
        target = urljoin(url, location)
        if origin(target) != origin(url):
            raise RedirectRefused(
                f"{redact_url(url)} redirects (HTTP {reply.status}) to another origin, {redact_url(target)}: not followed "
                f"(credentials are never sent there); point base_url at the server that answers"
            )
        if method != "GET" and reply.status not in (307, 308):
            raise RedirectRefused(
                f"{redact_url(url)} redirects (HTTP {reply.status}) to {redact_url(target)}, which would turn the "
                f"{method} into a GET: not followed; point base_url at the server that answers"
            )
        url = target
    raise RedirectRefused(f"{redact_url(url)}: more than {max_redirects} redirects")
