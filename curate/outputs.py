"""Write the curated table and the ledger summary from the last segment's files.

OUT/samples/bucket=<b>/part-*.parquet   kept rows, once per bucket they are eligible for
OUT/rejected/part-*.parquet             dropped, duplicate and quarantined rows, with reasons
OUT/quarantine.jsonl                    the quarantined inputs, one line each, for people
OUT/summary.json                        the ledger: input = kept + dropped + duplicate + quarantined,
                                        and planned inputs against the rows that account for them

``balanced`` (the CLI exits 3 when it is false) holds when all three of these hold:

1. every row is in exactly one known status: ``input + derived == kept + dropped + duplicate +
   quarantined + split`` (``input`` rows came from the sources, ``derived`` rows from operators);
2. every planned unit is accounted for: for each ingest unit of the plan whose input count
   ``planned`` the engine could count on the driver (``curate.ingest.planned_inputs``: files or
   items listed, non-blank JSONL lines that start in the byte range, rows of a Parquet row group,
   sample keys and odd members of a tar), the input rows of that unit (rows without ``parent_id``)
   carry at least ``planned`` distinct locators. A reader that skips an input, a unit whose rows
   were cut short or never written, a unit file lost after its segment ran, all fail this. A
   reader may give one input several rows (extra rows never hurt), and derived rows never count;
3. no row belongs to a unit that is not in the plan (a unit file left from an older plan).

Not covered: a reader that drops one input and makes up a row under a new locator for another is
not caught (counts, not identities, are compared); media that a manifest or a page refers to are
not planned inputs (their rows are: the manifest line, the page); a unit whose count could not be
taken (another payload shape, a file unreadable at plan time) is listed as unchecked. Without a
plan (``ledger_counts`` of loose files) only (1) is checked.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.media_hours import media_hours
from schemas.enums import Status
from schemas.files import atomic_write_json, atomic_write_parquet

if TYPE_CHECKING:
    from curate.config import LoadedPipeline

__all__ = ["UNASSIGNED", "finalize", "ledger_counts"]

UNASSIGNED = "unassigned"
_STATUSES = [s.value for s in Status]
_LEDGER_COLUMNS = [
    "status", "source", "layout", "modalities", "buckets", "tasks", "status_operator", "status_reason", "parent_id",
    "unit", "locator",
]  # fmt: skip
#: short and unplanned units listed by name in the summary (the counts cover all of them)
_LISTED_UNITS = 50


def _by_status() -> dict[str, int]:
    """``input`` rows came from the sources, ``derived`` rows from operators (clips of a video);
    each of them ends in exactly one status."""
    return {"input": 0, "derived": 0, **dict.fromkeys(_STATUSES, 0)}


class _Ledger:
    def __init__(self, plan: dict[str, dict[str, Any]] | None = None) -> None:
        #: unit id -> {"source", "planned" (int or None: not counted), "where"}
        self.plan = plan
        #: unit id -> distinct locators of its input rows (summed over files: a unit is one file)
        self.accounted: Counter[str] = Counter()
        self.total = _by_status()
        self.by: dict[str, defaultdict[str, dict[str, int]]] = {
            k: defaultdict(_by_status) for k in ("source", "layout", "modality")
        }
        self.bucket: Counter[str] = Counter()
        self.task: Counter[str] = Counter()
        self.reasons: dict[str, defaultdict[str, Counter[str]]] = {s: defaultdict(Counter) for s in _STATUSES[1:]}

    def add(self, table: pa.Table) -> None:
        inputs = table.select(["unit", "locator", "parent_id"]).filter(pc.is_null(table["parent_id"]))
        if inputs.num_rows:
            per_unit = inputs.group_by("unit").aggregate([("locator", "count_distinct")])
            for unit, n in zip(per_unit["unit"].to_pylist(), per_unit["locator_count_distinct"].to_pylist(), strict=True):
                self.accounted[unit] += n
        cols = table.select(_LEDGER_COLUMNS).to_pydict()
        for i, status in enumerate(cols["status"]):
            keys = {"source": [cols["source"][i]], "layout": [cols["layout"][i] or "unknown"], "modality": cols["modalities"][i] or ["none"]}
            origin = "derived" if cols["parent_id"][i] else "input"
            self.total[origin] += 1
            self.total[status] += 1
            for dim, values in keys.items():
                for v in values:
                    self.by[dim][v][origin] += 1
                    self.by[dim][v][status] += 1
            if status == Status.KEPT.value:
                self.bucket.update(cols["buckets"][i] or [UNASSIGNED])
                self.task.update(cols["tasks"][i] or [])
            else:
                self.reasons[status][cols["status_operator"][i] or "?"][cols["status_reason"][i] or "?"] += 1

    def plan_check(self) -> dict[str, Any] | None:
        """Planned inputs against the rows that account for them, per unit and per source."""
        if self.plan is None:
            return None
        by_source: defaultdict[str, dict[str, int]] = defaultdict(lambda: {"units": 0, "planned": 0, "accounted": 0})
        short: list[dict[str, Any]] = []
        unchecked: list[str] = []
        for unit, p in sorted(self.plan.items()):
            src = by_source[p["source"]]
            src["units"] += 1
            got = self.accounted.get(unit, 0)
            if p.get("planned") is None:
                unchecked.append(unit)
                continue
            src["planned"] += p["planned"]
            src["accounted"] += min(got, p["planned"])
            if got < p["planned"]:
                short.append({"unit": unit, "source": p["source"], "where": p.get("where"), "planned": p["planned"], "accounted": got})
        unplanned = [{"unit": u, "input_rows": n} for u, n in sorted(self.accounted.items()) if u not in self.plan]
        return {
            "units": len(self.plan),
            "planned_inputs": sum(s["planned"] for s in by_source.values()),
            "accounted_inputs": sum(s["accounted"] for s in by_source.values()),
            "short_units": len(short),
            "unplanned_units": len(unplanned),
            "unchecked_units": len(unchecked),
            "short": short[:_LISTED_UNITS],
            "unplanned": unplanned[:_LISTED_UNITS],
            "unchecked": unchecked[:_LISTED_UNITS],
            "by_source": dict(sorted(by_source.items())),
        }

    def as_dict(self) -> dict[str, Any]:
        t = self.total
        plan = self.plan_check()
        statuses_add_up = t["input"] + t["derived"] == sum(t[s] for s in _STATUSES)
        return {
            "counts": t,
            "balanced": statuses_add_up and (plan is None or not (plan["short_units"] or plan["unplanned_units"])),
            "plan": plan,
            "by_source": dict(sorted(self.by["source"].items())),
            "by_layout": dict(sorted(self.by["layout"].items())),
            "by_modality": dict(sorted(self.by["modality"].items())),
            "by_bucket": dict(sorted(self.bucket.items())),
            "by_task": dict(sorted(self.task.items())),
            "dropped": {op: dict(c) for op, c in sorted(self.reasons[Status.DROPPED.value].items())},
            "duplicate": {op: dict(c) for op, c in sorted(self.reasons[Status.DUPLICATE.value].items())},
            "quarantined": {op: dict(c) for op, c in sorted(self.reasons[Status.QUARANTINED.value].items())},
            "split": {op: dict(c) for op, c in sorted(self.reasons[Status.SPLIT.value].items())},
        }


def ledger_counts(files: list[Path], plan: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ledger of any set of record files (used by tests), checked against ``plan`` if given."""
    ledger = _Ledger(plan)
    for f in files:
        ledger.add(pq.read_table(f, columns=_LEDGER_COLUMNS))
    return ledger.as_dict()


