"""Shared fixtures: one local Ray for the whole session, shut down at the end.

The test session moves itself into a private network namespace that has only a loopback
interface (Linux, as root: CI and the dev machines), so nothing a test starts is reachable from
outside. Where that is not allowed the tests still run, with a warning; the session's Ray binds
127.0.0.1 by itself either way (tests/test_runtime_network.py).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import warnings

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

_CLONE_NEWNET = 0x40000000


def _loopback_only_network() -> bool:
    if os.environ.get("NMM_TEST_NETNS", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            return False
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


LOOPBACK_ONLY = _loopback_only_network()
if not LOOPBACK_ONLY:
    warnings.warn("tests run in the host network namespace (a private loopback-only one is not allowed here)", stacklevel=1)


@pytest.fixture(scope="session")
def ray_local():
    """Start local Ray once (2 CPUs, small object store) and never leave it running. It is
    started the way `curate` starts it (``curate.runtime.start_local_ray``: loopback only, no
    outside connection) and advertises one GPU, fake on a CPU machine, so stages that declare
    ``num_gpus`` run here too (Ray only counts the resource)."""
    import ray

    from curate.runtime import start_local_ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=2, object_store_mb=256, num_gpus=1)
    yield ray
    ray.shutdown()
