"""`curate stats` as one self-contained HTML page: the tables of the typed report, the PNG plots
and thumbnails embedded as data: URIs; no external link or script."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
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
from mixtures.stats.model import CuratedReport, ShardsReport, StatsReport, report_of
from mixtures.stats.sampling import Sampled
from mixtures.target_table import Bad, Strong, num
from schemas.files import atomic_write_text

__all__ = ["write_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}tr:nth-child(even){background:#f7f7f7}
.bad{color:#b00020;font-weight:600}.note{color:#555;font-size:13px}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{width:170px;font-size:11px;color:#444}
.thumb img{max-width:160px;max-height:160px;display:block;border:1px solid #ccc}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
"""
_MAX_SHARDS = 500


def _e(v: Any) -> str:
    return html.escape(str(v))


def _cell(c: Any) -> str:
    if isinstance(c, Bad):
        return f"<span class='bad'>{_e(c)}</span>"
    if isinstance(c, Strong):
        return f"<b>{_e(c)}</b>"
    return _e(c)


def _table(columns: Sequence[str], cells: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _shards_part(r: ShardsReport) -> list[str]:
    unit = r.unit
    parts = [
        f"<h1>stage {_e(r.stage)} <span class='note'>mixture {_e(r.mixture)}, {_e(r.mode)}</span></h1>",
        f"<p>{r.shard_count} shards, {num(r.totals['samples'])} samples, {r.bytes / 2**20:.1f} MiB; "
        f"unit <b>{_e(unit)}</b>, budget {num(r.budget)}; {r.skipped} samples skipped.</p>",
    ]
    parts += [f"<p class='bad'>target not met: {_e(sf.group)} missing {num(sf.missing)} {_e(unit)} ({_e(sf.reason)})</p>" for sf in r.shortfalls]
    parts += [f"<p>{_cell(line)}</p>" for line in guarantee_lines(r)]
    parts += [f"<h2>target vs achieved ({_e(unit)})</h2>", _table(*stage_target_table(r))]
    parts += ["<h2>achieved in every unit: amount (share %)</h2>", _table(*units_table(r))]
    if r.blend:
        cells = [[b.group, b.path, num(b.amount), f"{b.weight:.4f}", num(b.samples)] for b in r.blend]
        parts += ["<h2>per-group shards and their blend</h2>", _table(["group", "folder", f"planned {unit}", "weight", "samples"], cells)]
    sources = source_table(r)
    if sources:
        parts += [f"<h2>sources inside each group ({_e(unit)})</h2>", _table(*sources)]
    for name in ("by_layout", "by_modality", "by_source"):
        parts += [f"<h2>samples {name.replace('_', ' ')}</h2>", _table(*count_table(name, getattr(r, name)))]
    parts += ["<h2>per shard</h2>", _table(*shard_table(r.shards[:_MAX_SHARDS], r.tolerance))]
    if len(r.shards) > _MAX_SHARDS:
        parts.append(f"<p class='note'>first {_MAX_SHARDS} of {len(r.shards)} shards; `curate stats --json` lists all.</p>")
    if r.mode == "per_group":
        parts.append(
            "<p class='note'>per-group shards: each shard holds one group, its drift is that of its sources' shares inside "
            "the group; the mix is made at load time from the blend weights.</p>"
        )
    return parts


def _curated_part(r: CuratedReport) -> list[str]:
    parts = [f"<h1>curated table <span class='note'>{_e(r.path)}</span></h1>"]
    s = r.summary
    if s:
        c = s["counts"]
        cols = ["input", "kept", "dropped", "duplicate", "quarantined"]
        parts += [
            f"<p>input {c['input']}: kept {c['kept']}, dropped {c['dropped']}, duplicate {c['duplicate']}, quarantined {c['quarantined']}.</p>",
            "<h2>rows by layout</h2>",
            _table(["layout", *cols], [[k, *(v.get(x, 0) for x in cols)] for k, v in s.get("by_layout", {}).items()]),
            "<h2>kept rows by bucket</h2>",
            _table(["bucket", "rows"], [[k, v] for k, v in s.get("by_bucket", {}).items()]),
        ]
    parts.append(
        f"<p class='note'>distributions from {r.distributions.samples} kept rows of {len(r.sampled_files)} of "
        f"{r.parquet_files} Parquet files; tokens with default estimators.</p>"
    )
    return parts


def _media_part(r: StatsReport, sampled: Sampled, plots: dict[str, Path]) -> list[str]:
    parts = ["<h2>plots</h2>"]
    for name, p in plots.items():
        b64 = base64.b64encode(Path(p).read_bytes()).decode()
        parts.append(f"<div><img class='plot' alt='{_e(name)}' src='data:image/png;base64,{b64}'></div>")
    parts += ["<h2>distributions</h2>", _table(*dist_table(r.distributions)), "<h2>thumbnails per group</h2>"]
    for g, items in sorted(sampled.thumbs.items()):
        if not items:
            continue
        parts.append(f"<h3>{_e(g)}</h3><div class='thumbs'>")
        parts += [f"<div class='thumb'><img alt='{_e(t.key)}' src='{t.src}'>{_e(t.kind)}: {_e(t.caption)}</div>" for t in items]
        parts.append("</div>")
    missing = sorted(set(r.distributions.by_group) - {g for g, v in sampled.thumbs.items() if v})
    if missing:
        parts.append(f"<p class='note'>no image or video in the sample for: {_e(', '.join(missing))}</p>")
    return parts


def write_html(doc: StatsReport | dict[str, Any], sampled: Sampled, plots: dict[str, Path], path: Path) -> Path:
    """One self-contained page: every image is a data: URI, no external link or script."""
    r = report_of(doc)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nmm-curate stats</title><style>{_CSS}</style></head><body>"]
    parts += _shards_part(r) if isinstance(r, ShardsReport) else _curated_part(r)
    parts += _media_part(r, sampled, plots)
    parts.append("</body></html>")
    return atomic_write_text(path, "".join(parts))
