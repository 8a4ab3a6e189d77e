"""Terminal rendering of a run summary (the same numbers as summary.json)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["PLAIN_WIDTH", "print_summary", "wide_console"]

_COLS = ("input", "kept", "dropped", "duplicate", "quarantined")
#: columns of the tables when the output is not a terminal (CI, logs, ``| tee``) and COLUMNS is unset
PLAIN_WIDTH = 200


def wide_console(*, stderr: bool = False) -> Console:
    """A Console as wide as the terminal; without a terminal, COLUMNS if set, else PLAIN_WIDTH
    columns (rich would squeeze every table into 80 until "unders/tandin/g" is unreadable)."""
    stream = sys.stderr if stderr else sys.stdout
    is_tty = bool(getattr(stream, "isatty", None) and stream.isatty())
    width = None if is_tty or os.environ.get("COLUMNS") else PLAIN_WIDTH
    return Console(stderr=stderr, width=width)


def _status_table(title: str, rows: dict[str, dict[str, int]], first: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column(first)
    for c in _COLS:
        t.add_column(c, justify="right")
    for name, counts in rows.items():
        t.add_row(name, *(str(counts.get(c, 0)) for c in _COLS))
    return t


def _print_plan(plan: dict[str, Any] | None, console: Console) -> None:
    """Planned inputs against accounted ones; the units that fall short, by name."""
    if not plan:
        return
    unchecked = f", {plan['unchecked_units']} units not counted" if plan.get("unchecked_units") else ""
    console.print(
        f"planned inputs {plan['planned_inputs']} in {plan['units']} units, accounted for "
        f"{plan['accounted_inputs']}{unchecked}"
    )
    if plan.get("short_units"):
        t = Table(title=f"Units short of their planned inputs ({plan['short_units']})", title_justify="left")
        for c in ("source", "unit", "holds", "planned", "accounted"):
            t.add_column(c, justify="right" if c in ("planned", "accounted") else "left")
        for u in plan["short"]:
            t.add_row(u["source"], u["unit"], str(u.get("where") or ""), str(u["planned"]), str(u["accounted"]))
        if plan["short_units"] > len(plan["short"]):
            t.add_row("...", f"{plan['short_units'] - len(plan['short'])} more in summary.json", "", "", "")
        console.print(t)
    if plan.get("unplanned_units"):
        names = ", ".join(u["unit"] for u in plan["unplanned"])
        console.print(f"[red]{plan['unplanned_units']} units are not in the plan[/red] (left from an older plan?): {names}")


def _print_media_missing(summary: dict[str, Any], console: Console) -> None:
    """Sources where at least half the media their rows reference are missing (a wrong
    media_root, most often), with the media_root that would find them when the reader can say."""
    hints = summary.get("media_root_hints") or {}
    for src, c in (summary.get("media_missing") or {}).items():
        ref, miss = c.get("referenced", 0), c.get("missing", 0)
        if miss > 0 and miss * 2 >= ref:
            line = f"[red]{miss} of {ref} media missing in source {escape(src)}; set sources.{escape(src)}.params.media_root?[/red]"
            if src in hints:
                line += f" (media_root: {escape(repr(hints[src]))}, relative to the manifest's folder, would find them)"
            console.print(line)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    counts = summary["counts"]
    console.print(_status_table("Rows by source", summary["by_source"], "source"))
    console.print(_status_table("Rows by layout", summary["by_layout"], "layout"))
    b = Table(title="Kept rows by bucket (a row can be in several)", title_justify="left")
    b.add_column("bucket")
    b.add_column("rows", justify="right")
    for name, n in summary["by_bucket"].items():
        b.add_row(name, str(n))
    console.print(b)
    r = Table(title="Not kept, by operator and reason", title_justify="left")
    for c in ("status", "operator", "reason", "rows"):
        r.add_column(c, justify="right" if c == "rows" else "left")
    for status in ("dropped", "duplicate", "quarantined", "split"):
        for op, reasons in summary.get(status, {}).items():
            for reason, n in sorted(reasons.items()):
                r.add_row(status, op, reason, str(n))
    console.print(r)
    hours = (summary.get("hours") or {}).get("total") or {}
    if any(hours.values()):
        console.print("media kept: " + ", ".join(f"{k} {v:.3f} h" for k, v in sorted(hours.items())))
    _print_media_missing(summary, console)
    _print_plan(summary.get("plan"), console)
    ok = "[green]balanced[/green]" if summary["balanced"] else "[red]NOT BALANCED[/red]"
    derived = f" + derived {counts['derived']}" if counts.get("derived") else ""
    split = f" + split {counts['split']}" if counts.get("split") else ""
    console.print(
        f"input {counts['input']}{derived} = kept {counts['kept']} + dropped {counts['dropped']} + "
        f"duplicate {counts['duplicate']} + quarantined {counts['quarantined']}{split}  ({ok})"
    )
