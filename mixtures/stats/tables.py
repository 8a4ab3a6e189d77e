"""`curate stats` in the terminal: rich tables of the typed report. A curated run's own summary
tables are curate's (the CLI prints them first)."""

from __future__ import annotations

from typing import Any

from mixtures.stats.cells import (
    count_table,
    dist_table,
    guarantee_lines,
    shard_table,
    source_table,
    stage_target_table,
    units_table,
)
from mixtures.stats.model import CuratedReport, ShardRow, ShardsReport, StatsReport, report_of
from mixtures.target_table import Bad, num, rich_table

__all__ = ["print_tables"]


def print_tables(doc: StatsReport | dict[str, Any], console=None, *, max_rows: int = 30) -> None:
    """Print a report (or its JSON document); at most ``max_rows`` shards, those with most drift."""
    from rich.console import Console

    console = console or Console()
    report = report_of(doc)
    if isinstance(report, CuratedReport):
        _print_curated(report, console)
    else:
        _print_shards(report, console, max_rows)


def _print_curated(r: CuratedReport, console) -> None:
    title = f"sampled {r.distributions.samples} kept rows from {len(r.sampled_files)} of {r.parquet_files} Parquet files"
    console.print(rich_table(title, ["layout", "rows"], [[k, str(v)] for k, v in r.sampled_by_layout.items()], fold="none"))
    console.print(rich_table(f"distributions (sample of {r.distributions.samples})", *dist_table(r.distributions), fold="none"))


def _most_drift(rows: list[ShardRow], max_rows: int) -> tuple[list[ShardRow], str]:
    """The rows to show, and a note on what was left out."""
    if len(rows) <= max_rows:
        return rows, ""
    has_drift = any(r.drift is not None for r in rows)
    key = (lambda r: -(r.drift or 0.0)) if has_drift else (lambda r: 0)
    shown = sorted(sorted(rows, key=key)[:max_rows], key=lambda r: r.shard)
    return shown, f" ({max_rows} of {len(rows)} shown{', largest drift' if has_drift else ''}; --json for all)"


def _print_shards(r: ShardsReport, console, max_rows: int) -> None:
    unit = r.unit
    console.print(rich_table(f"stage {r.stage} ({r.mode}): target vs achieved, in {unit}", *stage_target_table(r)))
    console.print(rich_table("achieved in every unit: amount (share %)", *units_table(r), fold="first"))
    sources = source_table(r)
    if sources:
        console.print(rich_table(f"sources inside each group, in {unit} (per-group shards)", *sources, fold="first"))
    shown, note = _most_drift(r.shards, max_rows)
    of = " (drift: of its sources' shares inside its group)" if r.mode == "per_group" else ""
    console.print(rich_table(f"per shard{note}{of}", *shard_table(shown, r.tolerance)))
    for name in ("by_layout", "by_modality", "by_source"):
        console.print(rich_table(f"samples {name.replace('_', ' ')}", *count_table(name, getattr(r, name)), fold="none"))
    console.print(rich_table(f"distributions (sample of {r.distributions.samples})", *dist_table(r.distributions), fold="none"))
    for sf in r.shortfalls:
        console.print(f"[yellow]target not met[/yellow]: {sf.group} missing {num(sf.missing)} {unit} ({sf.reason})")
    tol = r.tolerance
    for line in guarantee_lines(r):
        console.print(f"[red]{line}[/red]" if isinstance(line, Bad) else line, highlight=False)
    if r.mode == "per_group":
        worst = max((g.max_source_drift for g in r.groups.values() if g.max_source_drift is not None), default=None)
        drift = "" if worst is None else f"; max drift of a full shard of its sources' shares {worst:.4f} ({'within' if tol is None or worst <= tol else '[red]outside[/red]'} tolerance {tol})"
        console.print(f"per-group shards: each shard holds one group; the mix is made at load time from the blend weights{drift}")
    elif r.max_shard_drift is not None:
        ok = "within" if tol is None or r.max_shard_drift <= tol else "[red]outside[/red]"
        last = r.prefix_drift[-1].max_abs_drift if r.prefix_drift else 0.0
        console.print(f"max per-shard drift {r.max_shard_drift:.4f} ({ok} tolerance {tol}); whole stage {last:.4f}")
    c = r.consistent_with_report
    if c and not all(c.values()):
        console.print(f"[red]shard stats disagree with report.json[/red]: {c}")
    console.print(
        f"{r.shard_count} shards, {num(r.totals['samples'])} samples, {r.bytes / 2**20:.1f} MiB; "
        f"distributions from {r.distributions.samples} samples in {len(r.sampled_shards)} sampled shards"
    )
