"""Exact deduplication over the whole dataset: same media bytes (or same normalised text for
text-only rows) means duplicate. The survivor is chosen by a stated policy; every other row of
the group is marked ``duplicate`` with the survivor's id.

Only small key rows (id, content hash, ranking numbers) travel between workers; the records stay
in their files and receive the decisions (see ``GlobalOperator``).

Survivor: the best row by the policy's number (``policy``: first_seen gives every row 0); among
equal numbers, with ``prefer_text`` (default), a row with any text (``TEXT_FIELDS``: caption,
alt_text, transcript...) before one without; then ingest order (``seq``); then id. So
``first_seen`` means "the first-seen row among those with text" unless ``prefer_text: false``.

No text is lost (``absorb_texts``, default): rows keyed on their media bytes (paired image, video
and audio layouts, see ``schemas.record.content_hash``) can differ in their texts, so their key
rows carry each row's texts (each cut to ``max_text_bytes``, with a hash of the whole normalised
text), source and language. ``decide`` gives the survivor its duplicates' texts, in survivor
order: texts identical (after case and whitespace folding) to one of the survivor's own or to one
already taken are not repeated; at most ``max_absorbed_texts`` per survivor, the distinct texts
past that counted (``texts_omitted``; the decision's ``texts`` are JSON, see ``decisions``). Rows
keyed on their text (text rows, documents, conversations) carry none: their duplicates' texts
are theirs by construction. ``dedup_exact`` reads ``schemas.record``'s private layout and
task-field sets for this, so the two cannot drift apart.

The survivor record then (``operators.dedup.decisions.absorb_texts``):

1. a survivor without any text takes the texts of its best duplicate that has some (each field
   it lacks, and that row's language when it has one), so a router that needs a caption keeps it;
2. an empty field of the survivor takes a duplicate's text of that field in the same language
   (both unset counts as the same): a caption row absorbs its copy's alt text or transcript;
3. every other text goes to ``meta["alt_captions"]``: ``[{field, text, source, language, id}]``
   (``truncated: true`` when cut to ``max_text_bytes``; a cut text never fills a field);
   ``meta["absorbed_fields"]`` names where the texts of step 1 and 2 came from
   (``{field: {id, source, language}}``) and ``meta["alt_captions_omitted"]`` counts the cap's cut.

Duplicates keep their own texts (the ledger shows them as they were). The near-duplicate
operators share the survivor policy (``SurvivorPolicyParams``, ``prefer_text`` included) but do not
absorb texts (see ``operators.dedup.near``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from operators.base import GlobalOperator, Params
from operators.dedup.decisions import DECISION_SCHEMA, apply_decisions, decision_table, texts_json
from operators.registry import register_operator
from schemas.enums import ReasonCode, Status
from schemas.record import _MEDIA_KEYED_LAYOUTS, _TASK_FIELDS, TEXT_FIELDS, normalise_text

__all__ = ["ExactDedup", "ExactDedupParams", "SurvivorPolicyParams", "rows_with_text"]

_NO_DECISIONS = DECISION_SCHEMA.empty_table().drop_columns(["_file"])

#: a row's text in the summary: the text cut to max_text_bytes, whether it was cut, and a hash
#: of the whole normalised text (what "identical" means)
SUMMARY_TEXT_TYPE = pa.struct(
    [
        pa.field("field", pa.string()),
        pa.field("text", pa.string()),
        pa.field("hash", pa.string()),
        pa.field("cut", pa.bool_()),
    ]
)


class SurvivorPolicyParams(Params):
    """Which row of a duplicate group survives (shared by every dedup operator)."""

    policy: str = Field(
        "first_seen",
        pattern="^(first_seen|highest_resolution|longest|best_score)$",
        description="which row of a duplicate group survives: first_seen (ingest order), highest_resolution "
        "(scores.pixels), longest (scores.duration_s, else text_chars), best_score (scores[score_key])",
    )
    score_key: str | None = Field(None, description="score used by policy best_score (higher wins)")
    prefer_text: bool = Field(
        True,
        description="among rows the policy ranks equal, one with any text (caption, alt_text, transcript...) "
        "survives over one without, before ingest order",
    )


class ExactDedupParams(SurvivorPolicyParams):
    absorb_texts: bool = Field(
        True,
        description="the survivor absorbs its duplicates' texts (captions, alt texts, transcripts, translations): "
        "fills its empty fields, the rest go to meta.alt_captions with source and language",
    )
    max_text_bytes: int = Field(
        2048, ge=16, description="each text carried to the survivor is cut to this many UTF-8 bytes (flagged truncated)"
    )
    max_absorbed_texts: int = Field(
        32,
        ge=1,
        description="distinct texts absorbed per survivor; past that they are counted (meta.alt_captions_omitted)",
    )


def _score(table: pa.Table, key: str) -> pa.Array:
    """scores[key] per row as float64 (null where absent)."""
    values = pc.map_lookup(table["scores"], pa.scalar(key), "first")
    return pc.cast(values, pa.float64())


def _non_blank(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per row: the string is set and not only whitespace."""
    ok = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)
    return pc.fill_null(ok, False).to_numpy(zero_copy_only=False)


