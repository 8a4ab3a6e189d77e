"""Hours of audio and video kept by a run, per modality, source and language.

Speech and video corpora are budgeted in hours, not rows: ``media_hours(files)`` reads the final
Parquet files of a run (the last segment under OUT/_work, or OUT/samples/**) and sums the
``duration_s`` of the media items of *kept* rows:

- by modality: ``audio`` and ``video`` media items (an ``audio_track`` extracted from a video by
  ``audio_transcode`` is not counted again: its seconds are the video's);
- a row whose media items carry no duration falls back to ``scores["duration_s"]``, counted under
  the row's first timed modality (video before audio);
- rows are counted once by ``id``, so the per-bucket copies under OUT/samples do not double count;
- by source (``row["source"]``) and by language (``row["language"]``, ``unknown`` when unset),
  each as ``{modality: hours}``.

Only the columns it needs are read (id, status, source, language, modalities, media, scores),
and the seconds of a file are computed with Arrow and numpy, not row by row
(``timed_seconds``). Memory: counting each id once needs the ids of the kept rows (with their
source, language and seconds: about 60 B a row); above ``SPILL_ROWS`` of them they are spilled to
disk partitioned by id (``curate.spill``) and deduplicated one partition at a time, so a process
holds about ``SPILL_ROWS`` of them whatever the run's size. ``finalize`` does not call this: it
sums the same per-row seconds in its id-partitioned index reduce (``curate.explain_build``),
where rows with the same id meet anyway.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.enums import Status

__all__ = ["SECONDS_COLUMNS", "HoursSum", "first_of_each_id", "media_hours", "timed_seconds"]

_COLUMNS = ["id", "status", "source", "language", "modalities", "media", "scores"]
_TIMED = ("video", "audio")
UNKNOWN = "unknown"
#: timed kept rows held at once before ``media_hours`` spills them to disk by id
SPILL_ROWS = 1_000_000
#: the columns of ``timed_seconds``: seconds per timed modality, null where the row has none
SECONDS_COLUMNS = ("_audio_s", "_video_s")


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    if name in table.column_names:
        return table[name].combine_chunks()
    return pa.nulls(table.num_rows, type_)


def timed_seconds(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Per row of ``table`` (any status): (audio seconds, video seconds), null where the row has
    no time in that modality. A 0-second item counts as time (0.0, not null), as before."""
    n = table.num_rows
    sums = {m: np.zeros(n) for m in _TIMED}
    present = {m: np.zeros(n, dtype=bool) for m in _TIMED}
    if "media" in table.column_names and n:
        media = table["media"].combine_chunks()
        flat = pc.list_flatten(media)
        if len(flat):
            parents = pc.list_parent_indices(media).to_numpy()
            modality = pc.struct_field(flat, "modality")
            error = pc.struct_field(flat, "error")
            role = pc.struct_field(flat, "role")
            duration = pc.struct_field(flat, "duration_s")
            no_error = pc.invert(pc.fill_null(pc.not_equal(error, ""), False))  # null or "": no error
            not_track = pc.invert(pc.fill_null(pc.equal(role, "audio_track"), False))
            usable = pc.and_(pc.and_(no_error, not_track), pc.is_valid(duration))
            seconds = pc.fill_null(duration, 0.0).to_numpy(zero_copy_only=False)
            for m in _TIMED:
                q = pc.fill_null(pc.and_(usable, pc.equal(modality, m)), False).to_numpy(zero_copy_only=False)
                if q.any():
                    sums[m] = np.bincount(parents[q], weights=seconds[q], minlength=n)
                    present[m] = np.bincount(parents[q], minlength=n) > 0
    # no timed item with a duration: scores["duration_s"] under the first timed modality
    none = ~(present["audio"] | present["video"])
    if none.any() and "scores" in table.column_names and "modalities" in table.column_names:
        fallback = pc.map_lookup(table["scores"].combine_chunks(), "duration_s", "last")
        has_fallback = pc.is_valid(fallback).to_numpy(zero_copy_only=False)
        values = pc.fill_null(fallback, 0.0).to_numpy(zero_copy_only=False)
        mods = table["modalities"].combine_chunks()
        flat_mods = pc.list_flatten(mods)
        mod_parents = pc.list_parent_indices(mods).to_numpy()
        has_mod = {
            m: np.bincount(mod_parents[pc.fill_null(pc.equal(flat_mods, m), False).to_numpy(zero_copy_only=False)], minlength=n) > 0
            for m in _TIMED
        }
        take = none & has_fallback
        as_video = take & has_mod["video"]
        as_audio = take & ~has_mod["video"] & has_mod["audio"]
        for m, mask in (("video", as_video), ("audio", as_audio)):
            sums[m] = np.where(mask, values, sums[m])
            present[m] = present[m] | mask
    return (
        pa.array(sums["audio"], mask=~present["audio"]),
        pa.array(sums["video"], mask=~present["video"]),
    )


