"""What every dedup operator decides, in one shape, and how a decision changes a record.

A decision is one row per id whose record changes: a duplicate (``duplicate_of`` = the survivor's
id), a survivor of a group (``duplicate_of`` null, ``group_size`` > 1), or a row that could not be
signed (``error_reason`` / ``error_detail``: it is quarantined). Rows without a decision stay as
they are (a kept row gets group size 1).

A survivor's decision may carry ``texts``: its duplicates' texts to absorb, a JSON list of
``ABSORBED_TEXT_KEYS`` objects (field, text, source, language, the duplicate's id, whether the text
was cut short), and ``texts_omitted``, the distinct texts a cap left out. ``texts`` is JSON text,
not a list of structs, because the engine joins each decision to its file with an Arrow join,
which takes no nested columns. ``absorb_texts`` says where they go in the record (``dedup_exact``
fills them; an operator that leaves them null changes no text)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators._meta import dump_meta, load_meta
from schemas.enums import ReasonCode, Status
from schemas.record import SAMPLE_SCHEMA, TEXT_FIELDS, from_table, normalise_text, to_table

__all__ = ["ABSORBED_TEXT_KEYS", "DECISION_SCHEMA", "absorb_texts", "apply_decisions", "conform", "decision_table", "texts_json"]

#: one text a survivor absorbs from a duplicate: the record field it came from (caption, alt_text,
#: transcript...), the text, the duplicate's source, language and id, and whether the text was
#: cut short to the operator's per-text cap
ABSORBED_TEXT_KEYS: tuple[str, ...] = ("field", "text", "source", "language", "from_id", "truncated")

DECISION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("_file", pa.string()),  # the file the id lives in
        pa.field("duplicate_of", pa.string()),  # null for a survivor (and an error)
        pa.field("survivor_locator", pa.string()),
        pa.field("group_size", pa.int64()),
        pa.field("score", pa.float64()),  # near-duplicates: distance or similarity to the survivor
        pa.field("detail", pa.string()),  # near-duplicates: the numbers behind the score
        pa.field("error_reason", pa.string()),  # a ReasonCode: the row could not be signed
        pa.field("error_detail", pa.string()),
        pa.field("texts", pa.string()),  # survivors: JSON list of their duplicates' texts to absorb
        pa.field("texts_omitted", pa.int64()),  # survivors: distinct texts left out by the cap
    ]
)


def decision_table(n: int, **columns: Any) -> pa.Table:
    """A DECISION_SCHEMA table of ``n`` rows from the given columns (the others null)."""
    cols = {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in DECISION_SCHEMA}
    return pa.table(cols, schema=DECISION_SCHEMA)


def apply_decisions(
    table: pa.Table,
    decisions: pa.Table,
    *,
    stage: str,
    reason: ReasonCode,
    group_key: str,
    describe: Callable[[dict[str, Any]], str],
    eligible: np.ndarray | None = None,
) -> pa.Table:
    """Every kept row: lineage gets ``stage``; a duplicate gets status ``duplicate`` with ``reason``
    and ``describe(decision)``; a survivor gets ``scores[group_key]`` = its group size and absorbs
    the decision's ``texts`` (``absorb_texts``); an error quarantines it; an undecided row that
    took part (``eligible``, default: every kept row) gets 1. The table comes back in
    SAMPLE_SCHEMA (as ``to_table(from_table(table))`` would give it: missing columns null, null
    scores empty).

    Column-wise (Arrow and numpy, ~1-2 µs a row): only duplicates (``describe``) and survivors
    with texts to absorb go through Python, row by row."""
    table = conform(table)
    n = table.num_rows
    if n == 0:
        return table
    decisions = _last_per_id(decisions)
    pos = pc.index_in(table["id"], value_set=decisions["id"]) if decisions.num_rows else pa.nulls(n, pa.int32())
    pos = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    kept = pc.fill_null(pc.equal(table["status"], Status.KEPT.value), False).to_numpy(zero_copy_only=False)
    took_part = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    has = kept & (pos >= 0)
    at = np.where(has, pos, 0)

    def col(name: str) -> pa.Array:  # the decision's column per row (garbage where not ``has``)
        if name not in decisions.column_names or not decisions.num_rows:
            return pa.nulls(n, DECISION_SCHEMA.field(name).type)
        return decisions[name].combine_chunks().take(pa.array(at))

    err_reason = col("error_reason")
    err = has & pc.fill_null(pc.greater(pc.utf8_length(err_reason), 0), False).to_numpy(zero_copy_only=False)
    dup_of = col("duplicate_of")
    is_dup = has & ~err & pc.is_valid(dup_of).to_numpy(zero_copy_only=False)
    surv = has & ~err & ~is_dup
    group_size = col("group_size")
    value = np.where(surv, pc.fill_null(group_size, 0).to_numpy(zero_copy_only=False).astype(np.float64), 1.0)
    set_score = (kept & ~has & took_part) | surv

    out = {name: table[name].combine_chunks() for name in table.column_names}
    out["lineage"] = _append_to_lists(out["lineage"], kept, stage)
    out["scores"] = _set_map_key(out["scores"], set_score, group_key, value)
    if err.any():
        codes = {r: str(ReasonCode(r)) for r in set(err_reason.filter(pa.array(err)).to_pylist())}
        mask = pa.array(err)
        out["status"] = pc.if_else(mask, Status.QUARANTINED.value, out["status"])
        out["status_operator"] = pc.if_else(mask, stage, out["status_operator"])
        reasons = pa.array([codes.get(r) for r in err_reason.to_pylist()], pa.string())
        out["status_reason"] = pc.if_else(mask, reasons, out["status_reason"])
        out["status_detail"] = pc.if_else(mask, pc.fill_null(col("error_detail"), ""), out["status_detail"])
    if is_dup.any():
        rows = np.flatnonzero(is_dup)
        texts = [describe(d) for d in decisions.take(pa.array(pos[rows])).to_pylist()]
        detail = _scatter(pa.array(texts, pa.string()), rows, n)
        mask = pa.array(is_dup)
        out["status"] = pc.if_else(mask, Status.DUPLICATE.value, out["status"])
        out["status_operator"] = pc.if_else(mask, stage, out["status_operator"])
        out["status_reason"] = pc.if_else(mask, str(reason), out["status_reason"])
        out["status_detail"] = pc.if_else(mask, detail, out["status_detail"])
        out["duplicate_of"] = pc.if_else(mask, dup_of, out["duplicate_of"])
    result = pa.table(out, schema=SAMPLE_SCHEMA)
    texts_col, omitted = col("texts"), col("texts_omitted")
    absorb = surv & (
        pc.fill_null(pc.greater(pc.utf8_length(texts_col), 0), False).to_numpy(zero_copy_only=False)
        | (pc.fill_null(omitted, 0).to_numpy(zero_copy_only=False) != 0)
    )
    if absorb.any():  # survivors that take their duplicates' texts: row by row
        rows = np.flatnonzero(absorb)
        patched = from_table(result.take(pa.array(rows)))
        for row, t, o in zip(patched, texts_col.take(pa.array(rows)).to_pylist(), omitted.take(pa.array(rows)).to_pylist(), strict=True):
            absorb_texts(row, json.loads(t or "[]"), o or 0)
        index = np.arange(n)
        index[rows] = n + np.arange(len(rows))
        result = pa.concat_tables([result, to_table(patched)]).take(pa.array(index))
    return result


def conform(table: pa.Table) -> pa.Table:
    """``table`` in SAMPLE_SCHEMA, as ``to_table(from_table(table))`` gives it: its columns in
    order and type (extra ones dropped, missing ones null) and null ``scores`` as empty maps."""
    if table.schema.equals(SAMPLE_SCHEMA) and table["scores"].null_count == 0:
        return table
    cols = []
    for f in SAMPLE_SCHEMA:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        c = table[f.name]
        if not c.type.equals(f.type):
            try:
                c = c.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a struct with other fields: as the row path does
                c = pa.Table.from_pylist(table.select([f.name]).to_pylist(), schema=pa.schema([f]))[f.name]
        cols.append(c)
    out = pa.Table.from_arrays(cols, schema=SAMPLE_SCHEMA)
    if out["scores"].null_count:  # rebuilt without nulls
        s = out["scores"].combine_chunks()
        fixed = _set_map_key(s, np.zeros(len(s), bool), "", np.zeros(len(s)))
        out = out.set_column(out.schema.get_field_index("scores"), SAMPLE_SCHEMA.field("scores"), fixed)
    return out


def _last_per_id(decisions: pa.Table) -> pa.Table:
    """One decision per id, the last when an id has several (as a dict by id keeps it)."""
    if decisions.num_rows < 2 or "id" not in decisions.column_names:
        return decisions
    ids = decisions["id"]
    if pc.count_distinct(ids).as_py() == decisions.num_rows:
        return decisions
    reversed_idx = pa.array(np.arange(decisions.num_rows - 1, -1, -1))
    rev_ids = ids.take(reversed_idx)
    first = pc.index_in(rev_ids, value_set=pc.unique(rev_ids))
    keep = np.zeros(decisions.num_rows, dtype=bool)
    keep[np.unique(first.to_numpy(zero_copy_only=False), return_index=True)[1]] = True
    return decisions.take(reversed_idx).filter(pa.array(keep))


def _scatter(values: pa.Array, rows: np.ndarray, n: int) -> pa.Array:
    """A length-``n`` array with ``values`` at ``rows`` and nulls elsewhere."""
    index = np.full(n, 0, dtype=np.int64)
    index[rows] = np.arange(len(rows))
    mask = np.ones(n, dtype=bool)
    mask[rows] = False
    return values.take(pa.array(index, mask=mask))


def _append_to_lists(lists: pa.Array, where: np.ndarray, item: str) -> pa.Array:
    """``lists`` (list<string>) with ``item`` appended where ``where`` (a null list there becomes [item])."""
    n = len(lists)
    if not where.any():
        return lists
    valid = pc.is_valid(lists).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(lists)
    new_len = lengths + where
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(new_len, out=offsets[1:])
    take = np.full(int(offsets[-1]), len(flat), dtype=np.int64)  # the appended item by default
    old_start = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=old_start[1:])
    owner = np.repeat(np.arange(n), lengths)
    within = np.arange(len(flat)) - old_start[owner]
    take[offsets[owner] + within] = np.arange(len(flat))
    values = pa.concat_arrays([flat.cast(pa.string()), pa.array([item], pa.string())]).take(pa.array(take))
    mask = pa.array(~(valid | where)) if not (valid | where).all() else None
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, type=lists.type, mask=mask)


def _set_map_key(maps: pa.Array, where: np.ndarray, key: str, value: np.ndarray) -> pa.Array:
    """``maps`` (map<string, double>) with ``key`` set to ``value`` where ``where``: an existing
    entry keeps its place, else the entry goes last. Null maps become empty ones."""
    n = len(maps)
    maps = maps.cast(pa.list_(pa.struct([pa.field("key", pa.string()), pa.field("value", pa.float64())])))
    lengths = pc.fill_null(pc.list_value_length(maps), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(maps)
    keys = flat.field("key") if len(flat) else pa.array([], pa.string())
    items = flat.field("value").to_numpy(zero_copy_only=False).astype(np.float64) if len(flat) else np.zeros(0)
    owner = np.repeat(np.arange(n), lengths)
    hit = pc.fill_null(pc.equal(keys, key), False).to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, bool)
    hit &= where[owner]
    items = np.where(hit, value[owner], items)
    has_key = np.zeros(n, dtype=bool)
    has_key[owner[hit]] = True
    add = where & ~has_key
    new_len = lengths + add
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(new_len, out=offsets[1:])
    total = int(offsets[-1])
    take = np.full(total, -1, dtype=np.int64)
    old_start = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=old_start[1:])
    within = np.arange(len(flat)) - old_start[owner]
    take[offsets[owner] + within] = np.arange(len(flat))
    added_at = offsets[1:][add] - 1
    all_keys = pa.concat_arrays([keys.cast(pa.string()), pa.array([key], pa.string())])
    key_take = np.where(take >= 0, take, len(flat))
    new_items = np.empty(total, dtype=np.float64)
    new_items[take >= 0] = items[take[take >= 0]]
    new_items[added_at] = value[add]
    return pa.MapArray.from_arrays(
        pa.array(offsets.astype(np.int32)), all_keys.take(pa.array(key_take)), pa.array(new_items, pa.float64())
    )


def texts_json(texts: list[dict[str, Any]] | None) -> str | None:
    """The ``texts`` decision value for a list of ABSORBED_TEXT_KEYS dicts (None when empty)."""
    if not texts:
        return None
    return json.dumps([{k: t.get(k) for k in ABSORBED_TEXT_KEYS} for t in texts], ensure_ascii=False)


def _has(row: dict[str, Any], field: str) -> bool:
    value = row.get(field)
    return isinstance(value, str) and bool(value.strip())


def absorb_texts(row: dict[str, Any], texts: list[dict[str, Any]], omitted: int = 0) -> None:
    """The survivor ``row`` takes its duplicates' ``texts`` (ABSORBED_TEXT_KEYS dicts, best
    duplicate first), in place; no text is dropped and none is repeated:

    1. a row without any text takes the texts of the first duplicate with a whole (not truncated)
       text, one per field, and that duplicate's language when it has one;
    2. an empty field takes the first whole text of that field in the row's language (both unset
       counts as the same);
    3. the others go to ``meta["alt_captions"]`` as ``{field, text, source, language, id}`` (with
       ``truncated: true`` when cut short), after any the row already had.

    ``meta["absorbed_fields"]`` records where the texts of 1 and 2 came from (``{field: {id,
    source, language}}``), ``meta["alt_captions_omitted"]`` adds ``omitted``. Texts equal to one of
    the row's own (or to one before them) after case and whitespace folding are skipped. A source's
    own ``alt_captions`` that is not a list is left alone (ours go to ``alt_captions_dedup``)."""
    own = {normalise_text(row[f]) for f in TEXT_FIELDS if _has(row, f)}
    pending: list[dict[str, Any]] = []
    for t in texts:
        norm = normalise_text(t.get("text") or "")
        if norm and norm not in own:
            own.add(norm)
            pending.append(t)
    used = [False] * len(pending)
    filled: dict[str, dict[str, Any]] = {}

    def take(i: int) -> None:
        t = pending[i]
        row[t["field"]] = t["text"]
        used[i] = True
        filled[t["field"]] = {"id": t.get("from_id"), "source": t.get("source"), "language": t.get("language")}

    whole = [i for i, t in enumerate(pending) if not t.get("truncated") and t.get("field") in TEXT_FIELDS]
    if not any(_has(row, f) for f in TEXT_FIELDS) and whole:
        donor = pending[whole[0]]
        for i in whole:
            if pending[i].get("from_id") == donor.get("from_id") and not _has(row, pending[i]["field"]):
                take(i)
        if donor.get("language"):
            row["language"] = donor["language"]
    for i in whole:
        t = pending[i]
        if not used[i] and not _has(row, t["field"]) and (t.get("language") or None) == (row.get("language") or None):
            take(i)
    rest = [
        {
            "field": t.get("field"),
            "text": t.get("text"),
            "source": t.get("source"),
            "language": t.get("language"),
            "id": t.get("from_id"),
            **({"truncated": True} if t.get("truncated") else {}),
        }
        for t, u in zip(pending, used, strict=True)
        if not u
    ]
    if not (rest or filled or omitted):
        return
    meta = load_meta(row)
    if rest:
        earlier = meta.get("alt_captions")
        key = "alt_captions" if earlier is None or isinstance(earlier, list) else "alt_captions_dedup"
        meta[key] = [*(meta.get(key) or []), *rest]
    if filled:
        meta["absorbed_fields"] = {**(meta.get("absorbed_fields") or {}), **filled}
    if omitted:
        meta["alt_captions_omitted"] = int(meta.get("alt_captions_omitted") or 0) + int(omitted)
    row["meta"] = dump_meta(meta)
