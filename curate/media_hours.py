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

Only the columns it needs are read (id, status, source, language, modalities, media, scores).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from schemas.enums import Status

__all__ = ["media_hours"]

_COLUMNS = ["id", "status", "source", "language", "modalities", "media", "scores"]
_TIMED = ("video", "audio")
UNKNOWN = "unknown"


def _row_seconds(row: dict[str, Any]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for m in row.get("media") or []:
        modality = m.get("modality")
        if modality not in _TIMED or m.get("error") or m.get("role") == "audio_track":
            continue
        if m.get("duration_s") is not None:
            seconds[modality] = seconds.get(modality, 0.0) + float(m["duration_s"])
    if not seconds:
        scores = dict(row.get("scores") or [])
        fallback = scores.get("duration_s")
        timed = [m for m in _TIMED if m in (row.get("modalities") or [])]
        if fallback is not None and timed:
            seconds[timed[0]] = float(fallback)
    return seconds


def _hours(table: dict[str, float]) -> dict[str, float]:
    return {k: round(v / 3600.0, 6) for k, v in sorted(table.items())}


def media_hours(files: list[Path]) -> dict[str, Any]:
    """Hours of kept audio and video in ``files``: ``{"total": {modality: h}, "by_source":
    {source: {modality: h}}, "by_language": {language: {modality: h}}, "rows": n}`` where ``rows``
    counts the kept rows that contributed seconds. Hours are rounded to 6 decimals (3.6 ms)."""
    total: defaultdict[str, float] = defaultdict(float)
    by_source: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_language: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    seen: set[str] = set()
    counted = 0
    for f in files:
        pf = pq.ParquetFile(f)
        columns = [c for c in _COLUMNS if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(columns=columns, batch_size=4096):
            for row in batch.to_pylist():
                if row.get("status") != Status.KEPT.value or row["id"] in seen:
                    continue
                seen.add(row["id"])
                seconds = _row_seconds(row)
                counted += bool(seconds)
                for modality, s in seconds.items():
                    total[modality] += s
                    by_source[row.get("source") or UNKNOWN][modality] += s
                    by_language[row.get("language") or UNKNOWN][modality] += s
    return {
        "total": _hours(total),
        "by_source": {k: _hours(v) for k, v in sorted(by_source.items())},
        "by_language": {k: _hours(v) for k, v in sorted(by_language.items())},
        "rows": counted,
    }