def _write_buckets(kept: pa.Table, samples: Path, part: str) -> None:
    if kept.num_rows == 0:
        return
    lengths = pc.fill_null(pc.list_value_length(kept["buckets"]), 0)
    unassigned = kept.filter(pc.equal(lengths, 0))
    if unassigned.num_rows:
        atomic_write_parquet(unassigned, samples / f"bucket={UNASSIGNED}" / part)
    flat = pc.list_flatten(kept["buckets"])
    parents = pc.list_parent_indices(kept["buckets"])
    for bucket in sorted(pc.unique(flat).to_pylist()):
        rows = pc.filter(parents, pc.equal(flat, bucket))
        atomic_write_parquet(kept.take(rows), samples / f"bucket={bucket}" / part)


def finalize(
    out: Path,
    loaded: LoadedPipeline,
    final_dir: Path,
    info: dict[str, Any],
    plan: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write OUT/samples (by bucket), OUT/rejected, OUT/quarantine.jsonl and OUT/summary.json
    from the last segment's files; returns the summary. ``plan`` (unit id -> source, planned
    input count, description) is what the rows are checked against (see the module docstring)."""
    samples, rejected = out / "samples", out / "rejected"
    for d in (samples, rejected):
        shutil.rmtree(d, ignore_errors=True)
    files = sorted(final_dir.glob("*.parquet"))
    ledger = _Ledger(plan)
    quarantine_lines: list[str] = []
    for i, f in enumerate(files):
        table = pq.read_table(f)
        ledger.add(table)
        part = f"part-{i:05d}.parquet"
        is_kept = pc.equal(table["status"], Status.KEPT.value)
        _write_buckets(table.filter(is_kept), samples, part)
        rest = table.filter(pc.invert(is_kept))
        if rest.num_rows:
            atomic_write_parquet(rest, rejected / part)
            q = rest.filter(pc.equal(rest["status"], Status.QUARANTINED.value))
            for row in q.select(["id", "source", "locator", "status_operator", "status_reason", "status_detail"]).to_pylist():
                quarantine_lines.append(json.dumps(row, ensure_ascii=False))
    (out / "quarantine.jsonl").write_text("".join(line + "\n" for line in quarantine_lines))
    cfg = loaded.config
    summary = {
        "pipeline": cfg.name,
        "config": str(loaded.file),
        "output": str(out),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **ledger.as_dict(),
        "hours": media_hours(files),
        "stages": [{"name": s.stage_name, "op": s.op} for s in cfg.stages],
        "run": info,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
