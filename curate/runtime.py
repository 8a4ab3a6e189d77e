"""Start or join Ray: local in-process by default (sized to the machine), or a cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from schemas.config import RayConfig

__all__ = ["ray_session"]

log = logging.getLogger(__name__)


@contextmanager
def ray_session(cfg: RayConfig, address: str | None = None, *, quiet: bool = True) -> Iterator[dict]:
    """Yield Ray's cluster resources. Uses an already-initialised Ray as is; shuts down only
    what it started."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if quiet:  # before init: Ray logs its start-up notes at WARNING
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        address = address or cfg.address
        kwargs: dict = {"include_dashboard": False, "log_to_driver": not quiet, "configure_logging": not quiet}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(
                num_cpus=cfg.num_cpus or os.cpu_count() or 1,
                object_store_memory=cfg.object_store_mb * 1024 * 1024,
                **kwargs,
            )
        started = True
    if quiet:
        for name in ("ray", "ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        res = ray.cluster_resources()
        log.info("ray: %s CPUs, %s GPUs, %s nodes", res.get("CPU"), res.get("GPU", 0), len(ray.nodes()))
        yield {"cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0), "nodes": len([n for n in ray.nodes() if n.get("Alive")])}
    finally:
        if started:
            ray.shutdown()
