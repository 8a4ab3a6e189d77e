"""`curate stats` plots: PNGs drawn with matplotlib (Agg, no display) from the typed report and
the sampled per-sample values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mixtures.stats.model import CuratedReport, ShardsReport, StatsReport, report_of
from mixtures.stats.sampling import Sampled

__all__ = ["write_plots"]


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


def _dist_plots(dist: Sampled, out: Path) -> dict[str, Path]:
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

    plots["duration"] = _stacked_hist(dist.duration, 20, "duration (s)", "media items", "duration", "videos or audio", 8, out / "duration.png")
    plots["tokens"] = _stacked_hist(
        dist.tokens, 25, "estimated tokens per sample", "samples", "tokens per sample, by group", "samples", 7, out / "tokens.png"
    )

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


def _shard_plots(r: ShardsReport, out: Path) -> dict[str, Path]:
    import numpy as np

    plots: dict[str, Path] = {}
    unit = r.unit
    names = list(r.groups)
    fig = _fig(max(6.0, 1.1 * len(names) + 2), 4.0)
    ax = fig.subplots()
    x = np.arange(len(names))
    rows = r.target_rows()
    series = [("target", [t.target_share for t in rows]), ("planned", [t.planned_share for t in rows]), ("achieved", [t.achieved_share for t in rows])]
    for i, (label, shares) in enumerate(series):
        vals = [100 * (v or 0.0) for v in shares]
        ax.bar(x + (i - 1) * 0.27, vals, width=0.27, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"share of {unit} (%)")
    ax.set_title(f"target vs achieved per group ({unit})")
    ax.legend(fontsize=8)
    plots["target_vs_achieved"] = _save(fig, out / "target_vs_achieved.png")

    fig = _fig(8, 3.2)
    ax = fig.subplots()
    units = r.units_present()[::-1]
    left = np.zeros(len(units))
    for g in names:
        vals = np.array([100 * r.groups[g].shares[u] for u in units])
        ax.barh(units, vals, left=left, label=g)
        left += vals
    ax.set_xlabel("share (%)")
    ax.set_title("what each group holds, in every unit")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    plots["shares_by_unit"] = _save(fig, out / "shares_by_unit.png")

    mixed = [s for s in r.shards if s.expected is not None]
    if mixed:
        fig = _fig(9, 5.2)
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        xs = np.arange(len(mixed))
        for g in names:
            dev = [100 * (s.shares.get(g, 0.0) - s.expected.get(g, 0.0)) for s in mixed]
            ax1.plot(xs, dev, marker=".", label=g)
        tol = r.tolerance
        if tol:
            ax1.axhspan(-100 * tol, 100 * tol, color="green", alpha=0.1, label="tolerance")
        ax1.axhline(0, color="black", lw=0.6)
        ax1.set_ylabel("achieved - planned (pts)")
        basis = "planned" if r.expected_shares_exact else "target (report has no planned per-phase shares)"
        ax1.set_title(f"ratio drift per shard, in {unit}: achieved - {basis} share", fontsize=10)
        ax1.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax2.plot(xs, [100 * p.max_abs_drift for p in r.prefix_drift], color="black", marker=".")
        if tol:
            ax2.axhline(100 * tol, color="green", ls="--", lw=0.8)
        ax2.set_ylabel("prefix max drift (pts)")
        ax2.set_xlabel("shard")
        plots["drift"] = _save(fig, out / "drift.png")
    return plots


def _curated_plots(r: CuratedReport, out: Path) -> dict[str, Path]:
    summary = r.summary
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


def _stacked_hist(pairs: list, bins: int, xlabel: str, ylabel: str, title: str, empty: str, fontsize: int, path: Path) -> Path:
    """One stacked histogram of (label, value) pairs, a bar stack per label."""
    fig = _fig()
    ax = fig.subplots()
    labels = sorted({k for k, _ in pairs})
    if labels:
        ax.hist([[v for k, v in pairs if k == label] for label in labels], bins=bins, label=labels, stacked=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=fontsize)
    else:
        _no_data(ax, empty)
    ax.set_title(title)
    return _save(fig, path)


def write_plots(doc: StatsReport | dict[str, Any], sampled: Sampled, out: Path) -> dict[str, Path]:
    """PNGs of the report and the sampled values under ``out``; name -> path."""
    report = report_of(doc)
    out.mkdir(parents=True, exist_ok=True)
    plots = _shard_plots(report, out) if isinstance(report, ShardsReport) else _curated_plots(report, out)
    plots.update(_dist_plots(sampled, out))
    return plots
