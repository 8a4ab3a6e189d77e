"""`curate demo`: make a small mixed corpus and run the example pipeline on it, offline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["demo_pipeline_path", "run_demo"]

log = logging.getLogger(__name__)


#: demo kind -> (corpus maker "module:function", example pipeline, corpus folder, run folder)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "mixed": ("curate.demo.corpus:make_demo_corpus", "demo.yaml", "data", "run"),
    "video": ("curate.demo.media:make_video_corpus", "video.yaml", "video", "video_run"),
    "audio": ("curate.demo.audio:make_audio_corpus", "audio.yaml", "audio_demo", "audio_run"),
}


def demo_pipeline_path(name: str = "demo.yaml") -> Path:
    """examples/pipelines/<name> of this checkout (the package is installed editable)."""
    path = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the demo from a checkout of nmm-curate (pip install -e .)")
    return path


def run_demo(
    output: str | Path, *, kind: str = "mixed", address: str | None = None, progress: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Make the corpus of ``kind`` under OUTPUT/<corpus folder> and run its example pipeline
    into OUTPUT/<run folder>."""
    import importlib

    from curate.config import load_pipeline, load_yaml
    from curate.engine import Engine

    if kind not in KINDS:
        raise ValueError(f"unknown demo kind {kind!r}; choose one of {sorted(KINDS)}")
    maker, pipeline, data_dir, run_dir = KINDS[kind]
    module, func = maker.split(":")
    output = Path(output).resolve()
    paths = getattr(importlib.import_module(module), func)(output / data_dir, seed=seed)
    log.info("demo corpus written to %s", output / data_dir)
    sources = {s["name"] for s in load_yaml(demo_pipeline_path(pipeline))[0]["sources"]}
    # a maker returns the path of each source by name, or the source is the folder of that name
    found = {name: paths.get(name, output / data_dir / name) for name in sources}
    overrides = [f"sources.{name}.path={path}" for name, path in sorted(found.items())]
    loaded = load_pipeline(demo_pipeline_path(pipeline), overrides, output=output / run_dir)
    return Engine(loaded, output / run_dir, address=address, fresh=True, progress=progress).run()
