"""The LLM client against hostile servers, all real and on 127.0.0.1 (http.server in a thread):
a reply trickled a byte at a time (the whole request has a deadline), a redirect to another port
(the key never follows it), error bodies that echo the request's headers (the key is in no meta
and no log), malformed replies (an ``llm_error`` of that prompt, the row kept with its original),
content-parts replies (read as the API defines them), and keys kept out of reprs and messages."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_caption_rewrite import _pipe, free_port, meta, rows_of

from curate.config import ConfigError, load_pipeline
from operators.base import OperatorError
from operators.text.caption_rewrite import CaptionRewrite
from operators.text.llm_backends import LLMError, OpenAIHttpBackend, parse_reply
from operators.text.redaction import Redactor, redact_url

KEY = "sk-test-" + uuid.uuid4().hex  # a key no server should ever see twice
KEY_ENV = "NMM_TEST_LLM_KEY"
TIMEOUT = 0.8  # the tests' per-attempt deadline (seconds)


class Server:
    """A server on 127.0.0.1 whose every request is answered by ``respond(handler, body)``;
    ``seen`` records (method, path, lower-cased headers) of each request."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler, bytes], None]) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.stop = threading.Event()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                srv.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    respond(self, body)

            do_GET = do_POST = _any

        class _Threading(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self.server = _Threading(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def serve():
    servers: list[Server] = []

    def start(respond):
        servers.append(Server(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def send(h: BaseHTTPRequestHandler, code: int, body: bytes | str | object, headers: dict | None = None) -> None:
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def original(prompt: str) -> str:
    return prompt.rsplit("Original:", 1)[-1].split("\n", 1)[0].strip()


def good_reply(h: BaseHTTPRequestHandler, body: bytes) -> None:
    """A correct answer, for either API: the original, capitalised, with a full stop."""
    if h.command == "GET":
        return send(h, 200, {"object": "list", "data": [{"id": "m"}]})
    req = json.loads(body)
    if h.path.endswith("/chat/completions"):
        text = original(req["messages"][-1]["content"]).capitalize() + "."
        return send(h, 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
    prompts = req["prompt"] if isinstance(req["prompt"], list) else [req["prompt"]]
    send(h, 200, {"choices": [{"index": i, "text": original(p).capitalize() + "."} for i, p in enumerate(prompts)]})


def op_for(url: str, tmp_path, **kw) -> CaptionRewrite:
    params = {"backend": "http", "base_url": url, "model": "m", "cache": False, "backoff_s": 0.01,
              "timeout_s": TIMEOUT, "max_retries": 0, "check_server": False, "check_language": False, **kw}  # fmt: skip
    return CaptionRewrite(params)


def rejected(row) -> str | None:
    return (meta(row).get("rewrite_rejected") or {}).get("caption")


# ----------------------------------------------------------------------------- 11: a deadline per request


def _trickle(server_ref: list[Server], part: str):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
    body = b'{"choices": [{"index": 0, "text": "' + b"x" * 3900 + b'"}]}'

    def respond(h: BaseHTTPRequestHandler, _body: bytes) -> None:
        slow = head + body if part == "headers" else body
        if part == "body":
            h.wfile.write(head)
        for i in range(len(slow)):  # one byte every 50 ms: each read is quick, the reply takes minutes
            if server_ref[0].stop.is_set():
                return
            h.wfile.write(slow[i : i + 1])
            h.wfile.flush()
            time.sleep(0.05)

    return respond


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_trickled_reply_fails_at_the_deadline(serve, part):
    ref: list[Server] = []
    ref.append(serve(_trickle(ref, part)))
    backend = OpenAIHttpBackend(ref[0].url, "m", timeout_s=TIMEOUT, max_retries=0)
    t = time.monotonic()
    (out,) = backend.generate(["Original: a cat\nRewritten:"])
    took = time.monotonic() - t
    assert isinstance(out, LLMError) and "within" in str(out)
    assert took < 3 * TIMEOUT  # loosely: the deadline holds, whatever each read does
    t = time.monotonic()
    with pytest.raises(LLMError, match="within"):  # the check at validation has one too
        backend.check(timeout_s=TIMEOUT)
    assert time.monotonic() - t < 3 * TIMEOUT


def test_a_trickling_server_costs_the_rows_nothing_but_their_rewrite(serve, tmp_path):
    ref: list[Server] = []
    ref.append(serve(_trickle(ref, "body")))
    op = op_for(ref[0].url, tmp_path, on_all_failed="keep_originals")
    rows = rows_of(["two dogs running on Brighton beach"])
    t = time.monotonic()
    op.run_rows(rows)
    assert time.monotonic() - t < 3 * TIMEOUT
    assert rows[0]["status"] == "kept" and rows[0]["caption"] == "two dogs running on Brighton beach"
    assert rejected(rows[0]) == "llm_error" and "within" in meta(rows[0])["rejected_caption"]


# ----------------------------------------------------------------------------- 12: the key stays home


def test_the_key_never_follows_a_redirect_to_another_origin(serve, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    other = serve(good_reply)  # answers correctly: if the client went there, the rewrite would pass

    def redirect(h, _body):
        h.send_response(302)
        h.send_header("Location", f"http://127.0.0.1:{other.port}{h.path}")
        h.send_header("Content-Length", "0")
        h.end_headers()

    first = serve(redirect)
    op = op_for(first.url, tmp_path, api_key_env=KEY_ENV, check_server=True, on_all_failed="keep_originals")
    with pytest.raises(OperatorError, match="another origin") as e:
        op.validate_setup()  # GET /models: 302 to another port
    assert KEY not in str(e.value)
    rows = rows_of(["two dogs running on Brighton beach"])
    op.run_rows(rows)  # POST: 302 to another port
    assert rejected(rows[0]) == "llm_error" and "another origin" in meta(rows[0])["rejected_caption"]
    assert rows[0]["caption"] == "two dogs running on Brighton beach"
    assert other.seen == []  # nothing at all went there, so no Authorization either
    assert [h.get("authorization") for _, _, h in first.seen] == [f"Bearer {KEY}"] * 2  # only to base_url


def test_a_redirect_within_the_origin_is_followed(serve, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def respond(h, body):
        if h.path.startswith("/v1/"):
            h.send_response(307)
            h.send_header("Location", h.path.replace("/v1/", "/v2/"))
            h.send_header("Content-Length", "0")
            return h.end_headers()
        good_reply(h, body)

    srv = serve(respond)
    op = op_for(srv.url, tmp_path, api_key_env=KEY_ENV)
    rows = rows_of(["two dogs running on Brighton beach"])
    op.run_rows(rows)
    assert rows[0]["caption"] == "Two dogs running on brighton beach." and rows[0]["scores"]["rewrite_accepted"] == 1.0
    assert [p for _, p, _ in srv.seen] == ["/v1/completions", "/v2/completions"]
    assert all(h["authorization"] == f"Bearer {KEY}" for _, _, h in srv.seen)


@pytest.mark.parametrize("code", [400, 503])
def test_an_error_body_echoing_the_key_is_stored_and_logged_redacted(serve, tmp_path, monkeypatch, caplog, code):
    monkeypatch.setenv(KEY_ENV, KEY)

    def echo(h, body):
        headers = dict(h.headers.items())
        text = f"bad request; you sent {json.dumps(headers)}\nAuthorization: {h.headers['Authorization']}\n" + "z" * 2000
        send(h, code, text)

    srv = serve(echo)
    caplog.set_level(logging.DEBUG)
    op = op_for(srv.url, tmp_path, api_key_env=KEY_ENV, max_retries=1, on_all_failed="keep_originals")
    rows = rows_of(["two dogs running on Brighton beach", "a red bus in London"])
    op.run_rows(rows)
    for r in rows:
        assert r["status"] == "kept" and rejected(r) == "llm_error"
        stored = meta(r)["rejected_caption"]
        assert f"HTTP {code}" in stored and len(stored) <= 300
        assert KEY not in json.dumps(r, default=str) and "Bearer" not in stored
    assert len(srv.seen) == (2 if code == 400 else 4)  # 503 is retried, 400 is not
    assert KEY not in caplog.text and caplog.records  # logged (the retries, the warning), and redacted
    with pytest.raises(OperatorError, match="failed on every prompt") as e:  # the default stops the run...
        op_for(srv.url, tmp_path, api_key_env=KEY_ENV).run_rows(rows_of(["a cat"]))
    assert KEY not in str(e.value)  # ...with a message that holds no key


def test_the_key_is_secret_and_urls_are_redacted_in_config_errors(tmp_path, monkeypatch, caplog):
    backend = OpenAIHttpBackend("http://127.0.0.1:9/v1", "m", api_key=KEY)
    assert KEY not in repr(backend) and KEY not in str(backend.api_key) and KEY not in repr(backend.__dict__)
    assert backend.api_key.get_secret_value() == KEY
    for url in (f"http://user:{KEY}@127.0.0.1:9/v1", f"http://127.0.0.1:9/v1?api_key={KEY}",
                f"http://{KEY}@127.0.0.1:9/v1", f"https://127.0.0.1:9/v1?x=1&access_token={KEY}"):  # fmt: skip
        stage = {"op": "caption_rewrite", "params": {"backend": "http", "base_url": url, "model": "m"}}
        with pytest.raises(ConfigError, match="api_key_env") as e:
            load_pipeline(_pipe(tmp_path, stage))
        assert KEY not in str(e.value)
    # a query that is not a credential is allowed, and still masked in messages
    down = f"http://127.0.0.1:{free_port()}/v1?deployment={KEY}"
    with pytest.raises(ConfigError, match="cannot reach the server") as e:
        load_pipeline(_pipe(tmp_path, {"op": "caption_rewrite", "params": {"backend": "http", "base_url": down, "model": "m"}}))
    assert KEY not in str(e.value) and "deployment=***" in str(e.value)
    assert KEY not in caplog.text


def test_a_key_over_plain_http_to_another_host_is_warned_about_once(caplog):
    host = f"llm-{uuid.uuid4().hex[:8]}.invalid"  # never contacted: the warning comes when the client is made
    caplog.set_level(logging.WARNING, logger="operators.text.llm_backends")
    for _ in range(2):
        OpenAIHttpBackend(f"http://{host}:8000/v1", "m", api_key=KEY)
    OpenAIHttpBackend(f"https://{host}:8000/v1", "m", api_key=KEY)
    OpenAIHttpBackend(f"http://{host}:8001/v1", "m")  # no key: nothing to warn about
    OpenAIHttpBackend("http://127.0.0.1:8000/v1", "m", api_key=KEY)
    OpenAIHttpBackend("http://localhost:8000/v1", "m", api_key=KEY)
    OpenAIHttpBackend("http://[::1]:8000/v1", "m", api_key=KEY)
    warned = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warned) == 1 and host in warned[0] and KEY not in caplog.text


def test_redactor_masks_keys_headers_and_url_secrets():
    red = Redactor([KEY, "hunter22"])
    assert KEY not in repr(red) and "hunter22" not in repr(red)
    for text in (f'{{"Authorization": "Bearer {KEY}"}}', f"authorization: Bearer {KEY}\r\nHost: x",
                 f"{{'authorization': 'Bearer {KEY}'}}", f"token {KEY} again", "Bearer abc.def-ghi",
                 f"x-api-key: {KEY}", "see http://bob:hunter22@h:1/v1?key=k1"):  # fmt: skip
        out = red(text)
        assert KEY not in out and "hunter22" not in out and "abc.def" not in out and "k1" not in out, out
    assert red("Authorization: Bearer zzz\nHost: x") == "[authorization removed] Host: x"
    assert len(red("y" * 5000)) == 300 and red("a\n\n b") == "a b"
    assert redact_url("https://u:p@h.example:8443/v1?api-version=2024&k=v#frag") == "https://***@h.example:8443/v1?api-version=***&k=***"


# ----------------------------------------------------------------------------- 13: malformed replies

CHAT_CASES = {
    "content is a number": {"choices": [{"index": 0, "message": {"role": "assistant", "content": 42}}]},
    "a json list": [{"index": 0, "message": {"content": "A cat."}}],
    "missing choices": {"id": "x", "object": "chat.completion"},
    "empty choices": {"choices": []},
    "a choice that is a string": {"choices": ["A cat."]},
    "a message that is a string": {"choices": [{"index": 0, "message": "A cat."}]},
    "a part without text": {"choices": [{"index": 0, "message": {"content": [{"type": "text", "text": 7}]}}]},
    "a part that is a string": {"choices": [{"index": 0, "message": {"content": ["A cat."]}}]},
    "an error object": {"error": {"message": "model overloaded"}},
    "not json at all": "<html>502 Bad Gateway</html>",
}


def _chat_server(serve):
    def respond(h, body):
        text = original(json.loads(body)["messages"][-1]["content"])
        if text in CHAT_CASES:
            return send(h, 200, CHAT_CASES[text])
        if text == "two dogs on Brighton beach in parts":
            parts = [{"type": "text", "text": "Two dogs on "}, {"type": "refusal", "refusal": "no"},
                     {"type": "text", "text": "Brighton beach."}]  # fmt: skip
            return send(h, 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": parts}}]})
        good_reply(h, body)

    return serve(respond)


def test_malformed_replies_are_llm_errors_and_rows_keep_their_originals(serve, tmp_path):
    srv = _chat_server(serve)
    op = op_for(srv.url, tmp_path, api="chat", cache=True, cache_path=str(tmp_path / "c.sqlite"))
    caps = [*CHAT_CASES, "two dogs on Brighton beach in parts", "a red bus in London"]
    rows = rows_of(caps)
    op.run_rows(rows)
    by = {c: r for c, r in zip(caps, rows, strict=True)}
    for case in CHAT_CASES:
        r = by[case]
        assert r["status"] == "kept", (case, r["status"], r.get("reason"))
        assert r["caption"] == case and rejected(r) == "llm_error", case
        assert "StopIteration" not in meta(r)["rejected_caption"]
    parts = by["two dogs on Brighton beach in parts"]  # the text parts, concatenated
    assert parts["caption"] == "Two dogs on Brighton beach." and parts["scores"]["rewrite_accepted"] == 1.0
    assert by["a red bus in London"]["caption"] == "A red bus in london."
    # errors are not cached: a second run asks again for those, and only those
    asked = len(srv.seen)
    op2 = op_for(srv.url, tmp_path, api="chat", cache=True, cache_path=str(tmp_path / "c.sqlite"),
                 on_all_failed="keep_originals")  # every call it makes fails  # fmt: skip
    op2.run_rows(rows_of(caps))
    assert len(srv.seen) - asked == len(CHAT_CASES) and op2.cache_hits == 2


def test_malformed_completion_replies(serve, tmp_path):
    def respond(h, body):
        prompts = json.loads(body)["prompt"]
        if isinstance(prompts, list):  # a batch of prompts whose reply lacks an index
            return send(h, 200, {"choices": [{"text": "A."}, {"index": 0, "text": "B."}]})
        return send(h, 200, {"choices": [{"index": 0, "text": 42}]})

    srv = serve(respond)
    rows = rows_of(["a cat", "a dog", "a bird"])
    op_for(srv.url, tmp_path, prompts_per_request=2, on_all_failed="keep_originals").run_rows(rows)
    assert [r["caption"] for r in rows] == ["a cat", "a dog", "a bird"]
    assert all(r["status"] == "kept" and rejected(r) == "llm_error" for r in rows)
    assert "index" in meta(rows[0])["rejected_caption"] and "number" in meta(rows[2])["rejected_caption"]


def test_parse_reply_reads_what_the_api_defines():
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]}}]}
    assert parse_reply(parts, 1, "chat") == ["a b"]
    assert parse_reply({"choices": [{"message": {"content": None}}]}, 1, "chat") == [""]  # null: empty, judged so
    two = {"choices": [{"index": 1, "text": "second"}, {"index": 0, "text": "first"}]}
    assert parse_reply(two, 2, "completion") == ["first", "second"]
    for bad in ([], "x", {"choices": [{"index": 0}]}, {"choices": [{"index": 0, "text": ["a"]}]}):
        with pytest.raises(LLMError, match="malformed reply"):
            parse_reply(bad, 1, "completion")
    with pytest.raises(LLMError, match="no choice for index"):
        parse_reply({"choices": [{"index": 0, "text": "a"}, {"index": 0, "text": "b"}]}, 2, "completion")
