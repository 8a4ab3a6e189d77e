"""``curate explain OUT ID``: everything about one sample of a finished run.

It reads the explain index (``curate.explain_index``: one footer and one row group per lookup)
and the sample's published record (one row group of one file), never the run:

- source, locator, layout, modalities, language, ingest unit, the parent of a derived row;
- the lineage: every stage that touched the row, with the scores it writes (by the score keys
  each operator declares; scores no stage declares are listed apart);
- status, operator, reason and detail;
- for a duplicate: the survivor (id, locator, status) and the evidence, parsed from the detail
  the dedup operators write (``same content as X``: equal content hash, with both hashes;
  ``near-duplicate of X: <metric> <value> (<more>)``: phash and dhash Hamming distances and
  mirrored / cropped views, Jaccard, cosine, matched video frames and the duration ratio, audio
  landmarks that agree and their offset; a detail it does not know is shown as written);
- buckets and tasks, and which route rules match the record (the rules of the run's config,
  saved in the index, evaluated on the final record; ``scores.route_rules`` is the number that
  matched when the route ran);
- media (uri, format, size, duration, errors) and the first characters of its texts;
- with ``shards``: the shards of a ``curate mix`` output that carry it, with their keys, groups
  and repeat epochs. That part scans the shards' tar headers (a key is the id, or ``<id>_<n>`` for
  a repeat), O(shards), and reads only the JSON members of matching keys.

``examples(OUT, reason)`` lists rows of one reason (``reason`` or ``operator:reason``) from the
examples stored at finalize, ``rebuild(OUT)`` writes the index of a run finished before there was
one (from OUT/samples and OUT/rejected).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate.explain_index import ExplainIndex, IndexMissing

__all__ = ["AmbiguousId", "IndexMissing", "UnknownId", "examples", "explain", "parse_duplicate_detail", "rebuild"]

_TEXT_FIELDS = ("caption", "text", "transcript", "instruction", "response", "alt_text")
_MEDIA_FIELDS = ("role", "modality", "uri", "member", "bytes", "format", "width", "height", "duration_s", "fps",
                 "sample_rate", "channels", "codec", "sha256", "error")  # fmt: skip
_SNIPPET = 240

#: score name in a near-duplicate detail -> the evidence field it becomes
_METRICS = {
    "phash distance": "phash_distance",
    "jaccard": "jaccard",
    "cosine": "cosine",
    "landmark match": "landmark_score",
    "matched frames": "matched_frames_fraction",
}
_METRIC_RE = "|".join(re.escape(m) for m in sorted(_METRICS, key=len, reverse=True))
_BODY = re.compile(rf"^(?:via (?P<via>.*): )?(?P<metric>{_METRIC_RE}) (?P<value>\S+)(?: \((?P<more>.*)\))?$", re.S)
_MORE = (
    (re.compile(r"^dhash distance (?P<dhash_distance>\d+)(?:, (?P<transform>mirrored|cropped))?$"), {"dhash_distance": int}),
    (re.compile(r"^(?P<matched_landmarks>\d+) landmarks agree at offset (?P<offset_s>[-+]?[\d.]+) s$"), {"matched_landmarks": int, "offset_s": float}),
    (
        re.compile(r"^(?P<matched_frames>\d+)/(?P<compared_frames>\d+) frames within (?P<frame_threshold_bits>\d+) bits, duration ratio (?P<duration_ratio>[\d.]+)$"),
        {"matched_frames": int, "compared_frames": int, "frame_threshold_bits": int, "duration_ratio": float},
    ),
)


class UnknownId(KeyError):
    """No row of the run has this id (or id prefix)."""


class AmbiguousId(KeyError):
    """An id prefix that several rows share."""

    def __init__(self, prefix: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(prefix)
        self.candidates = candidates


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_duplicate_detail(detail: str | None, survivor_locator: str | None = None) -> dict[str, Any]:
    """The evidence in a dedup operator's ``status_detail``, as fields (``kind`` exact or near;
    ``metric`` and ``value``; ``via`` when the link that decided it goes through another member;
    per metric the numbers of the parenthesis). Unknown text comes back as ``{"detail": ...}``."""
    if not detail:
        return {}
    if detail.startswith("same content as "):
        return {"kind": "exact", "evidence": "equal content hash", "survivor_locator": detail[len("same content as ") :]}
    if not detail.startswith("near-duplicate of "):
        return {"detail": detail}
    rest = detail[len("near-duplicate of ") :]
    if survivor_locator and rest.startswith(survivor_locator + ": "):
        loc, body = survivor_locator, rest[len(survivor_locator) + 2 :]
    else:
        m = re.search(rf": (?=(?:via |(?:{_METRIC_RE}) ))", rest)
        if m is None:
            return {"kind": "near", "detail": detail}
        loc, body = rest[: m.start()], rest[m.end() :]
    out: dict[str, Any] = {"kind": "near", "survivor_locator": loc}
    m = _BODY.match(body)
    if m is None:
        out["detail"] = body
        return out
    if m["via"]:
        out["via"] = m["via"]
    out["metric"] = m["metric"]
    out[_METRICS[m["metric"]]] = _number(m["value"])
    more = m["more"]
    if more:
        for pattern, types in _MORE:
            mm = pattern.match(more)
            if mm:
                out.update({k: types.get(k, str)(v) for k, v in mm.groupdict().items() if v is not None})
                break
        else:
            out["more"] = more
    return out


#: record columns explain reads besides those the route rules look at
_RECORD_COLUMNS = ("id", "content_hash", "source", "layout", "modalities", "media", "scores", "lineage", *_TEXT_FIELDS)


def _route_columns(stages: list[dict[str, Any]]) -> set[str]:
    """The record fields the route rules of ``stages`` read (top-level names)."""
    names: set[str] = set()
    for st in stages:
        for rule in st.get("rules") or []:
            when = rule.get("when") or {}
            fields = [*(when.get("has") or []), *(when.get("missing") or []), *(r.get("field", "") for r in when.get("rules") or [])]
            names.update(f.split(".")[0] for f in fields if f)
    return names


def _record(out: Path, file: str | None, row: int | None, columns: set[str] | None = None) -> dict[str, Any] | None:
    """The published record at (file, row): ``columns`` of it (those the file has; every column
    when None), read from the one row group that holds it; None when the file is gone."""
    if not file or row is None:
        return None
    path = out / file
    if not path.is_file():
        return None
    pf = pq.ParquetFile(path)
    names = [c for c in pf.schema_arrow.names if columns is None or c in columns]
    start = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if row < start + n:
            rec = pf.read_row_group(g, columns=names).slice(row - start, 1).to_pylist()[0]
            rec["scores"] = dict(rec.get("scores") or [])
            return rec
        start += n
    return None


def _find(index: ExplainIndex, record_id: str) -> dict[str, Any]:
    rows = index.lookup(record_id)
    if not rows and len(record_id) >= 4:
        rows = index.by_prefix(record_id, limit=10)
        if len(rows) > 1:
            raise AmbiguousId(record_id, rows)
    if not rows:
        raise UnknownId(record_id)
    return rows[0]


def _lineage(row: dict[str, Any], stages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each stage of the row's lineage with the scores it writes; the scores no stage claims."""
    by_name = {s["name"]: s for s in stages}
    scores = row.get("scores") or {}
    lineage = list(row.get("lineage") or [])
    owner: dict[str, int] = {}
    for i, name in enumerate(lineage):  # the last stage that writes a key set its value
        for key in (by_name.get(name) or {}).get("writes", []):
            if key in scores:
                owner[key] = i
    steps = []
    for i, name in enumerate(lineage):
        info = by_name.get(name) or {}
        steps.append({"stage": name, "op": info.get("op", name), "scores": {k: scores[k] for k in sorted(scores) if owner.get(k) == i}})
    other = {k: v for k, v in sorted(scores.items()) if k not in owner}
    return steps, other


