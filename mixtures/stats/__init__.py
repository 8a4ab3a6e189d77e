"""`curate stats`: what the trainer will see, against what was asked.

Input is a shard folder written by `curate mix` (SHARDS/report.json plus one
``<shard>.stats.json`` per shard, in per-group folders too) or a curated table (a `curate run`
output folder: summary.json plus Parquet files).

Tables come from the per-shard stats JSONs and the report only, so they are fast on thousands of
shards: no tar is opened for them. Distributions (resolution, duration, tokens per sample,
scores) need per-sample values: they read the ``<key>.json`` members of a bounded random sample
of shards (``sample_shards``), or a bounded sample of Parquet files for a curated table.

Outputs: rich tables, one JSON document (``--json``), PNG plots and one self-contained HTML
report (plots and thumbnails embedded as base64) under ``<input>/stats/``.

Modules: ``collect`` reads the input into one typed report (``model``) and the sampled values
(``sampling``); ``tables`` (terminal), ``plots`` (PNG) and ``html_report`` render it, the tables
they share built once in ``cells``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixtures.stats.collect import collect_report
from mixtures.stats.html_report import write_html
from mixtures.stats.model import StatsReport, report_of
from mixtures.stats.plots import write_plots
from mixtures.stats.sampling import Sampled
from mixtures.stats.tables import print_tables
from schemas.files import atomic_write_json

__all__ = ["StatsReport", "collect", "collect_report", "print_tables", "report_of", "run_stats", "write_html", "write_plots"]


def collect(path: str | Path, *, sample_shards: int = 8, seed: int = 0, thumbs: int = 4) -> tuple[dict[str, Any], Sampled]:
    """The stats document (what ``--json`` prints) and the sampled per-sample values."""
    report, sampled = collect_report(path, sample_shards=sample_shards, seed=seed, thumbs=thumbs)
    return report.to_json(), sampled


def run_stats(
    path: str | Path,
    *,
    sample_shards: int = 8,
    seed: int = 0,
    thumbs: int = 4,
    plots: bool = True,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Collect, then write PNGs, report.html and stats.json under ``output`` (default
    ``<path>/stats``). Returns the document, with ``plots`` and ``html`` paths when written."""
    report, sampled = collect_report(path, sample_shards=sample_shards, seed=seed, thumbs=thumbs)
    if plots:
        out = Path(output) if output else Path(report.path) / "stats"
        written = write_plots(report, sampled, out)
        report.plots = {k: str(v) for k, v in written.items()}
        report.html = str(write_html(report, sampled, written, out / "report.html"))
        atomic_write_json(out / "stats.json", report.to_json(), indent=1, sort_keys=True)
    return report.to_json()
