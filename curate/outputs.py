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

How finalize runs: one task per final file (Ray tasks when Ray is up, else in this process)
reads the file once, writes its rows to OUT/samples (a copy per bucket) and OUT/rejected, its
quarantined rows to a part of quarantine.jsonl, its explain-index rows to a run file, and
returns partial counts: the ledger (counted with Arrow group-bys, not row by row), media
referenced and missing per source, up to ``EXAMPLES_PER_REASON`` example rows per drop reason.
The driver merges the partials in file order (the same numbers, and the same key order in
summary.json, as counting every row in one loop), then one task per index partition sorts the
index and sums the hours of kept media (``curate.explain_build``). No row passes through the
driver: it holds the partials, the plan and one file's quarantine part at a time.

Not covered: a reader that drops one input and makes up a row under a new locator for another is
not caught (counts, not identities, are compared); media that a manifest or a page refers to are
not planned inputs (their rows are: the manifest line, the page); a unit whose count could not be
taken (another payload shape, a file unreadable at plan time) is listed as unchecked. Without a
plan (``ledger_counts`` of loose files) only (1) is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import explain_build as xi
from curate.media_hours import HoursSum
from curate.spill import group_counts as _counts
from schemas.enums import Status
from schemas.files import atomic_write_json, atomic_write_parquet, atomic_write_text

if TYPE_CHECKING:
    from curate.config import LoadedPipeline

__all__ = ["UNASSIGNED", "finalize", "ledger_counts", "publish_pointers"]

UNASSIGNED = "unassigned"
_STATUSES = [s.value for s in Status]
_LEDGER_COLUMNS = [
    "status", "source", "layout", "modalities", "buckets", "tasks", "status_operator", "status_reason", "parent_id",
    "unit", "locator",
]  # fmt: skip
#: short and unplanned units listed by name in the summary (the counts cover all of them)
_LISTED_UNITS = 50
#: missing media URIs kept per source for ``media_root_hint``
_MISSING_SAMPLES = 8
_QUARANTINE_COLUMNS = ["id", "source", "locator", "status_operator", "status_reason", "status_detail"]
_NULL = pa.scalar(None, pa.string())


def _by_status() -> dict[str, int]:
    """``input`` rows came from the sources, ``derived`` rows from operators (clips of a video);
    each of them ends in exactly one status."""
    return {"input": 0, "derived": 0, **dict.fromkeys(_STATUSES, 0)}


def _or(values: pa.Array, default: str) -> pa.Array:
    """``value or default`` of each string (null and "" become ``default``)."""
    return pc.fill_null(pc.if_else(pc.equal(values, ""), _NULL, values), default)


