"""``curate dedup-report``: what deduplication merged in a finished run, for people to check.

Reads OUT/rejected/*.parquet (the duplicate rows, each with ``duplicate_of``), finds their
survivors in OUT/samples (or in OUT/rejected, when a later stage dropped the survivor), and the
thresholds each dedup stage wrote to OUT/artifacts/<stage>/dedup.json. Writes one
self-contained HTML page: per dedup stage, its thresholds and counts, the distribution of group
sizes, and the largest groups with each member's thumbnail (images; a frame for videos; a
spectrogram for audio; the text for text rows) and the detail that names the distance or
similarity. Returns the same numbers as a dict.

It streams, in bounded memory: pass 1 reads four columns of the rejected files (status,
operator, reason, duplicate_of) and counts reasons with Arrow group-bys; the (operator,
survivor) pairs of the duplicates go through a ``curate.spill.Spill`` (held up to
``SPILL_ROWS``, then spilled to disk by survivor id), so group sizes are counted one partition at
a time and only the ``max_groups`` largest groups per operator are kept. Pass 2 reads the
members of those groups (at most ``max_members - 1`` each, the first by locator) and their
survivors, the only whole records the report holds.
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

from curate.spill import Spill, group_counts
from schemas.enums import Status

__all__ = ["write_dedup_report"]

_THUMB = 112
#: duplicate rows (operator, survivor id) held before pass 1 spills them to disk
SPILL_ROWS = 2_000_000
_COLUMNS = ["id", "locator", "source", "layout", "media", "caption", "text", "transcript", "status", "status_operator",
            "status_reason", "status_detail", "duplicate_of", "scores"]  # fmt: skip


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.exists() else []


def _select(pf: pq.ParquetFile, columns: list[str] | tuple[str, ...]) -> list[str]:
    names = pf.schema_arrow.names
    return [c for c in columns if c in names]


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


def _group_stats(rejected: list[Path], max_groups: int) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[str, int]]]]:
    """Pass 1: per operator, duplicates, reasons (first-seen order), group sizes and the
    ``max_groups`` largest groups as (survivor id, duplicates), largest first, ties by id."""
    ops: dict[str, dict[str, Any]] = {}
    largest: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with Spill(SPILL_ROWS, key="duplicate_of") as spill:
        for f in rejected:
            pf = pq.ParquetFile(f)
            cols = _select(pf, ("status", "status_operator", "status_reason", "duplicate_of"))
            if "status" not in cols or "duplicate_of" not in cols:
                continue
            for batch in pf.iter_batches(columns=cols, batch_size=65536):
                t = pa.Table.from_batches([batch])
                t = t.filter(pc.fill_null(pc.equal(t["status"], Status.DUPLICATE.value), False))
                if t.num_rows == 0:
                    continue
                op_col = t["status_operator"] if "status_operator" in t.column_names else pa.nulls(t.num_rows, pa.string())
                op = pc.fill_null(pc.if_else(pc.equal(op_col, ""), pa.scalar(None, pa.string()), op_col), "?")
                reason = t["status_reason"] if "status_reason" in t.column_names else pa.nulls(t.num_rows, pa.string())
                for name, r, n in group_counts(op, reason):
                    entry = ops.setdefault(name, {"duplicates": 0, "groups": 0, "sizes": Counter(), "reasons": Counter()})
                    entry["duplicates"] += n
                    entry["reasons"][r] += n
                spill.add(pa.table({"op": op, "duplicate_of": t["duplicate_of"]}))
        for part in spill.partitions():
            g = part.group_by(["op", "duplicate_of"]).aggregate([([], "count_all")])
            for name in pc.unique(g["op"]).to_pylist():
                mine = g.filter(pc.equal(g["op"], name))
                counts = mine["count_all"].to_numpy()
                sizes, freq = np.unique(counts + 1, return_counts=True)
                entry = ops[name]
                entry["groups"] += mine.num_rows
                entry["sizes"].update(dict(zip(sizes.tolist(), freq.tolist(), strict=True)))
                top = mine.take(pc.sort_indices(mine, sort_keys=[("count_all", "descending"), ("duplicate_of", "ascending")])).slice(0, max_groups)
                both = largest[name] + list(zip(top["duplicate_of"].to_pylist(), top["count_all"].to_pylist(), strict=True))
                largest[name] = sorted(both, key=lambda kv: (-kv[1], kv[0] if kv[0] is not None else ""))[:max_groups]
    return ops, largest


def _members(rejected: list[Path], largest: dict[str, list[tuple[str, int]]], keep: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Pass 2: the first ``keep`` members (by locator) of each shown group."""
    wanted = {(op, sid) for op, groups in largest.items() for sid, _ in groups}
    ids = pa.array(sorted({sid for _, sid in wanted if sid is not None}), pa.string())
    held: pa.Table | None = None
    if keep <= 0 or not len(ids):
        return {}
    for f in rejected:
        pf = pq.ParquetFile(f)
        if "duplicate_of" not in pf.schema_arrow.names:
            continue
        t = pf.read(columns=_select(pf, ("status", "duplicate_of")))
        mask = pc.fill_null(pc.and_(pc.equal(t["status"], Status.DUPLICATE.value), pc.is_in(t["duplicate_of"], value_set=ids)), False)
        if not pc.any(mask).as_py():
            continue
        rows = pa.array(np.flatnonzero(mask.to_numpy(zero_copy_only=False)))
        t = pf.read(columns=_select(pf, _COLUMNS)).take(rows)
        op_col = t["status_operator"] if "status_operator" in t.column_names else pa.nulls(t.num_rows, pa.string())
        op = pc.fill_null(pc.if_else(pc.equal(op_col, ""), pa.scalar(None, pa.string()), op_col), "?")
        t = t.append_column("_group", pc.binary_join_element_wise(op, t["duplicate_of"], "\x1f"))
        held = t if held is None else pa.concat_tables([held, t], promote_options="default")
        held = held.take(pc.sort_indices(held, sort_keys=[("_group", "ascending"), ("locator", "ascending")]))  # stable
        codes = pc.dictionary_encode(held["_group"].combine_chunks()).indices.to_numpy(zero_copy_only=False)
        starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
        rank = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
        held = held.filter(pa.array(rank < keep))
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in held.to_pylist() if held is not None else []:
        key = (r.get("status_operator") or "?", r["duplicate_of"])
        if key in wanted and len(out[key]) < keep:
            out[key].append(r)
    return out