def _route(rec: dict[str, Any] | None, row: dict[str, Any], stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per route stage the row went through: its rules, which match the final record."""
    out = []
    lineage = row.get("lineage") or []
    for st in stages:
        if "rules" not in st or st["name"] not in lineage:
            continue
        from operators.route import RouteRule  # here: a row that was never routed does not pay the import

        matched, errors = [], []
        for raw in st["rules"]:
            try:
                rule = RouteRule.model_validate(raw)
                if rec is not None and rule.when.matches(rec):
                    matched.append({"rule": rule.name, "buckets": [b.value for b in rule.buckets], "tasks": rule.tasks})
            except Exception as e:  # noqa: BLE001 - an explanation shows what it can
                errors.append(f"{raw.get('name')}: {e}")
        entry: dict[str, Any] = {"stage": st["name"], "rules": len(st["rules"]), "matched": matched, "unmatched": st.get("unmatched")}
        at_run = (row.get("scores") or {}).get("route_rules")
        if at_run is not None:
            entry["matched_when_routed"] = int(at_run)
        if errors:
            entry["errors"] = errors
        out.append(entry)
    return out


def _brief(row: dict[str, Any] | None, record_id: str) -> dict[str, Any]:
    if row is None:
        return {"id": record_id, "found": False}
    return {k: row.get(k) for k in ("id", "source", "locator", "status", "status_operator", "status_reason")}


def _media(rec: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{k: m.get(k) for k in _MEDIA_FIELDS if m.get(k) is not None} for m in (rec or {}).get("media") or [] if m]


def _texts(rec: dict[str, Any] | None) -> dict[str, str]:
    out = {}
    for k in _TEXT_FIELDS:
        v = (rec or {}).get(k)
        if v:
            t = " ".join(str(v).split())
            out[k] = t[:_SNIPPET] + ("..." if len(t) > _SNIPPET else "")
    return out


def _hash_evidence(rec: dict[str, Any] | None, survivor: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rec is None or survivor is None:
        return out
    out["content_hash"] = rec.get("content_hash")
    out["survivor_content_hash"] = survivor.get("content_hash")
    out["content_hash_equal"] = rec.get("content_hash") == survivor.get("content_hash")
    mine = [m.get("sha256") for m in rec.get("media") or [] if m and m.get("sha256")]
    theirs = [m.get("sha256") for m in survivor.get("media") or [] if m and m.get("sha256")]
    if mine or theirs:
        out["media_sha256_equal"] = mine == theirs
    return out


def explain(out: str | Path, record_id: str, *, shards: str | Path | None = None) -> dict[str, Any]:
    """Everything about the row ``record_id`` (an id, or a unique prefix of at least 4
    characters) of the run in ``out``. Raises IndexMissing, UnknownId or AmbiguousId."""
    out = Path(out)
    index = ExplainIndex(out)
    row = _find(index, record_id)
    stages = index.meta.get("stages") or []
    rec = _record(out, row.get("file"), row.get("row"), {*_RECORD_COLUMNS, *_route_columns(stages)})
    steps, other = _lineage(row, stages)
    doc: dict[str, Any] = {
        "id": row["id"],
        "source": row.get("source"),
        "locator": row.get("locator"),
        "layout": row.get("layout"),
        "modalities": row.get("modalities") or [],
        "language": row.get("language"),
        "unit": row.get("unit"),
        "status": row.get("status"),
        "operator": row.get("status_operator"),
        "reason": row.get("status_reason"),
        "detail": row.get("status_detail"),
        "lineage": steps,
        "other_scores": other,
        "buckets": row.get("buckets") or [],
        "tasks": row.get("tasks") or [],
        "route": _route(rec, row, stages),
        "media": _media(rec),
        "texts": _texts(rec),
        "record": {"file": row.get("file"), "row": row.get("row"), "found": rec is not None},
    }
    if row.get("parent_id"):
        parents = index.lookup(row["parent_id"])
        doc["parent"] = _brief(parents[0] if parents else None, row["parent_id"])
    if row.get("duplicate_of"):
        found = index.lookup(row["duplicate_of"])
        surv = found[0] if found else None
        evidence = parse_duplicate_detail(row.get("status_detail"), surv.get("locator") if surv else None)
        if evidence.get("kind") == "exact":
            evidence.update(_hash_evidence(rec, _record(out, surv.get("file"), surv.get("row"), {"content_hash", "media"}) if surv else None))
        doc["duplicate"] = {"survivor": _brief(surv, row["duplicate_of"]), "evidence": evidence}
    if shards is not None:
        doc["shards"] = shard_hits(Path(shards), row["id"])
    return doc


def shard_hits(shards: Path, record_id: str) -> list[dict[str, Any]]:
    """The samples of the shards under ``shards`` whose key is ``record_id`` or
    ``<record_id>_<n>`` (a repeat), with their JSON's stage, group and repeat (the source epoch).
    Scans every tar's member headers: O(shards)."""
    if not shards.exists():
        raise FileNotFoundError(f"{shards}: no such shard folder")
    key_re = re.compile(rf"^{re.escape(record_id)}(?:_(\d+))?\.json$")
    hits = []
    tars = sorted(p for p in shards.rglob("*") if p.is_file() and (p.name.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst"))))
    for tar in tars:
        mode = "r:" if tar.name.endswith(".tar") else "r:*"
        try:
            with tarfile.open(tar, mode) as tf:
                for member in tf:
                    m = key_re.match(member.name.rsplit("/", 1)[-1])
                    if not m:
                        continue
                    body = json.loads(tf.extractfile(member).read())  # type: ignore[union-attr]
                    hits.append({
                        "shard": str(tar.relative_to(shards)), "key": member.name[: -len(".json")], "stage": body.get("stage"),
                        "group": body.get("group"), "repeat": body.get("repeat"), "use": int(m[1] or 0),
                    })  # fmt: skip
        except (tarfile.TarError, OSError, ValueError) as e:
            hits.append({"shard": str(tar.relative_to(shards)), "error": str(e)})
    return hits


def examples(out: str | Path, reason: str, limit: int = 20) -> list[dict[str, Any]]:
    """Rows of one reason (``reason`` or ``operator:reason``), in ingest order."""
    return ExplainIndex(out).examples(reason, limit)


def known_reasons(out: str | Path) -> list[str]:
    t = ExplainIndex(out).reasons()
    if t.num_rows == 0:
        return []
    return sorted({f"{o}:{r}" for o, r in zip(t["status_operator"].to_pylist(), t["status_reason"].to_pylist(), strict=True)})


# -- the index of a run finished before there was one -----------------------------------------


def rebuild(out: str | Path) -> dict[str, Any]:
    """Write OUT/explain from the published files (OUT/samples/bucket=*/part-N and
    OUT/rejected/part-N; the bucket copies of a row share N), in this process. Route rules and
    score owners come from the run's config (summary.json ``config``) when it still loads."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate import explain_build as xi

    out = Path(out)
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{out}: no summary.json (not a finished `curate run` output)")
    summary = json.loads(summary_path.read_text())
    parts: dict[str, list[Path]] = {}
    for f in sorted((out / "rejected").glob("part-*.parquet")):
        parts.setdefault(f.name, []).append(f)
    for f in sorted((out / "samples").glob("bucket=*/part-*.parquet")):
        parts.setdefault(f.name, []).append(f)
    total = sum(pq.ParquetFile(f).metadata.num_rows for fs in parts.values() for f in fs)
    partitions = xi.partitions_for(total)
    work = out / "_work" / "explain-rebuild"
    index_dir = out / xi.INDEX_DIR
    import shutil

    shutil.rmtree(index_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    runs, examples_t = [], None
    for i, (_part, files) in enumerate(sorted(parts.items())):
        tables = []
        for f in files:
            t = pq.read_table(f)
            rel = str(f.relative_to(out))
            tables.append(xi.index_rows(t, pa.array([rel] * t.num_rows, pa.string()), pa.array(np.arange(t.num_rows, dtype=np.int64))))
        t = pa.concat_tables(tables, promote_options="default")
        # a kept row is in every bucket it is eligible for: keep its first copy
        first = _first_rows(t["id"])
        t = t.filter(pa.array(first))
        run = work / f"run-{i:05d}.arrow"
        xi.write_run(t, run, partitions)
        runs.append(str(run))
        ex = xi.trim_examples(t.filter(pc.fill_null(pc.not_equal(t["status"], "kept"), True)).select(list(xi.EXAMPLE_COLUMNS)))
        examples_t = ex if examples_t is None else xi.trim_examples(pa.concat_tables([examples_t, ex]))
    repeated = rows = 0
    for p in range(partitions):
        done = xi.reduce_partition(p, runs, str(index_dir))
        repeated += done["repeated_ids"]
        rows += done["rows"]
    ex_table = examples_t if examples_t is not None else pa.table({c: pa.array([], pa.string()) for c in xi.EXAMPLE_COLUMNS})
    from schemas.files import atomic_write_parquet

    atomic_write_parquet(ex_table, index_dir / "reasons.parquet")
    stages = _stages_of(summary)
    xi.write_meta(out, partitions=partitions, rows=rows, repeated_ids=repeated, stages=stages, examples=ex_table.num_rows)
    shutil.rmtree(work, ignore_errors=True)
    return {"partitions": partitions, "rows": rows, "repeated_ids": repeated, "stages": len(stages)}


def _first_rows(ids: Any) -> Any:
    """Per row: whether it is the first of its id (an Arrow string array in, a numpy mask out)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    order = pc.sort_indices(ids).to_numpy()  # stable: the first copy of an id comes first
    s = ids.take(pa.array(order))
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = pc.not_equal(s.slice(1), s.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    keep = np.zeros(n, dtype=bool)
    keep[order[new]] = True
    return keep


def _stages_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    from curate import explain_build as xi

    try:
        from curate.config import load_pipeline

        return xi.stage_info(load_pipeline(Path(summary["config"])))
    except Exception:  # noqa: BLE001 - without the config: stage names and ops only
        return [{"name": s.get("name"), "op": s.get("op"), "writes": []} for s in summary.get("stages") or []]


# -- terminal rendering -----------------------------------------------------------------------

_STATUS_STYLE = {"kept": "green", "dropped": "yellow", "duplicate": "cyan", "quarantined": "red", "split": "magenta"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v) or "-"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    return "-" if v is None or v == "" else str(v)


def render(doc: dict[str, Any], console: Any) -> None:
    """``doc`` (from ``explain``) as a panel and tables."""
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    style = _STATUS_STYLE.get(doc.get("status") or "", "white")
    kv = Table.grid(padding=(0, 2))
    kv.add_column(style="bold")
    kv.add_column(overflow="fold")

    def line(k: str, v: Any) -> None:
        kv.add_row(k, escape(_fmt(v)))

    line("source", doc.get("source"))
    line("locator", doc.get("locator"))
    line("layout", doc.get("layout"))
    line("modalities", doc.get("modalities"))
    if doc.get("language"):
        line("language", doc["language"])
    line("unit", doc.get("unit"))
    if "parent" in doc:
        p = doc["parent"]
        line("derived from", f"{p.get('id')} {p.get('locator') or '(not found)'} [{p.get('status') or '?'}]")
    kv.add_row("status", f"[{style}]{escape(_fmt(doc.get('status')))}[/{style}]")
    if doc.get("operator") or doc.get("reason"):
        line("by / reason", f"{_fmt(doc.get('operator'))} / {_fmt(doc.get('reason'))}")
    if doc.get("detail"):
        line("detail", doc["detail"])
    line("buckets", doc.get("buckets"))
    line("tasks", doc.get("tasks"))
    rec = doc.get("record") or {}
    line("record", f"{rec.get('file')} row {rec.get('row')}" + ("" if rec.get("found") else " (file missing)"))
    parts: list[Any] = [kv]

    lin = Table(title="lineage (stages that touched it, with the scores each writes)", title_justify="left", show_edge=False)
    lin.add_column("#", justify="right")
    lin.add_column("stage")
    lin.add_column("op")
    lin.add_column("scores", overflow="fold")
    for i, step in enumerate(doc.get("lineage") or [], 1):
        lin.add_row(str(i), escape(step["stage"]), escape(str(step.get("op"))), escape(_fmt(step.get("scores") or {})))
    if doc.get("other_scores"):
        lin.add_row("", "(other scores)", "", escape(_fmt(doc["other_scores"])))
    parts.append(lin)

    if "duplicate" in doc:
        d = doc["duplicate"]
        s = d["survivor"]
        t = Table(title="duplicate of", title_justify="left", show_edge=False, show_header=False)
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        t.add_row("survivor", escape(f"{s.get('id')}  {s.get('locator') or '(not in this run)'}  [{s.get('status') or '?'}]"))
        for k, v in (d.get("evidence") or {}).items():
            if k != "survivor_locator":
                t.add_row(escape(k), escape(_fmt(v)))
        parts.append(t)

    for r in doc.get("route") or []:
        t = Table(title=f"route stage {r['stage']}: {len(r['matched'])} of {r['rules']} rules match the record"
                  + (f" ({r['matched_when_routed']} when routed)" if "matched_when_routed" in r else ""),
                  title_justify="left", show_edge=False)  # fmt: skip
        for c in ("rule", "buckets", "tasks"):
            t.add_column(c)
        for m in r["matched"]:
            t.add_row(escape(m["rule"]), escape(_fmt(m["buckets"])), escape(_fmt(m["tasks"])))
        if not r["matched"]:
            t.add_row("(none)", f"unmatched: {r.get('unmatched')}", "")
        parts.append(t)

    if doc.get("media"):
        t = Table(title="media", title_justify="left", show_edge=False)
        for c in ("modality", "uri", "what", "error"):
            t.add_column(c, overflow="fold")
        for m in doc["media"]:
            what = {k: m[k] for k in ("format", "width", "height", "duration_s", "bytes") if k in m}
            uri = m.get("uri", "") + (f"#{m['member']}" if m.get("member") else "")
            t.add_row(escape(str(m.get("modality"))), escape(uri), escape(_fmt(what)), escape(m.get("error") or ""))
        parts.append(t)
    if doc.get("texts"):
        t = Table(title="texts", title_justify="left", show_edge=False, show_header=False)
        t.add_column(style="bold")
        t.add_column(overflow="fold")
        for k, v in doc["texts"].items():
            t.add_row(k, escape(v))
        parts.append(t)
    if "shards" in doc:
        t = Table(title=f"in shards ({len(doc['shards'])} samples)", title_justify="left", show_edge=False)
        for c in ("shard", "key", "stage", "group", "repeat (epoch)"):
            t.add_column(c, overflow="fold")
        for h in doc["shards"]:
            t.add_row(*(escape(_fmt(h.get(k))) for k in ("shard", "key", "stage", "group", "repeat")))
        if not doc["shards"]:
            t.add_row("(not in any shard)", "", "", "", "")
        parts.append(t)
    console.print(Panel(Group(*parts), title=f"[bold]{escape(doc['id'])}[/bold] [{style}]{escape(_fmt(doc.get('status')))}[/{style}]", title_align="left"))


def render_examples(rows: list[dict[str, Any]], reason: str, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{len(rows)} rows with reason {reason}", title_justify="left", show_edge=False)
    for c in ("id", "source", "locator", "status", "operator", "detail"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(escape(_fmt(r.get(k))) for k in ("id", "source", "locator", "status", "status_operator", "status_detail")))
    console.print(t)
