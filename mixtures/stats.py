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
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import random
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixtures.pool import COST_KEYS
from mixtures.shards import ShardStats
from mixtures.shares import achieved_by_group, drift, expected_shares, prefix_drift
from schemas.files import atomic_write_json, atomic_write_text
from schemas.media_types import modality_of_ext

__all__ = ["collect", "print_tables", "run_stats", "write_html", "write_plots"]

MAIN_UNITS = ("samples", "tokens", "seconds")
_SKIP_DIRS = {"stats", ".nv-meta"}
_THUMB_SIDE = 160


# --------------------------------------------------------------------------- inputs


def detect(path: Path) -> str:
    """'shards' for a `curate mix` output, 'curated' for a `curate run` output."""
    if (path / "report.json").is_file() or any(_stats_files(path)):
        return "shards"
    if (path / "summary.json").is_file() or (path / "samples").is_dir() or any(path.rglob("*.parquet")):
        return "curated"
    raise FileNotFoundError(f"{path}: neither a shard folder (report.json, *.stats.json) nor a curated table (summary.json, *.parquet)")


def _stats_files(root: Path) -> list[Path]:
    out = []
    for f in root.rglob("*.stats.json"):
        rel = f.relative_to(root)
        if f.name.startswith(".") or any(p in _SKIP_DIRS or p.startswith(".") for p in rel.parts[:-1]):
            continue
        out.append(f)
    return sorted(out, key=lambda f: f.relative_to(root).as_posix())


def _tar_of(stats_file: Path) -> Path:
    return stats_file.with_name(stats_file.name[: -len(".stats.json")] + ".tar")


# --------------------------------------------------------------------------- per-sample values


class _Dist:
    """Per-sample values of a bounded sample, and thumbnails per group."""

    def __init__(self, thumbs: int) -> None:
        self.resolution: list[tuple[str, int, int]] = []  # (modality, width, height)
        self.duration: list[tuple[str, float]] = []  # (modality, seconds)
        self.tokens: list[tuple[str, float]] = []  # (group, tokens)
        self.text_tokens: list[float] = []
        self.scores: dict[str, list[float]] = defaultdict(list)
        self.thumbs: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.max_thumbs = thumbs
        self.samples = 0
        self.groups: Counter[str] = Counter()

    def add(self, group: str, record: dict[str, Any], cost: dict[str, float] | None) -> None:
        self.samples += 1
        self.groups[group] += 1
        for m in record.get("media") or []:
            if m.get("error") or m.get("role") == "keyframe":
                continue
            kind = m.get("modality") or "unknown"
            if m.get("width") and m.get("height"):
                self.resolution.append((kind, int(m["width"]), int(m["height"])))
            if m.get("duration_s"):
                self.duration.append((kind, float(m["duration_s"])))
        if cost:
            self.tokens.append((group, float(cost.get("tokens", 0.0))))
            self.text_tokens.append(float(cost.get("text_tokens", 0.0)))
        for k, v in (record.get("scores") or {}).items():
            if isinstance(v, int | float) and math.isfinite(v):
                self.scores[k].append(float(v))

    def wants_thumb(self, group: str) -> bool:
        return len(self.thumbs.get(group, ())) < self.max_thumbs

    def add_thumb(self, group: str, data: bytes, kind: str, caption: str, key: str, sample_id: str | None = None) -> None:
        """A thumbnail for the group, once per sample id (a repeat shows the same picture)."""
        if any(t["id"] == (sample_id or key) for t in self.thumbs.get(group, ())):
            return
        uri = _thumbnail(data, kind)
        if uri:
            self.thumbs[group].append({"src": uri, "caption": caption, "key": key, "kind": kind, "id": sample_id or key})

    def summary(self) -> dict[str, Any]:
        by_mod_px: dict[str, list[float]] = defaultdict(list)
        for kind, w, h in self.resolution:
            by_mod_px[kind].append(float(w * h))
        by_mod_dur: dict[str, list[float]] = defaultdict(list)
        for kind, d in self.duration:
            by_mod_dur[kind].append(d)
        by_group_tok: dict[str, list[float]] = defaultdict(list)
        for g, t in self.tokens:
            by_group_tok[g].append(t)
        return {
            "samples": self.samples,
            "by_group": dict(self.groups),
            "pixels": {k: _describe(v) for k, v in sorted(by_mod_px.items())},
            "min_side": {k: _describe([float(min(w, h)) for m, w, h in self.resolution if m == k]) for k in sorted(by_mod_px)},
            "duration_s": {k: _describe(v) for k, v in sorted(by_mod_dur.items())},
            "tokens": {"all": _describe([t for _, t in self.tokens]), **{g: _describe(v) for g, v in sorted(by_group_tok.items())}},
            "text_tokens": _describe(self.text_tokens),
            "scores": {k: _describe(v) for k, v in sorted(self.scores.items())},
            "thumbnails": {g: len(v) for g, v in sorted(self.thumbs.items()) if v},
        }


