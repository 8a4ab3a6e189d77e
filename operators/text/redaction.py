"""Keep credentials out of messages, logs and records: URLs with their secrets masked, error
bodies with the API key and any echoed ``Authorization`` header removed, and short.

- ``redact_url(url)``: ``user:password@`` becomes ``***@``, every query value ``***``;
- ``url_secrets(url)``: the secret parts of a URL (user info and query values), for a ``Redactor``;
- ``Redactor(secrets)``: a callable that masks each secret (and bearer tokens, ``Authorization`` /
  ``api-key`` headers, URLs) in a text and cuts it to ``limit`` characters; its repr shows no secret;
- ``is_loopback_host(host)``: ``localhost`` or a loopback address (no DNS lookup).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["MASK", "Redactor", "is_loopback_host", "redact_url", "url_secrets"]

MASK = "***"
#: secrets shorter than this are not searched for in texts (they would mask ordinary words)
MIN_SECRET_CHARS = 4

_HEADER_RE = re.compile(
    r"""(?ix)
    (["']?)\b(?:proxy-)?authorization\1          # the header's name, maybe quoted (JSON, a dict's repr)
    \s*[:=]\s*
    (?:"[^"]*"|'[^']*'|[^\r\n,;}\]]*)            # its value: quoted, or up to the end of the line / item
    """
)
_KEY_HEADER_RE = re.compile(
    r"""(?ix)
    ((["']?)\b(?:x-)?(?:api[-_]?key|access[-_]?token)\2\s*[:=]\s*)
    (?:"[^"]*"|'[^']*'|[^\s,;}\]]*)
    """
)
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_RE = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+")


def _netloc(parts) -> str:  # noqa: ANN001 - a SplitResult
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: keep nothing of it
        port = None
    return host + (f":{port}" if port else "")


def redact_url(url: str) -> str:
    """``url`` with its user info and query values masked (and its fragment dropped)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{_netloc(parts)}"
    query = "&".join(f"{k}={MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True)) if parts.query else ""
    if parts.query and not query:
        query = MASK
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be secret: the user name, the password, the query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    out = [x for x in (parts.username, parts.password) if x]
    out += [v for _, v in parse_qsl(parts.query, keep_blank_values=True) if v]
    return out


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` (or a name under ``.localhost``) or a loopback IP address."""
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Redactor:
    """Masks secrets in texts: ``redact(text)`` (cut to ``limit`` characters, on one line)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
        self._secrets = tuple(sorted(found, key=len, reverse=True))  # longest first: no partial leftovers

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"

    def contains_secret(self, text: str) -> bool:
        return any(s in text for s in self._secrets)

    def __call__(self, text: str, limit: int | None = 300) -> str:
        for s in self._secrets:
            text = text.replace(s, MASK)
        text = _HEADER_RE.sub("[authorization removed]", text)
        text = _KEY_HEADER_RE.sub(lambda m: m.group(1) + MASK, text)
        text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
        text = _URL_RE.sub(lambda m: redact_url(m.group()), text)
        text = " ".join(text.split())
        if limit is not None and len(text) > limit:
            text = text[: max(0, limit - 3)] + "..."
        return text
