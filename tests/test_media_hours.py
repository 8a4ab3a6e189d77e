"""media_hours: hours of kept audio and video per modality, source and language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from curate.media_hours import media_hours
from schemas.record import new_media, new_record, to_table


def row(i: int, source: str, *media: dict[str, Any], status: str = "kept", language: str | None = None, **kw: Any):
    r = new_record(source=source, locator=f"{source}/{i}", media=list(media), language=language, **kw)
    r.update(id=f"id{i}", status=status)
    return r


def audio(seconds: float | None, **kw: Any) -> dict[str, Any]:
    return new_media("audio", "a.flac", duration_s=seconds, **kw)


def video(seconds: float | None, **kw: Any) -> dict[str, Any]:
    return new_media("video", "v.mp4", duration_s=seconds, **kw)


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(to_table(rows), path)
    return path


def test_hours_by_modality_source_and_language(tmp_path: Path) -> None:
    rows = [
        row(1, "podcasts", audio(1800.0), language="en", modalities=["audio"]),
        row(2, "podcasts", audio(900.0), language="de", modalities=["audio"]),
        row(3, "podcasts", audio(3600.0), status="dropped", language="en"),  # not kept: not counted
        row(4, "podcasts", audio(3600.0), status="split", language="en"),  # replaced by its children
        row(5, "clips", video(360.0), video(720.0), modalities=["video"]),  # two items add up; no language
        # the audio track extracted from a video is the video's time, not more audio
        row(6, "clips", video(36.0), audio(36.0, role="audio_track"), language="en", modalities=["video", "audio"]),
        row(7, "clips", audio(None), language="en", modalities=["audio"], scores={"duration_s": 72.0}),  # fallback
        row(8, "images", new_media("image", "x.jpg"), modalities=["image"]),  # no time at all
        row(9, "podcasts", audio(99.0, error="missing_file: x"), language="en", modalities=["audio"]),
    ]
    a = write(tmp_path / "a.parquet", rows[:5])
    b = write(tmp_path / "b.parquet", rows[5:])
    h = media_hours([a, b])
    assert h["total"] == {"audio": pytest.approx(0.77), "video": pytest.approx(0.31)}
    assert h["by_source"] == {
        "clips": {"audio": pytest.approx(0.02), "video": pytest.approx(0.31)},
        "podcasts": {"audio": pytest.approx(0.75)},
    }
    assert h["by_language"] == {
        "de": {"audio": pytest.approx(0.25)},
        "en": {"audio": pytest.approx(0.52), "video": pytest.approx(0.01)},
        "unknown": {"video": pytest.approx(0.3)},
    }
    assert h["rows"] == 5


def test_rows_copied_into_several_buckets_count_once(tmp_path: Path) -> None:
    rows = [row(1, "s", audio(3600.0), modalities=["audio"]), row(2, "s", audio(1800.0), modalities=["audio"])]
    a = write(tmp_path / "understanding.parquet", rows)
    b = write(tmp_path / "generation.parquet", rows[:1])
    assert media_hours([a, b])["total"] == {"audio": 1.5}
    assert media_hours([]) == {"total": {}, "by_source": {}, "by_language": {}, "rows": 0}