def _survivors(folders: list[list[Path]], ids: set[str]) -> dict[str, dict[str, Any]]:
    """The records of ``ids``: the first found, kept rows before rejected ones."""
    found: dict[str, dict[str, Any]] = {}
    for files in folders:
        for f in files:
            todo = pa.array(sorted(ids - set(found)), pa.string())
            if not len(todo):
                return found
            pf = pq.ParquetFile(f)
            t = pf.read(columns=["id"])
            mask = pc.is_in(t["id"], value_set=todo)
            if not pc.any(mask).as_py():
                continue
            rows = pa.array(np.flatnonzero(mask.to_numpy(zero_copy_only=False)))
            for r in pf.read(columns=_select(pf, _COLUMNS)).take(rows).to_pylist():
                found.setdefault(r["id"], r)
    return found


def write_dedup_report(run_dir: Path, out_html: Path, *, max_groups: int = 12, max_members: int = 6, thumbnails: bool = True) -> dict:
    """Write the dedup report of the run in ``run_dir`` to ``out_html``; returns its numbers."""
    run_dir, out_html = Path(run_dir), Path(out_html)
    rejected = _files(run_dir / "rejected")
    thresholds: dict[str, Any] = {}
    for f in sorted((run_dir / "artifacts").glob("*/dedup.json")):
        body = json.loads(f.read_text())
        thresholds[body.get("stage") or f.parent.name] = body
    ops, largest = _group_stats(rejected, max_groups)
    members = _members(rejected, largest, max_members - 1)
    wanted = {sid for groups in largest.values() for sid, _ in groups if sid is not None}
    rows_by_id = _survivors([_files(run_dir / "samples"), rejected], wanted)
    stats: dict[str, Any] = {"run": str(run_dir), "duplicates": 0, "operators": {}}
    sections = []
    for op_name in sorted(set(ops) | set(thresholds)):
        entry = ops.get(op_name) or {"duplicates": 0, "groups": 0, "sizes": Counter(), "reasons": Counter()}
        info = thresholds.get(op_name, {})
        op_stats = {
            "duplicates": entry["duplicates"],
            "groups": entry["groups"],
            "group_sizes": {str(k): v for k, v in sorted(entry["sizes"].items())},
            "reasons": dict(entry["reasons"]),
            "thresholds": info.get("thresholds", {}),
            "counters": info.get("stats", {}),
        }
        stats["operators"][op_name] = op_stats
        stats["duplicates"] += entry["duplicates"]
        groups = [(sid, n, members.get((op_name, sid), [])) for sid, n in largest.get(op_name, [])]
        sections.append(_section(op_name, op_stats, groups, rows_by_id, max_members, thumbnails))
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(_page(stats, sections), encoding="utf-8")
    stats["html"] = str(out_html)
    return stats


def _section(op_name, op_stats, groups, rows_by_id, max_members, thumbnails) -> str:
    """``groups``: (survivor id, duplicates in the group, the members shown), largest first."""
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
    for survivor_id, n, members in groups:
        survivor = rows_by_id.get(survivor_id, {"id": survivor_id, "locator": f"(survivor {survivor_id} not in this run's outputs)"})
        cards = [_card(survivor, "survivor", thumbnails)]
        cards += [_card(m, "duplicate", thumbnails) for m in members[: max_members - 1]]
        more = n - (max_members - 1)
        extra = f'<div class="more">+{more} more</div>' if more > 0 else ""
        parts.append(f'<div class="group"><div class="gh">group of {n + 1}</div>{"".join(cards)}{extra}</div>')
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
