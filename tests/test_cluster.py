"""A real two-node Ray cluster on 127.0.0.1: `curate run --address` runs the demo pipeline on it.

The whole scenario runs in a child process inside fresh PID, mount and network namespaces
(``unshare --net --pid --fork --mount-proc --kill-child``):

- network: the namespace has only ``lo``, so Ray uses 127.0.0.1 and every server it starts
  listens there (checked with ``ss``); nothing is reachable from outside, and the cluster cannot
  collide with the in-process Ray of the other tests (``ray_local``);
- PID: ``ray stop`` kills Ray processes *by name*, which on the host would also kill the test
  session's own Ray; inside the namespace (with its own /proc) it sees only this cluster. When the
  namespace's first process exits, or ``unshare`` is killed on a timeout, the kernel kills every
  process left in it, so the cluster never outlives the test.

Ray keeps its session files under a private ``RAY_TMPDIR`` (not /tmp/ray) and uses token
authentication with a private token (see ``_cluster_env``). Needs root (CI and the dev machines
run the tests as root); elsewhere the test is skipped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

from curate.demo.corpus import PLANTED_NAME, make_demo_corpus

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "pipelines" / "demo.yaml"
# The cluster has a network namespace of its own, so any port is free there.
PORT = 6390
TIMEOUT_S = 300
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
NODE_ARGS = "--num-cpus=1 --object-store-memory=150000000 --disable-usage-stats"

# Runs as PID 1 of the new namespaces; "$@" are the `--set` overrides for `curate run`.
SCRIPT = r"""
set -euo pipefail
step() { echo "== $(date +%T.%N | cut -c1-12) $*"; }
ip link set lo up
trap 'step "ray stop"; ray stop --force >/dev/null 2>&1 || true' EXIT

step "head node"
ray start --head --port="$PORT" $NODE_ARGS --include-dashboard=false
step "second node"
ray start --address="127.0.0.1:$PORT" $NODE_ARGS
if command -v ss >/dev/null; then ss -ltnH > "$WORK/listening.txt"; fi

