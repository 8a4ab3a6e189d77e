"""A local Ray started by `curate` stays on 127.0.0.1 and asks the network nothing (issue 14, item 3).

Two views, both in child processes that start their own Ray (the session's Ray is already up):

- ``strace -f`` of a whole `curate run`: every ``connect``/``sendto``/``sendmsg`` of the driver,
  GCS, raylet, agents and every worker, Python or C++, is recorded; none may name an address
  outside loopback, nor port 53 anywhere (a DNS lookup, even through a loopback stub resolver).
  A control run of a plain ``ray.init()`` shows that the same check does see Ray's probes (the
  UDP "connect" to 8.8.8.8 and the cloud metadata requests to 169.254.169.254). Skipped where
  strace is missing or may not trace.
- without strace, what can be seen from inside: the node's address is 127.0.0.1, every socket
  a Ray process listens on is a loopback one, no dashboard/API-server process runs (that is the
  process that asks the cloud metadata service), and a Python audit hook in the driver
  (``socket.connect``/``socket.sendto``) sees no outside address. A Python audit hook alone
  would prove little: Ray's address probe is C++ code and the metadata requests come from a
  child process, which is why the strace test exists.

Both run in whatever network namespace the test session has (conftest.py moves it into a
loopback-only one where it may): an attempt to reach outside is a syscall either way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from curate.demo.synth import make_image

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 420
_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::"}
_ADDR = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)|sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _outside(trace: Path) -> list[str]:
    """The connect/sendto/sendmsg calls of a trace that name an outside address or port 53."""
    bad = []
    for line in trace.read_text(errors="replace").splitlines():
        if not re.search(r"\b(connect|sendto|sendmsg)\(", line):
            continue
        for m in _ADDR.finditer(line):
            port, host = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
            if host not in _LOOPBACK or port == "53":
                bad.append(line[:200])
    return bad


def _strace_usable() -> bool:
    if shutil.which("strace") is None:
        return False
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", os.devnull, "true"], capture_output=True)
    return r.returncode == 0


needs_strace = pytest.mark.skipif(not _strace_usable(), reason="strace is not installed or may not trace here")


def _traced(cmd: list[str], trace: Path, cwd: Path) -> subprocess.CompletedProcess:
    full = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace), *cmd]
    return subprocess.run(full, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture()
def tiny_pipeline(tmp_path: Path) -> Path:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        make_image(imgs / f"im{i}.jpg", 64 + 8 * i, 48, seed=i)
        (imgs / f"im{i}.txt").write_text(f"caption {i}")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "a line of text to keep"}) + "\n")
    cfg = {
        "name": "net",
        "ray": {"num_cpus": 1, "object_store_mb": 128},
        "sources": [
            {"name": "imgs", "reader": "image_folder", "path": "imgs"},
            {"name": "rows", "reader": "jsonl", "path": "rows.jsonl"},
        ],
        "stages": [{"op": "probe"}, {"op": "filter", "params": {"rules": [{"field": "min_side", "min": 8}]}}],
    }
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "pipe.yaml"


@needs_strace
def test_curate_run_connects_to_nothing_but_loopback(tiny_pipeline: Path, tmp_path: Path):
    trace = tmp_path / "run.trace"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "curate.cli", "run", str(tiny_pipeline), "-o", str(out), "--no-progress"]
    r = _traced(cmd, trace, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["input"] == 4 and summary["balanced"]
    assert summary["run"]["cluster"]["local"] is True
    assert "connect(" in trace.read_text()  # the trace did record the run (Ray's own loopback traffic)
    assert _outside(trace) == []


@needs_strace
def test_the_trace_sees_what_plain_ray_init_probes(tmp_path: Path):
    """Control: Ray left to itself asks 8.8.8.8 for a route and the cloud metadata service which
    cloud it is on; if this ever finds nothing, the test above proves nothing either."""
    script = textwrap.dedent(
        """
        import time, ray
        ray.init(num_cpus=1, object_store_memory=128 << 20, include_dashboard=False, log_to_driver=False)
        time.sleep(3)  # the API server probes the metadata service right after it starts
        ray.shutdown()
        """
    )
    trace = tmp_path / "plain.trace"
    env_script = tmp_path / "plain.py"
    env_script.write_text(script)
    r = _traced([sys.executable, str(env_script)], trace, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    bad = _outside(trace)
    assert any('"169.254.169.254"' in line for line in bad), bad
    if _has_outside_interface():  # with only `lo` (conftest's namespace) Ray skips the route probe
        assert any('"8.8.8.8"' in line for line in bad), bad


def _has_outside_interface() -> bool:
    import psutil

    return any(
        a.family == socket.AF_INET and not a.address.startswith("127.")
        for name, addrs in psutil.net_if_addrs().items()
        for a in addrs
    )


PROBE = textwrap.dedent(
    """
    import json, socket, sys
    seen = []
    def audit(event, args):
        if event in ("socket.connect", "socket.sendto"):
            addr = args[1] if event == "socket.connect" else args[-1]
            if isinstance(addr, tuple) and addr and addr[0] not in ("127.0.0.1", "::1", "localhost"):
                seen.append([event, str(addr[0]), addr[1] if len(addr) > 1 else None])
    sys.addaudithook(audit)

    import psutil, ray
    from curate.runtime import ray_session
    from schemas.config import RayConfig

    with ray_session(RayConfig(num_cpus=1, object_store_mb=128)) as cluster:
        @ray.remote
        def where():
            return ray.util.get_node_ip_address()

        worker_ip = ray.get(where.remote())
        procs = psutil.Process().children(recursive=True)
        listening, dashboards = [], []
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                conns = p.net_connections(kind="inet")
            except psutil.Error:
                continue
            if "dashboard/dashboard.py" in cmd:
                dashboards.append(cmd[:120])
            listening += [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN]
        print(json.dumps({
            "cluster": cluster, "node": ray.nodes()[0]["NodeManagerAddress"], "worker_ip": worker_ip,
            "listening": sorted(set(listening)), "dashboards": dashboards, "processes": len(procs),
            "audit": seen,
        }))
    """
)


def test_local_ray_is_on_loopback_without_an_api_server(tmp_path: Path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["node"] == got["worker_ip"] == "127.0.0.1"
    assert got["cluster"]["local"] is True
    assert got["processes"] >= 3  # gcs_server, raylet, agents: the children were seen
    assert got["listening"] and set(got["listening"]) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, got["listening"]
    assert got["dashboards"] == []
    assert got["audit"] == []
