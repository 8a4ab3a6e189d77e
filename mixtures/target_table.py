"""The target-vs-achieved table, built once: `curate mix` prints it, `curate stats` prints it and
puts it in its HTML report. Rows are typed; cells are text; each view only lays them out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mixtures.report_model import MixReport

__all__ = ["Bad", "Strong", "TargetRow", "num", "pct", "rich_table", "rows_of_mix_report", "target_table"]


class Bad(str):
    """A cell to flag (a value outside its tolerance): red in the terminal, bold red in HTML."""

    __slots__ = ()


class Strong(str):
    """A cell to emphasise (a total): bold in the terminal and in HTML."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One group: what was asked, planned and achieved, as shares of the stage unit."""

    group: str
    target_share: float | None  # None: the group is in the shards but not in the report
    planned_share: float | None
    achieved_share: float
    amount: float  # achieved, in the stage unit
    samples: float  # achieved samples
    repeat: float | None  # largest repeat factor over the group's sources (None: unknown)
    missing: float = 0.0  # how far the plan fell short of the target (0: met)

    @property
    def delta_pts(self) -> float | None:
        """Achieved minus target share, in percentage points."""
        return None if self.target_share is None else 100 * (self.achieved_share - self.target_share)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.2f}"


def target_table(rows: Sequence[TargetRow], unit: str) -> tuple[list[str], list[list[str]]]:
    """(column names, cells of every row)."""
    columns = ["group", "target %", "planned %", "achieved %", "Δ pts", unit, "samples", "repeat", "missing"]
    cells = [
        [
            r.group, pct(r.target_share), pct(r.planned_share), pct(r.achieved_share),
            "-" if r.delta_pts is None else f"{r.delta_pts:+.1f}", num(r.amount), num(r.samples),
            "-" if r.repeat is None else f"{r.repeat:.2f}", num(r.missing) if r.missing else "",
        ]
        for r in rows
    ]  # fmt: skip
    return columns, cells


def rows_of_mix_report(report: MixReport) -> list[TargetRow]:
    """The rows of a mix report (what ``mix_stage`` returns, ``report.json``)."""
    unit = report.unit
    missing = {s.group: s.missing for s in report.shortfalls}
    return [
        TargetRow(
            group=g,
            target_share=r.target_share,
            planned_share=r.planned_share,
            achieved_share=r.achieved_share,
            amount=r.achieved[unit],
            samples=r.achieved["samples"],
            repeat=r.max_repeat_factor,
            missing=missing.get(g, 0.0),
        )
        for g, r in report.groups.items()
    ]


def rich_table(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]], *, fold: str = "all"):
    """A rich Table: first column left, the others right; flagged cells red, strong ones bold.
    ``fold`` ("all", "first", "none"): the columns whose long words wrap instead of being cut."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        folds = fold == "all" or (fold == "first" and i == 0)
        t.add_column(c, justify="left" if i == 0 else "right", **({"overflow": "fold"} if folds else {}))
    for row in cells:
        t.add_row(*(f"[red]{c}[/red]" if isinstance(c, Bad) else f"[bold]{c}[/bold]" if isinstance(c, Strong) else c for c in row))
    return t
