"""``curate dedup-report``: what deduplication merged in a finished run, for people to check.

Reads OUT/rejected/*.parquet (the duplicate rows, each with ``duplicate_of``), finds their
survivors in OUT/samples (or in OUT/rejected, when a later stage dropped the survivor), and the
thresholds each dedup stage wrote to OUT/artifacts/<stage>/dedup.json. Writes one
self-contained HTML page: per dedup stage, its thresholds and counts, the distribution of group
sizes, and the largest groups with each member's thumbnail (images; a frame for videos; a
spectrogram for audio; the text for text rows) and the detail that names the distance or
similarity. Returns the same numbers as a dict.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.enums import Status

__all__ = ["write_dedup_report"]

_THUMB = 112
_COLUMNS = ["id", "locator", "source", "layout", "media", "caption", "text", "transcript", "status", "status_operator",
            "status_reason", "status_detail", "duplicate_of", "scores"]  # fmt: skip


def _read(folder: Path) -> pa.Table | None:
    files = sorted(folder.rglob("*.parquet")) if folder.exists() else []
    tables = []
    for f in files:
        t = pq.read_table(f)
        tables.append(t.select([c for c in _COLUMNS if c in t.column_names]))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def _thumbnail(row: dict[str, Any]) -> str | None:
    """A small base64 JPEG of the row's first image, video frame or audio spectrogram."""
    from PIL import Image

    from operators.media_io import open_image, open_media

    media = next((m for m in row.get("media") or [] if m and m.get("uri") and not m.get("error")), None)
    if media is None:
        return None
    try:
        kind = media.get("modality")
        if kind == "image":
            with open_media(media) as f, open_image(f) as im:
                im.draft("RGB", (_THUMB * 2, _THUMB * 2))
                img = im.convert("RGB")
        elif kind == "video":
            import av

            with open_media(media) as f, av.open(f) as c:
                frame = next(c.decode(c.streams.video[0]))
                img = frame.to_image()
        elif kind == "audio":
            from operators.dedup.audio import _spectrogram, decode_mono

            s = _spectrogram(decode_mono(media, 10.0)).T[::-1]
            s = np.clip((s - s.max() + 80) / 80, 0, 1)
            img = Image.fromarray((s * 255).astype(np.uint8)).convert("RGB")
        else:
            return None
        img.thumbnail((_THUMB, _THUMB))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=70)
        return base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001 - a report shows what it can
        return None


def _text_of(row: dict[str, Any]) -> str:
    for k in ("text", "caption", "transcript"):
        if row.get(k):
            t = " ".join(str(row[k]).split())
            return t[:280] + ("..." if len(t) > 280 else "")
    return ""


def _card(row: dict[str, Any], role: str, with_thumbs: bool) -> str:
    thumb = _thumbnail(row) if with_thumbs else None
    img = f'<img src="data:image/jpeg;base64,{thumb}" alt="">' if thumb else ""
    detail = html.escape(row.get("status_detail") or "") if role == "duplicate" else "survivor"
    text = _text_of(row)
    return (
        f'<div class="card {role}">{img}<div class="loc">{html.escape(str(row.get("locator")))}</div>'
        f'<div class="detail">{detail}</div>'
        + (f'<div class="text">{html.escape(text)}</div>' if text else "")
        + "</div>"
    )


