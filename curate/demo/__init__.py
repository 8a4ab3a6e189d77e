"""Offline demos and the generated media they run on: ``run`` (``curate demo``), ``corpus`` (the mixed
corpus), ``media`` (video), ``audio`` (speech-like audio), ``synth`` and ``synth_variants`` (synthetic
images, videos, audio and their near-duplicate variants, also used by tests and benchmarks)."""

from curate.demo.run import KINDS, demo_pipeline_path, run_demo

__all__ = ["KINDS", "demo_pipeline_path", "run_demo"]