def rows_with_text(table: pa.Table) -> np.ndarray:
    """Per row: whether any of ``TEXT_FIELDS`` holds text (what ``prefer_text`` prefers)."""
    out = np.zeros(table.num_rows, dtype=bool)
    for name in TEXT_FIELDS:
        if name in table.column_names:
            out |= _non_blank(table[name])
    return out


def _keyed_on_media(table: pa.Table) -> np.ndarray:
    """Rows whose content hash can be their media bytes alone (``content_hash``: a paired media
    layout without task fields), so their duplicates' texts may differ. Over-inclusive (a row whose
    media lack a sha256 falls back to a text key): such a row only carries texts for nothing."""
    out = pc.fill_null(pc.is_in(table["layout"], pa.array(sorted(_MEDIA_KEYED_LAYOUTS), pa.string())), False)
    out = out.to_numpy(zero_copy_only=False).copy()
    for name in _TASK_FIELDS:
        col = table[name]
        if pa.types.is_string(col.type):
            out &= ~pc.fill_null(pc.greater(pc.utf8_length(col), 0), False).to_numpy(zero_copy_only=False)
        elif pa.types.is_list(col.type):
            out &= ~pc.fill_null(pc.greater(pc.list_value_length(col), 0), False).to_numpy(zero_copy_only=False)
        else:
            out &= ~pc.is_valid(col).to_numpy(zero_copy_only=False)
    return out