step "curate run --address 127.0.0.1:$PORT"
curate run "$CONFIG" -o "$OUT" --address "127.0.0.1:$PORT" --no-progress "$@"
step "curate exited 0"
"""


def _require_namespaces() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux namespaces (unshare)")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs `{tool}` (util-linux / iproute2)")
    probe = subprocess.run(
        [*UNSHARE, "ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            "cannot create PID + network namespaces (run the tests as root to include the cluster test): "
            + probe.stderr.strip()
        )


def _cluster_env(ray_tmp: Path, token_file: Path, work: Path, out: Path) -> dict[str, str]:
    """The environment of every process of the cluster: both nodes and the `curate` driver."""
    # Nothing Ray-related leaks in from the test session: its in-process Ray sets RAY_* variables
    # (RAY_AUTH_MODE, possibly RAY_ADDRESS) in os.environ.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    bin_dir = str(Path(sys.executable).parent)  # where `ray` and `curate` of this interpreter live
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
        RAY_TMPDIR=str(ray_tmp),  # session dir, logs and ray_current_cluster here, not in /tmp/ray
        # Token authentication, explicitly on, with a token of this test's own. Left to itself,
        # `ray start --head` turns it on only if ~/.ray/auth_token exists (any local ray.init()
        # writes one), and then `ray start --address` and `ray.init(address=...)` of the driver,
        # which do not switch it on by themselves, are refused ("RAY_AUTH_MODE is currently
        # 'disabled'"). Setting the mode and the token path for all three makes the test
        # independent of ~/.ray and exercises what a real cluster needs.
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        PORT=str(PORT),
        NODE_ARGS=NODE_ARGS,
        WORK=str(work),
        CONFIG=str(DEMO),
        OUT=str(out),
    )
    return env


def _tasks_by_node(logs: Path) -> dict[str, set[str]]:
    """Ray task names by the node whose worker ran them, read from Ray's per-worker log files:
    python-core-worker-<worker id>_<pid>.log names the worker's node, and
    worker-<worker id>-<job id>-<pid>.out lists the tasks it ran (`:task_name:` lines)."""
    node_of: dict[str, str] = {}
    for p in logs.glob("python-core-worker-*.log"):
        m = re.search(r"worker_id=([0-9a-f]+) node_id=([0-9a-f]+)", p.read_text(errors="replace"))
        if m:
            node_of[m[1]] = m[2]
    tasks: dict[str, set[str]] = defaultdict(set)
    for p in logs.glob("worker-*.out"):
        worker_id = p.name.split("-")[1]
        for name in re.findall(r"^:task_name:(.+)$", p.read_text(errors="replace"), re.M):
            tasks[node_of.get(worker_id, "?")].add(name)
    return dict(tasks)


def _processes_with_env(entry: str) -> list[int]:
    """PIDs of live processes whose environment holds ``entry`` (e.g. this cluster's RAY_TMPDIR)."""
    needle = entry.encode() + b"\0"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:  # gone, or a kernel thread
            pass
    return pids


def test_demo_pipeline_on_a_two_node_cluster(tmp_path):
    _require_namespaces()
    paths = make_demo_corpus(tmp_path / "data")
    planted = json.loads((tmp_path / "data" / PLANTED_NAME).read_text())["totals"]
    out = tmp_path / "out"
    token_file = tmp_path / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    # Ray's unix sockets live under RAY_TMPDIR and must stay under 108 bytes: a short path in /tmp.
    ray_tmp = Path(tempfile.mkdtemp(prefix="nmm-ray-", dir="/tmp" if Path("/tmp").is_dir() else None))
    env = _cluster_env(ray_tmp, token_file, tmp_path, out)
    overrides = [a for name, path in paths.items() for a in ("--set", f"sources.{name}.path={path}")]
    cmd = [*UNSHARE, "bash", "-c", SCRIPT, "bash", *overrides]

    try:
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired as e:  # unshare was killed, and with it the whole namespace
            output = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
            pytest.fail(f"cluster scenario ran past {TIMEOUT_S}s; its output:\n{output}")
        print(proc.stdout)  # pytest shows it when the test fails
        print(f"cluster scenario: {time.monotonic() - started:.1f}s")

        # Nothing of the cluster is left, whatever the outcome: every process that carried its
        # RAY_TMPDIR is gone.
        deadline = time.monotonic() + 10
        while (left := _processes_with_env(f"RAY_TMPDIR={ray_tmp}")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the cluster still running: {left}"
        assert proc.returncode == 0, f"cluster scenario failed (exit {proc.returncode}), see the output above"

        # Every Ray server listened on loopback only.
        listening = tmp_path / "listening.txt"
        if listening.exists():
            addrs = [line.split()[3] for line in listening.read_text().splitlines() if line.strip()]
            host_port = [(a.rsplit(":", 1)[0].strip("[]"), int(a.rsplit(":", 1)[1])) for a in addrs]
            assert PORT in {port for _, port in host_port}, addrs  # the GCS
            assert {host for host, _ in host_port} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addrs

        # The run saw both nodes, and its ledger matches what the corpus planted.
        summary = json.loads((out / "summary.json").read_text())
        cluster = summary["run"]["cluster"]
        assert cluster["nodes"] == 2 and cluster["cpus"] == 2, cluster
        counts = summary["counts"]
        assert summary["balanced"]
        assert counts["input"] == counts["kept"] + counts["dropped"] + counts["duplicate"] + counts["quarantined"]
        assert counts["input"] == planted["rows"]
        assert counts["duplicate"] == planted["duplicates"]
        assert counts["quarantined"] == planted["quarantined"]

        # The pipeline's tasks ran on both nodes, not only on the head.
        tasks = _tasks_by_node(ray_tmp / "ray" / "session_latest" / "logs")
        nodes = {node for node in tasks if node != "?"}
        assert len(nodes) == 2, f"tasks by node (from Ray's worker logs; has their format changed?): {tasks}"
        assert any("IngestFn" in name for names in tasks.values() for name in names), tasks
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