def _list_or(lists: pa.Array, rows: np.ndarray, default: str | None) -> tuple[pa.Array, np.ndarray]:
    """The values of ``lists`` and the row each belongs to; a row whose list is null or empty
    gives ``default`` once (or nothing when ``default`` is None)."""
    flat = pc.list_flatten(lists)
    parents = rows[pc.list_parent_indices(lists).to_numpy()] if len(flat) else np.zeros(0, np.int64)
    if default is None:
        return flat, parents
    empty = pc.fill_null(pc.equal(pc.list_value_length(lists), 0), True).to_numpy(zero_copy_only=False)
    if not empty.any():
        return flat, parents
    extra = rows[empty]
    return pa.concat_arrays([flat.cast(pa.string()), pa.array([default] * len(extra), pa.string())]), np.concatenate([parents, extra])


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
        """Count the rows of ``table`` (vectorised: a few group-bys per file)."""
        if table.num_rows == 0:
            return
        inputs = table.select(["unit", "locator", "parent_id"]).filter(pc.is_null(table["parent_id"]))
        if inputs.num_rows:
            per_unit = inputs.group_by("unit").aggregate([("locator", "count_distinct")])
            for unit, n in zip(per_unit["unit"].to_pylist(), per_unit["locator_count_distinct"].to_pylist(), strict=True):
                self.accounted[unit] += n
        t = table.select(_LEDGER_COLUMNS).combine_chunks()
        n = t.num_rows
        rows = np.arange(n)
        status = t["status"].combine_chunks()
        parent = t["parent_id"].combine_chunks()
        derived = pc.fill_null(pc.not_equal(parent, ""), False)
        origin = pc.if_else(derived, pa.scalar("derived"), pa.scalar("input"))
        for o, c in _counts(origin):
            self.total[o] += c
        for st, c in _counts(status):
            self.total[st] = self.total.get(st, 0) + c
        dims = {
            "source": (t["source"].combine_chunks(), rows),
            "layout": (_or(t["layout"].combine_chunks(), "unknown"), rows),
            "modality": _list_or(t["modalities"].combine_chunks(), rows, "none"),
        }
        for dim, (values, at) in dims.items():
            idx = pa.array(at)
            into = self.by[dim]
            for v, o, st, c in _counts(values, origin.take(idx), status.take(idx)):
                counts = into[v]
                counts[o] += c
                counts[st] = counts.get(st, 0) + c
        is_kept = pc.fill_null(pc.equal(status, Status.KEPT.value), False)
        kept_rows = rows[is_kept.to_numpy(zero_copy_only=False)]
        if len(kept_rows):
            kept_idx = pa.array(kept_rows)
            buckets, _ = _list_or(t["buckets"].combine_chunks().take(kept_idx), np.arange(len(kept_rows)), UNASSIGNED)
            self.bucket.update({k[0]: k[1] for k in _counts(buckets)})
            tasks, _ = _list_or(t["tasks"].combine_chunks().take(kept_idx), np.arange(len(kept_rows)), None)
            if len(tasks):
                self.task.update({k[0]: k[1] for k in _counts(tasks)})
        rest = pc.invert(is_kept)
        if pc.any(rest).as_py():
            r = t.filter(rest)
            for st, op, reason, c in _counts(r["status"], _or(r["status_operator"].combine_chunks(), "?"), _or(r["status_reason"].combine_chunks(), "?")):
                self.reasons.setdefault(st, defaultdict(Counter))[op][reason] += c

    def merge(self, other: _Ledger) -> None:
        """Add another ledger's counts (first-seen order of reasons kept: merge in file order)."""
        self.accounted.update(other.accounted)
        for k, v in other.total.items():
            self.total[k] = self.total.get(k, 0) + v
        for dim, values in other.by.items():
            mine = self.by[dim]
            for key, counts in values.items():
                into = mine[key]
                for k, v in counts.items():
                    into[k] = into.get(k, 0) + v
        self.bucket.update(other.bucket)
        self.task.update(other.task)
        for st, ops in other.reasons.items():
            mine_ops = self.reasons.setdefault(st, defaultdict(Counter))
            for op, reasons in ops.items():
                mine_ops[op].update(reasons)

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




