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

from operators._meta import dump_meta, load_meta
from operators.base import mark
from schemas.enums import ReasonCode, Status
from schemas.record import TEXT_FIELDS, from_table, normalise_text, to_table

__all__ = ["ABSORBED_TEXT_KEYS", "DECISION_SCHEMA", "absorb_texts", "apply_decisions", "decision_table", "texts_json"]

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
    took part (``eligible``, default: every kept row) gets 1."""
    by_id: dict[str, dict[str, Any]] = {d["id"]: d for d in decisions.to_pylist()}
    rows = from_table(table)
    took_part = eligible if eligible is not None else np.ones(len(rows), dtype=bool)
    for row, ok in zip(rows, took_part, strict=True):
        if row["status"] != Status.KEPT.value:
            continue
        row["lineage"] = [*(row.get("lineage") or []), stage]
        d = by_id.get(row["id"])
        if d is None:
            if ok:
                row["scores"][group_key] = 1.0
        elif d.get("error_reason"):
            mark(row, Status.QUARANTINED, stage, ReasonCode(d["error_reason"]), d.get("error_detail") or "")
        elif d["duplicate_of"] is None:
            row["scores"][group_key] = float(d["group_size"])
            if d.get("texts") or d.get("texts_omitted"):
                absorb_texts(row, json.loads(d.get("texts") or "[]"), d.get("texts_omitted") or 0)
        else:
            mark(row, Status.DUPLICATE, stage, reason, describe(d))
            row["duplicate_of"] = d["duplicate_of"]
    return to_table(rows)


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