def _describe(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def q(p: float) -> float:
        i = (len(v) - 1) * p
        lo, hi = math.floor(i), math.ceil(i)
        return v[lo] + (v[hi] - v[lo]) * (i - lo)

    return {"n": len(v), "min": v[0], "p10": q(0.1), "p50": q(0.5), "p90": q(0.9), "max": v[-1], "mean": sum(v) / len(v)}


def _thumbnail(data: bytes, kind: str) -> str | None:
    """A base64 JPEG data URI: the image itself, or the first frame of a video (PyAV)."""
    from PIL import Image

    try:
        if kind == "video":
            import av

            with av.open(io.BytesIO(data)) as container:
                img = next(container.decode(video=0)).to_image()
        else:
            img = Image.open(io.BytesIO(data))
            img.load()
        img = img.convert("RGB")
        img.thumbnail((_THUMB_SIDE, _THUMB_SIDE))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - an undecodable member gets no thumbnail, the report goes on
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _media_kind(suffix: str) -> str | None:
    return modality_of_ext(suffix.rsplit(".", 1)[-1])


def iter_tar_samples(path: Path, *, read_media: bool) -> Iterator[tuple[str, dict[str, bytes | None]]]:
    """(key, {suffix: bytes or None}) per sample of a WebDataset tar; members of a sample are
    adjacent. ``json`` and ``txt`` are always read; of the media only the first image or video
    member, and only when ``read_media``."""
    with tarfile.open(path) as tf:
        key: str | None = None
        parts: dict[str, bytes | None] = {}
        for m in tf:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            k, _, suffix = base.partition(".")
            if k != key:
                if key is not None:
                    yield key, parts
                key, parts = k, {}
            kind = _media_kind(suffix)
            first_visual = kind in ("image", "video") and not any(
                _media_kind(s) in ("image", "video") and b is not None for s, b in parts.items()
            )
            if suffix in ("json", "txt") or (read_media and first_visual):
                f = tf.extractfile(m)
                parts[suffix] = f.read() if f else None
            else:
                parts[suffix] = None
        if key is not None:
            yield key, parts


def _sample_shards(root: Path, files: list[Path], n: int, seed: int) -> list[Path]:
    """A bounded random sample of shards, spread over folders (per-group mode: every group)."""
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_folder[f.parent].append(f)
    rng = random.Random(seed)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_folder.items())]
    chosen: list[Path] = []
    while len(chosen) < n and any(pools):
        for p in pools:
            if p and len(chosen) < n:
                chosen.append(p.pop())
    return sorted(chosen)


def _read_shard_samples(root: Path, stats_files: list[Path], dist: _Dist) -> list[str]:
    read = []
    for sf in stats_files:
        tar = _tar_of(sf)
        if not tar.is_file():
            continue
        read.append(tar.relative_to(root).as_posix())
        for key, parts in iter_tar_samples(tar, read_media=dist.max_thumbs > 0):
            if not parts.get("json"):
                continue
            rec = json.loads(parts["json"])
            group = rec.get("group") or "?"
            dist.add(group, rec, rec.get("cost"))
            if dist.wants_thumb(group):
                for suffix, data in parts.items():
                    kind = _media_kind(suffix)
                    if data is not None and kind in ("image", "video"):
                        caption = (parts.get("txt") or b"").decode("utf-8", "replace")
                        dist.add_thumb(group, data, kind, caption[:90], key, rec.get("id"))
                        break
    return read


# --------------------------------------------------------------------------- collect


def collect(path: str | Path, *, sample_shards: int = 8, seed: int = 0, thumbs: int = 4) -> tuple[dict[str, Any], _Dist]:
    """The stats document (what ``--json`` prints) and the sampled per-sample values."""
    root = Path(path).resolve()
    kind = detect(root)
    if kind == "shards":
        return _collect_shards(root, sample_shards=sample_shards, seed=seed, thumbs=thumbs)
    return _collect_curated(root, sample_files=sample_shards, seed=seed, thumbs=thumbs)