def _write_buckets(kept: pa.Table, samples: Path, part: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Write the kept rows once per bucket; returns where each row was published first: the
    files (relative to OUT), and per row its file's index in that list and its row in it."""
    n = kept.num_rows
    names: list[str] = []
    code = np.full(n, -1, dtype=np.int32)
    at = np.zeros(n, dtype=np.int64)
    if n == 0:
        return names, code, at
    lengths = pc.fill_null(pc.list_value_length(kept["buckets"]), 0)
    unassigned = pc.equal(lengths, 0)
    if pc.any(unassigned).as_py():
        atomic_write_parquet(kept.filter(unassigned), samples / f"bucket={UNASSIGNED}" / part)
        rows = np.flatnonzero(unassigned.to_numpy(zero_copy_only=False))
        names.append(f"samples/bucket={UNASSIGNED}/{part}")
        code[rows], at[rows] = 0, np.arange(len(rows))
    flat = pc.list_flatten(kept["buckets"])
    parents = pc.list_parent_indices(kept["buckets"])
    for bucket in sorted(pc.unique(flat).to_pylist()):
        rows_arr = pc.filter(parents, pc.equal(flat, bucket))
        atomic_write_parquet(kept.take(rows_arr), samples / f"bucket={bucket}" / part)
        rows = rows_arr.to_numpy()
        first = code[rows] < 0  # the first bucket (in sorted order) a row is published in
        code[rows[first]] = len(names)
        at[rows[first]] = np.flatnonzero(first)
        names.append(f"samples/bucket={bucket}/{part}")
    return names, code, at


def publish_pointers(n: int, is_kept: np.ndarray, kept: tuple[list[str], np.ndarray, np.ndarray], rejected: str | None) -> tuple[pa.Array, pa.Array]:
    """Per row of a final file: the published file (relative to OUT) and the row in it."""
    names, kept_code, kept_at = kept
    files = [*names, rejected or ""]
    code = np.full(n, len(names), dtype=np.int32)
    at = np.zeros(n, dtype=np.int64)
    kept_rows = np.flatnonzero(is_kept)
    code[kept_rows], at[kept_rows] = kept_code, kept_at
    rest = np.flatnonzero(~is_kept)
    at[rest] = np.arange(len(rest))
    file = pa.DictionaryArray.from_arrays(pa.array(code), pa.array(files, pa.string())).cast(pa.string())
    return file, pa.array(at)


def _media_counts(table: pa.Table) -> tuple[dict[str, list[int]], dict[str, list[tuple[str, str]]]]:
    """Per source, over input rows (parent_id null): [media referenced, media missing] from the
    readers' scores, and up to _MISSING_SAMPLES (manifest, missing uri) for ``media_root_hint``."""
    inputs = table.filter(pc.is_null(table["parent_id"]))
    sums: dict[str, list[int]] = {}
    samples: dict[str, list[tuple[str, str]]] = {}
    if inputs.num_rows == 0:
        return sums, samples
    scores = inputs["scores"].combine_chunks()
    referenced = pc.map_lookup(scores, "media_referenced", "last")
    has = pc.is_valid(referenced)
    if not pc.any(has).as_py():
        return sums, samples
    missing = pc.fill_null(pc.map_lookup(scores, "media_missing", "last"), 0.0)
    t = pa.table({"source": inputs["source"], "ref": pc.fill_null(referenced, 0.0), "miss": missing, "locator": inputs["locator"]}).filter(has)
    g = t.group_by("source", use_threads=False).aggregate([("ref", "sum"), ("miss", "sum")])
    for src, ref, miss in zip(g["source"].to_pylist(), g["ref_sum"].to_pylist(), g["miss_sum"].to_pylist(), strict=True):
        sums[src] = [int(ref), int(miss)]
    lacking = inputs.filter(pc.and_(has, pc.greater(missing, 0))).select(["source", "locator", "media"])
    for src in sums:
        if not sums[src][1]:
            continue
        rows = lacking.filter(pc.equal(lacking["source"], src)).slice(0, _MISSING_SAMPLES).to_pylist()
        found: list[tuple[str, str]] = []
        for r in rows:  # which of a row's media is missing is not recorded: the driver looks (os.path.exists)
            manifest = str(r["locator"]).rsplit(":", 1)[0]
            found += [(manifest, m["uri"]) for m in r["media"] or [] if m and m.get("uri") and not m.get("member")]
        samples[src] = found[: 4 * _MISSING_SAMPLES]
    return sums, samples


def finalize_file(i: int, path: str, out: str, partitions: int) -> dict[str, Any]:
    """One final file: publish its rows, write its quarantine part and index run; return its
    partial counts (a picklable dict, small: no rows)."""
    out_dir, work = Path(out), Path(out) / "_work" / "finalize"
    table = pq.read_table(path)
    ledger = _Ledger()
    ledger.add(table)
    part = f"part-{i:05d}.parquet"
    is_kept_arr = pc.fill_null(pc.equal(table["status"], Status.KEPT.value), False)
    is_kept = is_kept_arr.to_numpy(zero_copy_only=False)
    kept_where = _write_buckets(table.filter(is_kept_arr), out_dir / "samples", part)
    rest = table.filter(pc.invert(is_kept_arr))
    quarantine = None
    if rest.num_rows:
        atomic_write_parquet(rest, out_dir / "rejected" / part)
        q = rest.filter(pc.equal(rest["status"], Status.QUARANTINED.value))
        if q.num_rows:
            lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in q.select(_QUARANTINE_COLUMNS).to_pylist()]
            quarantine = str(atomic_write_text(work / f"quarantine-{i:05d}.jsonl", "".join(lines)))
    file, row = publish_pointers(table.num_rows, is_kept, kept_where, f"rejected/{part}" if rest.num_rows else None)
    rows = xi.index_rows(table, file, row)
    run = work / f"run-{i:05d}.arrow"
    xi.write_run(rows, run, partitions)
    examples = xi.trim_examples(rows.filter(pc.invert(is_kept_arr)).select(list(xi.EXAMPLE_COLUMNS)))
    media, missing = _media_counts(table)
    return {"ledger": ledger, "quarantine": quarantine, "run": str(run), "examples": examples, "media": media, "missing": missing}


def _tasks(fn: Callable[..., Any], args: list[tuple[Any, ...]], parallel: bool) -> Iterator[Any]:
    """``fn(*a)`` for each ``a`` of ``args``, results in order: Ray tasks (at most a few per
    CPU in flight, results held only until their predecessors are done) or in this process."""
    if not parallel:
        for a in args:
            yield fn(*a)
        return
    import ray

    remote = ray.remote(num_cpus=1, max_retries=3)(fn)
    window = max(4, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, int] = {}
    done: dict[int, Any] = {}
    nxt = 0
    submitted = 0
    while nxt < len(args):
        while submitted < len(args) and len(pending) < window and submitted < nxt + 4 * window:
            pending[remote.remote(*args[submitted])] = submitted
            submitted += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            done[pending.pop(ref)] = ray.get(ref)
        while nxt in done:
            yield done.pop(nxt)
            nxt += 1