class HoursSum:
    """Running sums of timed seconds by modality, source and language (picklable, mergeable)."""

    def __init__(self) -> None:
        self.total: defaultdict[str, float] = defaultdict(float)
        self.by_source: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.by_language: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.rows = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"total": dict(self.total), "by_source": {k: dict(v) for k, v in self.by_source.items()},
                "by_language": {k: dict(v) for k, v in self.by_language.items()}, "rows": self.rows}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
        self.merge_state(state)

    def merge_state(self, state: dict[str, Any]) -> None:
        for k, v in state["total"].items():
            self.total[k] += v
        for name in ("by_source", "by_language"):
            mine = getattr(self, name)
            for key, mods in state[name].items():
                for k, v in mods.items():
                    mine[key][k] += v
        self.rows += state["rows"]

    def merge(self, other: HoursSum) -> None:
        self.merge_state(other.__getstate__())

    def add(self, source: pa.Array, language: pa.Array, audio_s: pa.Array, video_s: pa.Array) -> None:
        """Rows already filtered to kept rows counted once: their source, language and seconds."""
        n = len(source)
        if not n:
            return
        timed = pc.or_(pc.is_valid(audio_s), pc.is_valid(video_s)).to_numpy(zero_copy_only=False)
        self.rows += int(timed.sum())
        src = pc.fill_null(pc.if_else(pc.equal(source, ""), pa.scalar(None, pa.string()), source), UNKNOWN)
        lang = pc.fill_null(pc.if_else(pc.equal(language, ""), pa.scalar(None, pa.string()), language), UNKNOWN)
        for modality, secs in (("video", video_s), ("audio", audio_s)):
            has = pc.is_valid(secs).to_numpy(zero_copy_only=False)
            if not has.any():
                continue
            values = pc.fill_null(secs, 0.0).to_numpy(zero_copy_only=False)[has]
            self.total[modality] += float(np.cumsum(values)[-1])  # in row order, as a loop would add
            for keys, into in ((src, self.by_source), (lang, self.by_language)):
                enc = _combined(pc.dictionary_encode(keys.filter(pa.array(has))))
                codes = enc.indices.to_numpy(zero_copy_only=False)
                for code, name in enumerate(enc.dictionary.to_pylist()):
                    into[name][modality] += float(np.cumsum(values[codes == code])[-1])

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": _hours(self.total),
            "by_source": {k: _hours(v) for k, v in sorted(self.by_source.items())},
            "by_language": {k: _hours(v) for k, v in sorted(self.by_language.items())},
            "rows": self.rows,
        }


def _combined(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _hours(table: dict[str, float]) -> dict[str, float]:
    return {k: round(v / 3600.0, 6) for k, v in sorted(table.items())}


def _timed_kept(table: pa.Table, start: int) -> pa.Table:
    """The kept rows of ``table``: id, source, language, seconds, and their reading order
    (``start`` + row) for first-occurrence dedup. Rows without seconds stay: the first kept row
    of an id is the one counted, as a loop over the rows would count it."""
    audio_s, video_s = timed_seconds(table)
    status = _column(table, "status", pa.string())
    keep = pc.fill_null(pc.equal(status, Status.KEPT.value), False)
    out = pa.table(
        {
            "id": _column(table, "id", pa.string()),
            "source": _column(table, "source", pa.string()),
            "language": _column(table, "language", pa.string()),
            "_audio_s": audio_s,
            "_video_s": video_s,
            "_order": pa.array(np.arange(start, start + table.num_rows, dtype=np.int64)),
        }
    )
    return out.filter(keep)


def first_of_each_id(table: pa.Table, order: str = "_order") -> pa.Table:
    """The first row (by ``order``) of each id, in that order."""
    if table.num_rows < 2:
        return table
    idx = pc.sort_indices(table, sort_keys=[("id", "ascending"), (order, "ascending")])
    t = table.take(idx)
    ids = t["id"].combine_chunks()
    first = np.ones(t.num_rows, dtype=bool)
    first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    t = t.filter(pa.array(first))
    return t.take(pc.sort_indices(t[order]))


def media_hours(files: list[Path]) -> dict[str, Any]:
    """Hours of kept audio and video in ``files``: ``{"total": {modality: h}, "by_source":
    {source: {modality: h}}, "by_language": {language: {modality: h}}, "rows": n}`` where ``rows``
    counts the kept rows that contributed seconds. Hours are rounded to 6 decimals (3.6 ms).
    Each id counts once, with its first kept row (in file and row order)."""
    from curate.spill import Spill

    hours = HoursSum()
    read = 0
    with Spill(SPILL_ROWS) as spill:
        for f in files:
            pf = pq.ParquetFile(f)
            columns = [c for c in _COLUMNS if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(columns=columns, batch_size=65536):
                spill.add(_timed_kept(pa.Table.from_batches([batch]), read))
                read += batch.num_rows
        for part in spill.partitions():
            t = first_of_each_id(part)
            hours.add(t["source"].combine_chunks(), t["language"].combine_chunks(), t["_audio_s"].combine_chunks(), t["_video_s"].combine_chunks())
    return hours.as_dict()