def _planned_phase_shares(report: dict[str, Any] | None) -> tuple[list[dict[str, float]], bool]:
    """Planned share of every group in each schedule phase (after caps and redistribution), which
    is what the mixer measures drift against; and whether it is exact. Older reports carry only
    the phases' target shares: exact for a one-phase stage (the groups' planned shares), else the
    targets stand in."""
    if not report or not report.get("phases"):
        return [], False
    phases = report["phases"]
    if all("planned_shares" in p for p in phases):
        return [p["planned_shares"] for p in phases], True
    if len(phases) == 1:
        return [{g: r.get("planned_share", 0.0) for g, r in report.get("groups", {}).items()}], True
    return [p["shares"] for p in phases], False


def _collect_shards(root: Path, *, sample_shards: int, seed: int, thumbs: int) -> tuple[dict[str, Any], _Dist]:
    report = json.loads((root / "report.json").read_text()) if (root / "report.json").is_file() else None
    files = _stats_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no <shard>.stats.json files")
    stats = [ShardStats.from_json(json.loads(f.read_text())) for f in files]
    unit = report["unit"] if report else stats[0].unit
    mode = (report or {}).get("mode") or ("per_group" if any(f.parent != root for f in files) else "premixed")
    phases, phases_exact = _planned_phase_shares(report)
    mixed = mode == "premixed" and bool(phases)
    report_drift = {d["shard"]: d["max_abs_drift"] for d in (report or {}).get("shard_drift", [])}

    achieved = achieved_by_group(stats)
    totals = {k: sum(a.get(k, 0.0) for a in achieved.values()) for k in COST_KEYS}
    rgroups = (report or {}).get("groups", {})
    names = list(rgroups) + [g for g in sorted(achieved) if g not in rgroups]
    missing = {s["group"]: s for s in (report or {}).get("shortfalls", [])}
    shards_with: Counter[str] = Counter(g for s in stats for g in s.by_group)
    groups: dict[str, Any] = {}
    for g in names:
        a = {k: float(achieved.get(g, {}).get(k, 0.0)) for k in COST_KEYS}
        r = rgroups.get(g, {})
        groups[g] = {
            "target": r.get("target"),
            "target_share": r.get("target_share"),
            "planned": r.get("planned"),
            "planned_share": r.get("planned_share"),
            "achieved": a,
            "achieved_share": a[unit] / totals[unit] if totals[unit] else 0.0,
            "shares": {k: (a[k] / totals[k] if totals[k] else 0.0) for k in COST_KEYS},
            "max_repeat_factor": max((s.get("repeat_factor", 0.0) for s in r.get("sources", {}).values()), default=None),
            "missing": missing[g]["missing"] if g in missing else 0.0,
            "shards": shards_with[g],
        }

    shard_rows = []
    for f, s in zip(files, stats, strict=True):
        rel = _tar_of(f).relative_to(root).as_posix()
        row = {
            "shard": rel,
            "samples": s.samples,
            "bytes": s.bytes,
            "skipped": len(s.skipped),
            "shares": s.shares,
            "sha256": s.sha256 or None,
        }
        if mixed:
            row["expected"] = expected_shares(s.by_phase, phases)
            name = Path(rel).name
            row["drift"] = report_drift[name] if name in report_drift else round(drift(s.by_group, s.by_phase, phases, unit), 6)
        shard_rows.append(row)

    by: dict[str, Counter[str]] = {k: Counter() for k in ("by_layout", "by_modality", "by_source")}
    for s in stats:
        for k in by:
            by[k].update(getattr(s, k))

    consistent = None
    if report:
        diffs = [abs(groups[g]["achieved"][k] - float(r["achieved"].get(k, 0.0))) for g, r in rgroups.items() for k in COST_KEYS]
        consistent = {
            "groups_match_report": max(diffs, default=0.0) < 1e-6,
            "shards_match_report": len(stats) == report.get("shards"),
            "samples_match_report": abs(totals["samples"] - report["totals"]["samples"]) < 1e-6,
        }

    dist = _Dist(thumbs)
    chosen = _sample_shards(root, files, sample_shards, seed)
    read = _read_shard_samples(root, chosen, dist)
    doc = {
        "kind": "shards",
        "path": str(root),
        "stage": (report or {}).get("stage", stats[0].stage or None),
        "mixture": (report or {}).get("mixture"),
        "unit": unit,
        "mode": mode,
        "budget": (report or {}).get("budget"),
        "tolerance": (report or {}).get("tolerance"),
        "shard_count": len(stats),
        "totals": totals,
        "bytes": sum(s.bytes for s in stats),
        "skipped": sum(len(s.skipped) for s in stats),
        "groups": groups,
        "shortfalls": (report or {}).get("shortfalls", []),
        "blend": (report or {}).get("blend", []),
        "phases": (report or {}).get("phases", []),
        "shards": shard_rows,
        "max_shard_drift": max((r["drift"] for r in shard_rows if "drift" in r), default=None),
        "prefix_drift": ((report or {}).get("prefix_drift") or prefix_drift(stats, phases, unit)) if mixed else [],
        "expected_shares_exact": phases_exact if mixed else None,
        **{k: dict(sorted(v.items())) for k, v in by.items()},
        "consistent_with_report": consistent,
        "sampled_shards": read,
        "distributions": dist.summary(),
    }
    return doc, dist