def _concat_files(parts: Iterable[str | None], target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as sink:
        for p in parts:
            if p:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, sink, 1 << 20)
    tmp.replace(target)


def _media_summary(media: dict[str, list[int]], missing: dict[str, list[tuple[str, str]]], loaded: LoadedPipeline) -> tuple[dict[str, Any], dict[str, str]]:
    """summary.json's ``media_missing`` per source, and a ``media_root`` suggestion for each
    source where at least half its media are missing (when its reader can make one)."""
    summary = {src: {"referenced": ref, "missing": miss} for src, (ref, miss) in sorted(media.items())}
    hints: dict[str, str] = {}
    readers = {s.spec.name: s.reader for s in loaded.sources}
    for src, (ref, miss) in sorted(media.items()):
        hint_of = getattr(readers.get(src), "media_root_hint", None)
        if not miss or miss * 2 < ref or hint_of is None or not missing.get(src):
            continue
        manifest = missing[src][0][0]
        uris = [u for m, u in missing[src] if m == manifest and "://" not in u and not os.path.exists(u)][:_MISSING_SAMPLES]
        if not uris:
            continue
        try:
            hint = hint_of(manifest, uris)
        except Exception:  # noqa: BLE001 - a suggestion, never a failure
            hint = None
        if hint:
            hints[src] = hint
    return summary, hints


def finalize(
    out: Path,
    loaded: LoadedPipeline,
    final_dir: Path,
    info: dict[str, Any],
    plan: dict[str, dict[str, Any]] | None = None,
    *,
    parallel: bool | None = None,
) -> dict[str, Any]:
    """Write OUT/samples (by bucket), OUT/rejected, OUT/quarantine.jsonl, OUT/explain (the
    explain index) and OUT/summary.json from the last segment's files; returns the summary.
    ``plan`` (unit id -> source, planned input count, description) is what the rows are checked
    against (see the module docstring). ``parallel``: per-file work as Ray tasks (default: when
    Ray is initialised)."""
    if parallel is None:
        import ray

        parallel = ray.is_initialized()
    work = out / "_work" / "finalize"
    out.mkdir(parents=True, exist_ok=True)
    for d in (out / "samples", out / "rejected", out / xi.INDEX_DIR, work):
        shutil.rmtree(d, ignore_errors=True)
    files = sorted(final_dir.glob("*.parquet"))
    total_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    partitions = xi.partitions_for(total_rows)
    ledger = _Ledger(plan)
    quarantine: list[str | None] = []
    runs: list[str] = []
    examples: pa.Table | None = None
    media: dict[str, list[int]] = {}
    missing: dict[str, list[tuple[str, str]]] = {}
    args = [(i, str(f), str(out), partitions) for i, f in enumerate(files)]
    for partial in _tasks(finalize_file, args, parallel):
        ledger.merge(partial["ledger"])
        quarantine.append(partial["quarantine"])
        runs.append(partial["run"])
        ex = partial["examples"]
        examples = ex if examples is None else xi.trim_examples(pa.concat_tables([examples, ex], promote_options="default"))
        for src, (ref, miss) in partial["media"].items():
            mine = media.setdefault(src, [0, 0])
            mine[0] += ref
            mine[1] += miss
        for src, found in partial["missing"].items():
            have = missing.setdefault(src, [])
            have += found[: 4 * _MISSING_SAMPLES - len(have)]
    _concat_files(quarantine, out / "quarantine.jsonl")
    index_dir = out / xi.INDEX_DIR
    hours = HoursSum()
    repeated = indexed = 0
    for result in _tasks(xi.reduce_partition, [(p, runs, str(index_dir)) for p in range(partitions)], parallel):
        hours.merge_state(result["hours"])
        repeated += result["repeated_ids"]
        indexed += result["rows"]
    ex_table = examples if examples is not None else pa.table({c: pa.array([], pa.string()) for c in xi.EXAMPLE_COLUMNS})
    atomic_write_parquet(ex_table, index_dir / "reasons.parquet")
    xi.write_meta(out, partitions=partitions, rows=indexed, repeated_ids=repeated, stages=xi.stage_info(loaded), examples=ex_table.num_rows)
    shutil.rmtree(work, ignore_errors=True)
    media_missing, hints = _media_summary(media, missing, loaded)
    cfg = loaded.config
    summary = {
        "pipeline": cfg.name,
        "config": str(loaded.file),
        "output": str(out),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **ledger.as_dict(),
        "hours": hours.as_dict(),
        "media_missing": media_missing,
        **({"media_root_hints": hints} if hints else {}),
        "stages": [{"name": s.stage_name, "op": s.op} for s in cfg.stages],
        "run": info,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
