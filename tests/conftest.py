"""Shared fixtures: one local Ray for the whole session, shut down at the end.

The test session moves itself into a private network namespace that has only a loopback
interface (Linux, as root: CI and the dev machines). Ray's servers bind every interface they
have, so inside it they listen on 127.0.0.1 only, and nothing a test starts is reachable from
outside. Where that is not allowed the tests still run, with a warning.
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
    warnings.warn("tests run in the host network namespace: Ray may listen on all interfaces", stacklevel=1)


@pytest.fixture(scope="session")
def ray_local():
    """Start local Ray once (2 CPUs, small object store) and never leave it running."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=256 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
