"""Start or join Ray: local in-process by default (sized to the machine), or a cluster.

A local Ray started here is a single node that stays on the loopback interface and asks the
network nothing (issue 14, item 3). Ray 2.x, left alone, does two things on start-up:

- every Ray process (driver, dashboard, agents, workers) learns "its own address" with
  ``node_ip_address_from_perspective()``: a UDP socket "connected" to 8.8.8.8:53, and the servers
  then bind that interface's address. Ray's own switch for the loopback-only behaviour it uses on
  laptops is ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (``ray_constants.ENABLE_RAY_CLUSTER``): every
  process then takes 127.0.0.1 as its address. It is set in the environment the Ray processes
  inherit, and on this process's own copy of the constant (read when ``ray`` was imported, which
  may have happened before this module ran). ``_node_ip_address`` is 127.0.0.1 as well.
- the API server (the dashboard process; with ``include_dashboard=False`` it loads only the usage
  stats module) asks the cloud metadata service (169.254.169.254, metadata.google.internal) which
  cloud it runs on, whether or not usage stats are enabled, and Ray has no setting to turn that
  off. With the dashboard off that process serves nothing else a local run uses (no jobs or state
  API: Ray does not load them without the dashboard), so a local Ray started here does not start
  it: ``ray._private.services.start_api_server`` answers what it answers when the dashboard fails
  to start. This is the one place that reaches into Ray's internals; tests/test_runtime_network.py
  fails if a Ray upgrade makes it wrong.

Nothing of this applies when joining a cluster (``address``): that cluster's settings rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from schemas.config import RayConfig

__all__ = ["LOOPBACK", "LOOPBACK_ENV", "ray_session", "start_local_ray"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: environment the processes of a local Ray inherit: loopback address, no usage stats
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _no_api_server(*args, **kwargs):
    """What ``services.start_api_server`` returns when the dashboard did not start."""
    return None, None


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While ``ray.init`` starts a local node: loopback addresses and no API server (see the
    module docstring). The environment and Ray's constants are restored afterwards; the
    processes started meanwhile keep what they inherited."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services

    saved_env = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    saved_cluster, saved_api = ray_constants.ENABLE_RAY_CLUSTER, services.start_api_server
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    services.start_api_server = _no_api_server
    try:
        yield
    finally:
        services.start_api_server = saved_api
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster
        for k, v in saved_env.items():
            if k == "RAY_USAGE_STATS_ENABLED":
                continue  # stays off in this process too (the driver reports nothing either)
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_local_ray(
    num_cpus: int,
    object_store_mb: int,
    *,
    num_gpus: int | None = None,
    quiet: bool = True,
) -> None:
    """``ray.init`` of a local single-node Ray on 127.0.0.1 that makes no outside connection.
    ``num_gpus`` overrides the GPUs Ray detects (1 on a CPU machine advertises a fake GPU, so
    GPU stages can be tried)."""
    import ray

    kwargs: dict = {
        "num_cpus": num_cpus,
        "object_store_memory": object_store_mb * 1024 * 1024,
        "include_dashboard": False,
        "log_to_driver": not quiet,
        "configure_logging": not quiet,
        "_node_ip_address": LOOPBACK,
    }
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    with _loopback_only():
        ray.init(**kwargs)


@contextmanager
def ray_session(cfg: RayConfig, address: str | None = None, *, quiet: bool = True) -> Iterator[dict]:
    """Yield Ray's cluster resources. Uses an already-initialised Ray as is; shuts down only
    what it started (a local Ray on the loopback interface, unless ``address`` names a cluster)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if quiet:  # before init: Ray logs its start-up notes at WARNING
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        address = address or cfg.address
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=not quiet, configure_logging=not quiet)
        else:
            start_local_ray(cfg.num_cpus or os.cpu_count() or 1, cfg.object_store_mb, quiet=quiet)
        started = True
    if quiet:
        for name in ("ray", "ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        res = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.info("ray: %s CPUs, %s GPUs, %s nodes", res.get("CPU"), res.get("GPU", 0), len(nodes))
        yield {
            "cpus": res.get("CPU", 0),
            "gpus": res.get("GPU", 0),
            "nodes": len(nodes),
            # one node on the loopback interface: its resources are all there will be (no autoscaler)
            "local": bool(nodes) and all(n.get("NodeManagerAddress") == LOOPBACK for n in nodes),
        }
    finally:
        if started:
            ray.shutdown()