def _collect_curated(root: Path, *, sample_files: int, seed: int, thumbs: int, max_rows: int = 20000) -> tuple[dict[str, Any], _Dist]:
    import pyarrow.parquet as pq

    from mixtures.config import Estimators
    from mixtures.costs import sample_costs
    from mixtures.pool import curated_files
    from operators.media_io import read_media_bytes
    from schemas.record import from_table

    summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").is_file() else None
    files = curated_files(root)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(files, min(sample_files, len(files))))
    dist = _Dist(thumbs)
    est = Estimators()
    seen: set[str] = set()
    by_layout: Counter[str] = Counter()
    by_bucket: Counter[str] = Counter()
    for f in chosen:
        part = next((p.split("=", 1)[1] for p in Path(f).parts if p.startswith("bucket=")), None)
        for row in from_table(pq.read_table(f)):
            if dist.samples >= max_rows:
                break
            if row.get("status") != "kept" or row["id"] in seen:
                continue
            seen.add(row["id"])
            group = part or ((row.get("buckets") or [None])[0]) or row.get("layout") or "?"
            by_layout[row.get("layout") or "unknown"] += 1
            for b in row.get("buckets") or []:
                by_bucket[b] += 1
            dist.add(group, row, sample_costs(row, est))
            if dist.wants_thumb(group):
                for m in row.get("media") or []:
                    if m.get("error") or m.get("modality") not in ("image", "video"):
                        continue
                    try:
                        data = read_media_bytes(m)
                    except OSError:
                        continue
                    text = row.get("caption") or row.get("text") or row.get("transcript") or ""
                    dist.add_thumb(group, data, m["modality"], text[:90], row["id"], row["id"])
                    break
    doc = {
        "kind": "curated",
        "path": str(root),
        "summary": summary,
        "parquet_files": len(files),
        "sampled_files": [str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else f for f in chosen],
        "sampled_by_layout": dict(sorted(by_layout.items())),
        "sampled_by_bucket": dict(sorted(by_bucket.items())),
        "estimators": "defaults of mixtures.config.Estimators (tokens per sample)",
        "distributions": dist.summary(),
    }
    return doc, dist


# --------------------------------------------------------------------------- tables


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.2f}"


def _units_present(doc: dict[str, Any]) -> list[str]:
    """Units with a non-zero total (plus the stage unit), in COST_KEYS order."""
    return [k for k in COST_KEYS if doc["totals"].get(k) or k == doc["unit"]]