def write_dedup_report(run_dir: Path, out_html: Path, *, max_groups: int = 12, max_members: int = 6, thumbnails: bool = True) -> dict:
    """Write the dedup report of the run in ``run_dir`` to ``out_html``; returns its numbers."""
    run_dir, out_html = Path(run_dir), Path(out_html)
    rejected = _read(run_dir / "rejected")
    kept = _read(run_dir / "samples")
    thresholds: dict[str, Any] = {}
    for f in sorted((run_dir / "artifacts").glob("*/dedup.json")):
        body = json.loads(f.read_text())
        thresholds[body.get("stage") or f.parent.name] = body
    dups = rejected.filter(pc.equal(rejected["status"], Status.DUPLICATE.value)) if rejected is not None else None
    rows_by_id: dict[str, dict[str, Any]] = {}
    for t in (kept, rejected):
        if t is not None:
            for r in t.to_pylist():
                rows_by_id.setdefault(r["id"], r)
    stats: dict[str, Any] = {"run": str(run_dir), "duplicates": 0, "operators": {}}
    sections = []
    by_op: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in dups.to_pylist() if dups is not None else []:
        by_op[r["status_operator"] or "?"].append(r)
    for op_name in sorted(set(by_op) | set(thresholds)):
        members = by_op.get(op_name, [])
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in members:
            groups[r["duplicate_of"]].append(r)
        sizes = Counter(len(v) + 1 for v in groups.values())
        info = thresholds.get(op_name, {})
        op_stats = {
            "duplicates": len(members),
            "groups": len(groups),
            "group_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "reasons": dict(Counter(r["status_reason"] for r in members)),
            "thresholds": info.get("thresholds", {}),
            "counters": info.get("stats", {}),
        }
        stats["operators"][op_name] = op_stats
        stats["duplicates"] += len(members)
        sections.append(_section(op_name, op_stats, groups, rows_by_id, max_groups, max_members, thumbnails))
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(_page(stats, sections), encoding="utf-8")
    stats["html"] = str(out_html)
    return stats


def _section(op_name, op_stats, groups, rows_by_id, max_groups, max_members, thumbnails) -> str:
    th = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in op_stats["thresholds"].items())
    ctr = ", ".join(f"{k} {v}" for k, v in op_stats["counters"].items())
    hist = "".join(
        f'<tr><td>{k}</td><td><div class="bar" style="width:{min(400, 8 * v)}px"></div> {v}</td></tr>' for k, v in op_stats["group_sizes"].items()
    )
    parts = [
        f"<section><h2>{html.escape(op_name)}</h2>",
        f"<p>{op_stats['duplicates']} duplicates in {op_stats['groups']} groups; reasons {html.escape(json.dumps(op_stats['reasons']))}</p>",
        f"<table class='kv'>{th}</table>" if th else "",
        f"<p class='counters'>{html.escape(ctr)}</p>" if ctr else "",
        f"<h3>group sizes</h3><table class='hist'><tr><th>size</th><th>groups</th></tr>{hist}</table>" if hist else "",
    ]
    biggest = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:max_groups]
    for survivor_id, members in biggest:
        survivor = rows_by_id.get(survivor_id, {"id": survivor_id, "locator": f"(survivor {survivor_id} not in this run's outputs)"})
        cards = [_card(survivor, "survivor", thumbnails)]
        cards += [_card(m, "duplicate", thumbnails) for m in sorted(members, key=lambda m: m["locator"])[: max_members - 1]]
        more = len(members) - (max_members - 1)
        extra = f'<div class="more">+{more} more</div>' if more > 0 else ""
        parts.append(f'<div class="group"><div class="gh">group of {len(members) + 1}</div>{"".join(cards)}{extra}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _page(stats: dict[str, Any], sections: list[str]) -> str:
    css = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222} h2{border-bottom:1px solid #ccc}
.group{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0;padding:8px;background:#f6f6f6;border-radius:6px}
.gh{width:100%;font-weight:600;font-size:13px}
.card{width:180px;font-size:12px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px}
.card.survivor{border:2px solid #2a7} .card img{display:block;max-width:100%;margin-bottom:4px}
.loc{word-break:break-all;font-family:monospace} .detail{color:#555} .text{color:#333;margin-top:4px}
.bar{display:inline-block;height:10px;background:#48c} table.kv th{text-align:left;padding-right:12px}
.counters{color:#666;font-size:12px}
"""
    head = f"<h1>Deduplication report</h1><p>{html.escape(stats['run'])}: {stats['duplicates']} duplicate rows</p>"
    body = "\n".join(sections) or "<p>No dedup stage ran or nothing was merged.</p>"
    return f'<!doctype html><html><head><meta charset="utf-8"><title>dedup report</title><style>{css}</style></head><body>{head}{body}</body></html>'
