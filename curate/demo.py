"""`curate demo`: make a small mixed corpus and run the example pipeline on it, offline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["demo_pipeline_path", "run_demo"]

log = logging.getLogger(__name__)


def demo_pipeline_path() -> Path:
    """examples/pipelines/demo.yaml of this checkout (the package is installed editable)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "pipelines" / "demo.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the demo from a checkout of nmm-curate (pip install -e .)")
    return path


def run_demo(output: str | Path, *, address: str | None = None, progress: bool = True, seed: int = 0) -> dict[str, Any]:
    from curate.config import load_pipeline
    from curate.demo_corpus import make_demo_corpus
    from curate.engine import Engine

    output = Path(output).resolve()
    paths = make_demo_corpus(output / "data", seed=seed)
    log.info("demo corpus written to %s", output / "data")
    overrides = [f"sources.{name}.path={path}" for name, path in paths.items()]
    loaded = load_pipeline(demo_pipeline_path(), overrides)
    return Engine(loaded, output / "run", address=address, fresh=True, progress=progress).run()