def print_tables(doc: dict[str, Any], console=None, *, max_rows: int = 30) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if doc["kind"] == "curated":  # the run's own summary tables are the caller's (`curate stats` prints them first)
        t = Table(title=f"sampled {doc['distributions']['samples']} kept rows from {len(doc['sampled_files'])} of {doc['parquet_files']} Parquet files", title_justify="left")
        t.add_column("layout")
        t.add_column("rows", justify="right")
        for k, v in doc["sampled_by_layout"].items():
            t.add_row(k, str(v))
        console.print(t)
        _print_dist(doc["distributions"], console)
        return

    unit = doc["unit"]
    t = Table(title=f"stage {doc['stage']} ({doc['mode']}): target vs achieved, in {unit}", title_justify="left")
    for c in ("group", "target %", "planned %", "achieved %", "Δ pts", unit, "samples", "repeat", "missing"):
        t.add_column(c, justify="left" if c == "group" else "right", overflow="fold")
    for g, r in doc["groups"].items():
        delta = None if r["target_share"] is None else 100 * (r["achieved_share"] - r["target_share"])
        t.add_row(
            g, _pct(r["target_share"]), _pct(r["planned_share"]), _pct(r["achieved_share"]),
            "-" if delta is None else f"{delta:+.1f}", _num(r["achieved"][unit]), _num(r["achieved"]["samples"]),
            "-" if r["max_repeat_factor"] is None else f"{r['max_repeat_factor']:.2f}", _num(r["missing"]) if r["missing"] else "",
        )  # fmt: skip
    console.print(t)

    keys = _units_present(doc)
    u = Table(title="achieved in every unit: amount (share %)", title_justify="left")
    u.add_column("group", overflow="fold")
    for k in keys:
        u.add_column(k.replace("_tokens", " tok"), justify="right")
    for g, r in doc["groups"].items():
        u.add_row(g, *(f"{_num(r['achieved'][k])} ({_pct(r['shares'][k])})" for k in keys))
    u.add_row("[bold]total[/bold]", *(_num(doc["totals"][k]) for k in keys))
    console.print(u)

    rows = doc["shards"]
    shown = rows
    note = ""
    if len(rows) > max_rows:
        key = (lambda r: -r.get("drift", 0.0)) if any("drift" in r for r in rows) else (lambda r: 0)
        shown = sorted(sorted(rows, key=key)[:max_rows], key=lambda r: r["shard"])
        note = f" ({max_rows} of {len(rows)} shown{', largest drift' if any('drift' in r for r in rows) else ''}; --json for all)"
    s = Table(title=f"per shard{note}", title_justify="left")
    for c in ("shard", "samples", "MiB", "drift", "skipped"):
        s.add_column(c, justify="left" if c == "shard" else "right", overflow="fold")
    tol = doc.get("tolerance")
    for r in shown:
        d = r.get("drift")
        dtxt = "-" if d is None else (f"[red]{d:.3f}[/red]" if tol is not None and d > tol else f"{d:.3f}")
        s.add_row(r["shard"], str(r["samples"]), f"{r['bytes'] / 2**20:.2f}", dtxt, str(r["skipped"] or ""))
    console.print(s)

    for name in ("by_layout", "by_modality", "by_source"):
        total = sum(doc[name].values()) or 1
        b = Table(title=f"samples {name.replace('_', ' ')}", title_justify="left")
        b.add_column(name[3:])
        b.add_column("samples", justify="right")
        b.add_column("%", justify="right")
        for k, v in sorted(doc[name].items(), key=lambda kv: -kv[1]):
            b.add_row(k, str(v), f"{100 * v / total:.1f}")
        console.print(b)
    _print_dist(doc["distributions"], console)
    for sf in doc["shortfalls"]:
        console.print(f"[yellow]target not met[/yellow]: {sf['group']} missing {_num(sf['missing'])} {unit} ({sf['reason']})")
    if doc["mode"] == "per_group":
        console.print("per-group shards: each shard holds one group; the mix is made at load time from the blend weights")
    elif doc.get("max_shard_drift") is not None:
        ok = "within" if tol is None or doc["max_shard_drift"] <= tol else "[red]outside[/red]"
        last = doc["prefix_drift"][-1]["max_abs_drift"] if doc["prefix_drift"] else 0.0
        console.print(f"max per-shard drift {doc['max_shard_drift']:.4f} ({ok} tolerance {tol}); whole stage {last:.4f}")
    c = doc.get("consistent_with_report")
    if c and not all(c.values()):
        console.print(f"[red]shard stats disagree with report.json[/red]: {c}")
    console.print(
        f"{doc['shard_count']} shards, {_num(doc['totals']['samples'])} samples, {doc['bytes'] / 2**20:.1f} MiB; "
        f"distributions from {doc['distributions']['samples']} samples in {len(doc['sampled_shards'])} sampled shards"
    )


def _print_dist(d: dict[str, Any], console) -> None:
    from rich.table import Table

    t = Table(title=f"distributions (sample of {d['samples']})", title_justify="left")
    for c in ("value", "n", "min", "p10", "median", "p90", "max"):
        t.add_column(c, justify="left" if c == "value" else "right")

    def add(name: str, s: dict[str, float]) -> None:
        if s.get("n"):
            t.add_row(name, str(s["n"]), *(_num(s[k]) for k in ("min", "p10", "p50", "p90", "max")))

    for k, s in d["min_side"].items():
        add(f"{k} min side (px)", s)
    for k, s in d["duration_s"].items():
        add(f"{k} duration (s)", s)
    for k, s in d["tokens"].items():
        add(f"tokens/sample {k}", s)
    for k, s in d["scores"].items():
        add(f"score {k}", s)
    console.print(t)


# --------------------------------------------------------------------------- plots