def text_hash(text: str) -> str:
    """Hash of the normalised text: two texts are identical when these are equal."""
    return hashlib.blake2b(normalise_text(text).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _cut(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", "ignore"), True


def _texts(table: pa.Table, max_bytes: int) -> pa.Array:
    """Per row: its texts (SUMMARY_TEXT_TYPE list; null when none or keyed on its text)."""
    keyed = _keyed_on_media(table)
    present = {name: _non_blank(table[name]) & keyed for name in TEXT_FIELDS}
    values = {name: table[name].to_pylist() if present[name].any() else None for name in TEXT_FIELDS}
    out: list[list[dict[str, Any]] | None] = [None] * table.num_rows
    for i in np.flatnonzero(np.logical_or.reduce(list(present.values()))):
        items = []
        for name in TEXT_FIELDS:
            if present[name][i]:
                text = values[name][i]
                cut, was_cut = _cut(text, max_bytes)
                items.append({"field": name, "text": cut, "hash": text_hash(text), "cut": was_cut})
        out[i] = items
    return pa.array(out, pa.list_(SUMMARY_TEXT_TYPE))


@register_operator
class ExactDedup(GlobalOperator[ExactDedupParams]):
    """Merge rows whose content hash is equal (media bytes; normalised text for text-only rows);
    the survivor absorbs its duplicates' texts (see the module docstring)."""

    name = "dedup_exact"
    writes = {"dup_count": "size of the row's exact-duplicate group (1 = unique; set on kept rows)"}

    def _primary(self, table: pa.Table) -> pa.Array:
        """The policy's number: higher is better (0 for first_seen)."""
        policy = self.params.policy
        if policy == "highest_resolution":
            v = _score(table, "pixels")
        elif policy == "longest":
            v = pc.coalesce(_score(table, "duration_s"), _score(table, "text_chars"))
        elif policy == "best_score":
            v = _score(table, self.params.score_key or "")
        else:
            return pa.array(np.zeros(table.num_rows))
        return pc.fill_null(v, float("-inf"))

    def summarize(self, table: pa.Table) -> pa.Table:
        usable = pc.and_(pc.equal(table["status"], Status.KEPT.value), pc.is_valid(table["content_hash"]))
        live = table.filter(pc.fill_null(usable, False))
        cols: dict[str, Any] = {
            "id": live["id"],
            "_key": live["content_hash"],
            "primary": self._primary(live),
            "seq": live["seq"],
            "locator": live["locator"],
            "has_text": pa.array(rows_with_text(live), pa.bool_()),
        }
        if self.params.absorb_texts:
            cols.update(
                texts=_texts(live, self.params.max_text_bytes), source=live["source"], language=live["language"]
            )
        return pa.table(cols)

    def decide(self, summary: pa.Table) -> pa.Table:
        if summary.num_rows == 0:
            return _NO_DECISIONS
        # rank inside each key: best primary first, then (prefer_text) rows with text, then ingest
        # order, then id (deterministic)
        t = summary.append_column("neg_primary", pc.negate(summary["primary"]))
        textless = np.zeros(t.num_rows, dtype=np.int8)
        if self.params.prefer_text and "has_text" in t.column_names:
            textless = (~pc.fill_null(t["has_text"], False).to_numpy(zero_copy_only=False)).astype(np.int8)
        t = t.append_column("textless", pa.array(textless))
        t = t.sort_by(
            [
                ("_key", "ascending"),
                ("neg_primary", "ascending"),
                ("textless", "ascending"),
                ("seq", "ascending"),
                ("id", "ascending"),
            ]
        )
        keys = t["_key"].combine_chunks()
        n = t.num_rows
        first = np.ones(n, dtype=bool)
        if n > 1:
            first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        group = np.cumsum(first) - 1
        sizes = np.bincount(group)
        row_size = sizes[group]
        in_dup_group = row_size > 1
        if not in_dup_group.any():
            return _NO_DECISIONS
        leader = np.flatnonzero(first)[group]  # index of each row's survivor
        ids = t["id"].combine_chunks()
        locs = t["locator"].combine_chunks()
        pick = np.flatnonzero(in_dup_group)
        lead = leader[pick]
        is_survivor = lead == pick
        columns: dict[str, Any] = {}
        if self.params.absorb_texts and "texts" in t.column_names:
            columns["texts"], columns["texts_omitted"] = self._absorbed(t, pick, is_survivor)
        return decision_table(
            len(pick),
            id=ids.take(pick),
            duplicate_of=pc.if_else(pa.array(is_survivor), pa.scalar(None, pa.string()), ids.take(lead)),
            survivor_locator=locs.take(lead),
            group_size=pa.array(row_size[pick].astype(np.int64)),
            **columns,
        ).drop_columns(["_file"])  # the engine adds each id's file

    def _absorbed(self, t: pa.Table, pick: np.ndarray, is_survivor: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """Per picked row (sorted: each group's survivor first, then its duplicates in rank order):
        for a survivor, its duplicates' distinct texts (not its own, capped) and how many distinct
        texts the cap left out; null for a duplicate."""
        idx = pa.array(pick)
        texts = t["texts"].take(idx).to_pylist()
        ids = t["id"].take(idx).to_pylist()
        sources = t["source"].take(idx).to_pylist()
        languages = t["language"].take(idx).to_pylist()
        cap = self.params.max_absorbed_texts
        out: list[str | None] = [None] * len(pick)
        omitted: list[int | None] = [None] * len(pick)
        starts = np.flatnonzero(is_survivor).tolist() + [len(pick)]
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            if not any(texts[lo + 1 : hi]):
                continue
            seen = {x["hash"] for x in texts[lo] or []}
            got: list[dict[str, Any]] = []
            over = 0
            for m in range(lo + 1, hi):
                for x in texts[m] or []:
                    if x["hash"] in seen:
                        continue
                    seen.add(x["hash"])
                    if len(got) >= cap:
                        over += 1
                        continue
                    got.append(
                        {
                            "field": x["field"],
                            "text": x["text"],
                            "source": sources[m],
                            "language": languages[m],
                            "from_id": ids[m],
                            "truncated": bool(x["cut"]),
                        }
                    )
            out[lo] = texts_json(got)
            omitted[lo] = over or None
        return pa.array(out, pa.string()), pa.array(omitted, pa.int64())

    def apply(self, table: pa.Table, decisions: pa.Table) -> pa.Table:
        return apply_decisions(
            table,
            decisions,
            stage=self.stage,
            reason=ReasonCode.EXACT_DUPLICATE,
            group_key="dup_count",
            describe=lambda d: f"same content as {d['survivor_locator']}",
        )