def _fig(w: float = 7.0, h: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in the sample", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _dist_plots(dist: _Dist, out: Path) -> dict[str, Path]:
    plots: dict[str, Path] = {}
    # resolution: width x height scatter and pixel histogram, by modality
    fig = _fig(9, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    kinds = sorted({k for k, _, _ in dist.resolution})
    if kinds:
        mpx = []
        for k in kinds:
            ws = [w for m, w, _ in dist.resolution if m == k]
            hs = [h for m, _, h in dist.resolution if m == k]
            ax1.scatter(ws, hs, s=12, alpha=0.6, label=k)
            mpx.append([w * h / 1e6 for w, h in zip(ws, hs, strict=True)])
        ax2.hist(mpx, bins=20, stacked=True, label=kinds)
        ax1.set_xlabel("width (px)")
        ax1.set_ylabel("height (px)")
        ax1.legend(fontsize=8)
        ax2.set_xlabel("megapixels")
        ax2.set_ylabel("media items")
        ax2.legend(fontsize=8)
    else:
        _no_data(ax1, "images or videos")
        _no_data(ax2, "images or videos")
    fig.suptitle("resolution")
    plots["resolution"] = _save(fig, out / "resolution.png")

    fig = _fig()
    ax = fig.subplots()
    kinds = sorted({k for k, _ in dist.duration})
    if kinds:
        ax.hist([[d for m, d in dist.duration if m == k] for k in kinds], bins=20, label=kinds, stacked=True)
        ax.set_xlabel("duration (s)")
        ax.set_ylabel("media items")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "videos or audio")
    ax.set_title("duration")
    plots["duration"] = _save(fig, out / "duration.png")

    fig = _fig()
    ax = fig.subplots()
    groups = sorted({g for g, _ in dist.tokens})
    if groups:
        ax.hist([[t for g, t in dist.tokens if g == grp] for grp in groups], bins=25, label=groups, stacked=True)
        ax.set_xlabel("estimated tokens per sample")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7)
    else:
        _no_data(ax, "samples")
    ax.set_title("tokens per sample, by group")
    plots["tokens"] = _save(fig, out / "tokens.png")

    keys = sorted(dist.scores, key=lambda k: (-len(dist.scores[k]), k))[:16]
    cols = min(4, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / cols))
    fig = _fig(2.6 * cols + 1, 2.1 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(keys):
            ax.hist(dist.scores[keys[i]], bins=15, color="tab:blue")
            ax.set_title(f"{keys[i]} (n={len(dist.scores[keys[i]])})", fontsize=8)
            ax.tick_params(labelsize=7)
        elif i == 0:
            _no_data(ax, "scores")
        else:
            ax.set_axis_off()
    fig.suptitle("scores")
    plots["scores"] = _save(fig, out / "scores.png")
    return plots


def _shard_plots(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    import numpy as np

    plots: dict[str, Path] = {}
    unit = doc["unit"]
    names = list(doc["groups"])
    fig = _fig(max(6.0, 1.1 * len(names) + 2), 4.0)
    ax = fig.subplots()
    x = np.arange(len(names))
    series = [("target", "target_share"), ("planned", "planned_share"), ("achieved", "achieved_share")]
    for i, (label, key) in enumerate(series):
        vals = [100 * (doc["groups"][g][key] or 0.0) for g in names]
        ax.bar(x + (i - 1) * 0.27, vals, width=0.27, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"share of {unit} (%)")
    ax.set_title(f"target vs achieved per group ({unit})")
    ax.legend(fontsize=8)
    plots["target_vs_achieved"] = _save(fig, out / "target_vs_achieved.png")

    fig = _fig(8, 3.2)
    ax = fig.subplots()
    units = _units_present(doc)[::-1]
    left = np.zeros(len(units))
    for g in names:
        vals = np.array([100 * doc["groups"][g]["shares"][u] for u in units])
        ax.barh(units, vals, left=left, label=g)
        left += vals
    ax.set_xlabel("share (%)")
    ax.set_title("what each group holds, in every unit")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    plots["shares_by_unit"] = _save(fig, out / "shares_by_unit.png")

    rows = [r for r in doc["shards"] if "expected" in r]
    if rows:
        fig = _fig(9, 5.2)
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        xs = np.arange(len(rows))
        for g in names:
            dev = [100 * (r["shares"].get(g, 0.0) - r["expected"].get(g, 0.0)) for r in rows]
            ax1.plot(xs, dev, marker=".", label=g)
        tol = doc.get("tolerance")
        if tol:
            ax1.axhspan(-100 * tol, 100 * tol, color="green", alpha=0.1, label="tolerance")
        ax1.axhline(0, color="black", lw=0.6)
        ax1.set_ylabel("achieved - planned (pts)")
        basis = "planned" if doc.get("expected_shares_exact") else "target (report has no planned per-phase shares)"
        ax1.set_title(f"ratio drift per shard, in {unit}: achieved - {basis} share", fontsize=10)
        ax1.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax2.plot(xs, [100 * p["max_abs_drift"] for p in doc["prefix_drift"]], color="black", marker=".")
        if tol:
            ax2.axhline(100 * tol, color="green", ls="--", lw=0.8)
        ax2.set_ylabel("prefix max drift (pts)")
        ax2.set_xlabel("shard")
        plots["drift"] = _save(fig, out / "drift.png")
    return plots


def _curated_plots(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    summary = doc.get("summary")
    if not summary:
        return {}
    fig = _fig(9, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    b = summary.get("by_bucket", {})
    ax1.bar(list(b), list(b.values()))
    ax1.set_title("kept rows by bucket")
    ax1.tick_params(axis="x", rotation=30, labelsize=8)
    lay = {k: v.get("kept", 0) for k, v in summary.get("by_layout", {}).items()}
    ax2.bar(list(lay), list(lay.values()))
    ax2.set_title("kept rows by layout")
    ax2.tick_params(axis="x", rotation=30, labelsize=8)
    return {"counts": _save(fig, out / "counts.png")}


def write_plots(doc: dict[str, Any], dist: _Dist, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    plots = _shard_plots(doc, out) if doc["kind"] == "shards" else _curated_plots(doc, out)
    plots.update(_dist_plots(dist, out))
    return plots


# --------------------------------------------------------------------------- HTML

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


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(v: Any) -> str:
    return html.escape(str(v))


def write_html(doc: dict[str, Any], dist: _Dist, plots: dict[str, Path], path: Path) -> Path:
    """One self-contained page: every image is a data: URI, no external link or script."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nmm-curate stats</title><style>{_CSS}</style></head><body>"]
    if doc["kind"] == "shards":
        unit = doc["unit"]
        parts.append(f"<h1>stage {_e(doc['stage'])} <span class='note'>mixture {_e(doc.get('mixture'))}, {_e(doc['mode'])}</span></h1>")
        parts.append(
            f"<p>{doc['shard_count']} shards, {_num(doc['totals']['samples'])} samples, {doc['bytes'] / 2**20:.1f} MiB; "
            f"unit <b>{_e(unit)}</b>, budget {_num(doc.get('budget'))}; {doc['skipped']} samples skipped.</p>"
        )
        for sf in doc["shortfalls"]:
            parts.append(f"<p class='bad'>target not met: {_e(sf['group'])} missing {_num(sf['missing'])} {_e(unit)} ({_e(sf['reason'])})</p>")
        parts.append(f"<h2>target vs achieved ({_e(unit)})</h2>")
        rows = []
        for g, r in doc["groups"].items():
            delta = None if r["target_share"] is None else 100 * (r["achieved_share"] - r["target_share"])
            rows.append([_e(g), _pct(r["target_share"]), _pct(r["planned_share"]), _pct(r["achieved_share"]),
                         "-" if delta is None else f"{delta:+.1f}", _num(r["achieved"][unit]), _num(r["achieved"]["samples"]),
                         "-" if r["max_repeat_factor"] is None else f"{r['max_repeat_factor']:.2f}"])  # fmt: skip
        parts.append(_table(["group", "target %", "planned %", "achieved %", "Δ pts", unit, "samples", "max repeat"], rows))
        parts.append("<h2>achieved in every unit: amount (share %)</h2>")
        keys = _units_present(doc)
        rows = [[_e(g)] + [f"{_num(r['achieved'][k])} ({_pct(r['shares'][k])})" for k in keys] for g, r in doc["groups"].items()]
        rows.append(["<b>total</b>"] + [_num(doc["totals"][k]) for k in keys])
        parts.append(_table(["group", *keys], rows))
        if doc["blend"]:
            parts.append("<h2>per-group shards and their blend</h2>")
            parts.append(_table(["group", "folder", f"planned {unit}", "samples"],
                                [[_e(b["group"]), _e(b["path"]), _num(b["weight"]), _num(doc["groups"].get(b["group"], {}).get("achieved", {}).get("samples"))] for b in doc["blend"]]))  # fmt: skip
        for name in ("by_layout", "by_modality", "by_source"):
            total = sum(doc[name].values()) or 1
            parts.append(f"<h2>samples {name.replace('_', ' ')}</h2>")
            parts.append(_table([name[3:], "samples", "%"], [[_e(k), v, f"{100 * v / total:.1f}"] for k, v in sorted(doc[name].items(), key=lambda kv: -kv[1])]))
        parts.append("<h2>per shard</h2>")
        tol = doc.get("tolerance")
        srows = []
        for r in doc["shards"][:500]:
            d = r.get("drift")
            dtxt = "-" if d is None else (f"<span class='bad'>{d:.3f}</span>" if tol is not None and d > tol else f"{d:.3f}")
            srows.append([_e(r["shard"]), r["samples"], f"{r['bytes'] / 2**20:.2f}", dtxt, r["skipped"] or ""])
        parts.append(_table(["shard", "samples", "MiB", "drift", "skipped"], srows))
        if len(doc["shards"]) > 500:
            parts.append(f"<p class='note'>first 500 of {len(doc['shards'])} shards; `curate stats --json` lists all.</p>")
        if doc["mode"] == "per_group":
            parts.append("<p class='note'>per-group shards: each shard holds one group, so there is no per-shard ratio drift; the mix is made at load time from the blend weights.</p>")
    else:
        parts.append(f"<h1>curated table <span class='note'>{_e(doc['path'])}</span></h1>")
        s = doc.get("summary")
        if s:
            c = s["counts"]
            parts.append(f"<p>input {c['input']}: kept {c['kept']}, dropped {c['dropped']}, duplicate {c['duplicate']}, quarantined {c['quarantined']}.</p>")
            parts.append("<h2>rows by layout</h2>")
            cols = ["input", "kept", "dropped", "duplicate", "quarantined"]
            parts.append(_table(["layout", *cols], [[_e(k), *(v.get(x, 0) for x in cols)] for k, v in s.get("by_layout", {}).items()]))
            parts.append("<h2>kept rows by bucket</h2>")
            parts.append(_table(["bucket", "rows"], [[_e(k), v] for k, v in s.get("by_bucket", {}).items()]))
        parts.append(f"<p class='note'>distributions from {doc['distributions']['samples']} kept rows of {len(doc['sampled_files'])} of {doc['parquet_files']} Parquet files; tokens with default estimators.</p>")
    parts.append("<h2>plots</h2>")
    for name, p in plots.items():
        b64 = base64.b64encode(Path(p).read_bytes()).decode()
        parts.append(f"<div><img class='plot' alt='{_e(name)}' src='data:image/png;base64,{b64}'></div>")
    parts.append("<h2>distributions</h2>")
    d = doc["distributions"]
    rows = []
    for label, group in (("min side (px)", "min_side"), ("duration (s)", "duration_s"), ("tokens/sample", "tokens"), ("score", "scores")):
        for k, v in d[group].items():
            if v.get("n"):
                rows.append([_e(f"{label} {k}"), v["n"], *(_num(v[q]) for q in ("min", "p10", "p50", "p90", "max"))])
    parts.append(_table(["value", "n", "min", "p10", "median", "p90", "max"], rows))
    parts.append("<h2>thumbnails per group</h2>")
    for g, items in sorted(dist.thumbs.items()):
        if not items:
            continue
        parts.append(f"<h3>{_e(g)}</h3><div class='thumbs'>")
        for t in items:
            parts.append(f"<div class='thumb'><img alt='{_e(t['key'])}' src='{t['src']}'>{_e(t['kind'])}: {_e(t['caption'])}</div>")
        parts.append("</div>")
    missing = sorted(set(d["by_group"]) - {g for g, v in dist.thumbs.items() if v})
    if missing:
        parts.append(f"<p class='note'>no image or video in the sample for: {_e(', '.join(missing))}</p>")
    parts.append("</body></html>")
    return atomic_write_text(path, "".join(parts))


# --------------------------------------------------------------------------- entry point


def run_stats(
    path: str | Path,
    *,
    sample_shards: int = 8,
    seed: int = 0,
    thumbs: int = 4,
    plots: bool = True,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Collect, then write PNGs and report.html under ``output`` (default ``<path>/stats``).
    Returns the document, with ``plots`` and ``html`` paths when written."""
    doc, dist = collect(path, sample_shards=sample_shards, seed=seed, thumbs=thumbs)
    if plots:
        out = Path(output) if output else Path(doc["path"]) / "stats"
        written = write_plots(doc, dist, out)
        doc["plots"] = {k: str(v) for k, v in written.items()}
        doc["html"] = str(write_html(doc, dist, written, out / "report.html"))
        atomic_write_json(out / "stats.json", doc, indent=1, sort_keys=True)
    return doc
