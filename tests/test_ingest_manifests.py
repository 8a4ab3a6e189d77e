"""Manifest readers: row formats, quarantine of bad rows, byte-range and row-group units."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.ingest.manifests import JsonlReader, ObelicsReader, ParquetReader
from schemas.record import to_table


def _read(reader) -> list[dict]:
    return [rec for u in reader.plan() for rec in reader.read(u["payload"])]


def _jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _one(tmp_path: Path, row, **params) -> dict:
    f = _jsonl(tmp_path / "m.jsonl", [row])
    (rec,) = _read(JsonlReader(source="s", path=str(f), params=params))
    return rec


def test_llava_row(tmp_path: Path) -> None:
    row = {
        "id": "42",
        "image": "imgs/a.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"},
            {"from": "gpt", "value": "A cat.", "weight": 0.5},
            {"from": "human", "value": "Color?"},
            {"from": "gpt", "value": "Red."},
        ],
    }
    rec = _one(tmp_path, row)
    assert rec["status"] == "kept"
    assert rec["layout"] == "image-text" and rec["modalities"] == ["image", "text"]
    assert [(m["modality"], m["uri"], m["role"]) for m in rec["media"]] == [
        ("image", str(tmp_path / "imgs/a.jpg"), "input")
    ]
    assert rec["conversation"] == [
        {"role": "user", "text": "What is shown?"},
        {"role": "assistant", "text": "A cat."},
        {"role": "user", "text": "Color?"},
        {"role": "assistant", "text": "Red."},
    ]
    assert (rec["instruction"], rec["response"]) == ("What is shown?", "A cat.")
    assert json.loads(rec["meta"]) == {"id": "42", "turn_extra": {"1": {"weight": 0.5}}}
    assert rec["locator"] == f"{tmp_path / 'm.jsonl'}:0"


@pytest.mark.parametrize(
    ("media", "layout", "mods"),
    [
        ({"image": ["a.jpg", "b.jpg"]}, "multi-image-text", ["image", "text"]),
        ({"video": "v.mp4"}, "video-text", ["text", "video"]),
        ({"audio": "s.wav"}, "audio-text", ["audio", "text"]),
        ({}, "text", ["text"]),
    ],
)
def test_llava_layouts(tmp_path: Path, media: dict, layout: str, mods: list[str]) -> None:
    conv = [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
    rec = _one(tmp_path, {**media, "conversations": conv})
    assert (rec["layout"], rec["modalities"]) == (layout, mods)
    assert rec["conversation"][0] == {"role": "system", "text": "be brief"}


def test_media_root_and_urls(tmp_path: Path) -> None:
    row = {"image": ["rel/a.jpg", "/abs/b.jpg", "s3://bucket/c.jpg"], "caption": "x"}
    rec = _one(tmp_path, row, media_root="../media")
    assert [m["uri"] for m in rec["media"]] == [
        str(tmp_path.parent / "media/rel/a.jpg"),
        "/abs/b.jpg",
        "s3://bucket/c.jpg",
    ]
    rec = _one(tmp_path, row, media_root="https://cdn.example/data")
    assert rec["media"][0]["uri"] == "https://cdn.example/data/rel/a.jpg"


def test_preference_text_pair_with_context_image(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"prompt": "Describe", "chosen": "good", "rejected": "bad", "image": "a.png", "margin": 2})
    assert rec["layout"] == "preference" and rec["modalities"] == ["image", "text"]
    assert rec["preference"] == {
        "prompt": "Describe",
        "chosen": "good",
        "rejected": "bad",
        "chosen_media": None,
        "rejected_media": None,
        "candidates": None,
    }
    assert [(m["role"], m["uri"]) for m in rec["media"]] == [("input", str(tmp_path / "a.png"))]
    assert json.loads(rec["meta"]) == {"margin": 2}


def test_preference_message_lists(tmp_path: Path) -> None:
    chosen = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "right"}]
    rejected = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "wrong"}]
    rec = _one(tmp_path, {"chosen": chosen, "rejected": rejected})
    assert (rec["preference"]["prompt"], rec["preference"]["chosen"], rec["preference"]["rejected"]) == (
        "q?",
        "right",
        "wrong",
    )
    assert rec["modalities"] == ["text"] and rec["meta"] is None  # a plain (prompt, answer) pair says it all


def test_preference_dialogues_are_kept_whole(tmp_path: Path) -> None:
    chosen = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "q?"},
        {"role": "assistant", "content": "right"},
    ]
    rejected = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "wrong"}]
    rec = _one(tmp_path, {"chosen": chosen, "rejected": rejected})
    assert (rec["preference"]["prompt"], rec["preference"]["chosen"]) == ("q?", "right")
    assert json.loads(rec["meta"]) == {"chosen_messages": chosen}


def test_generation_preference(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"prompt": "a red fox", "chosen_image": "c.png", "rejected_image": "r.png"})
    assert [(m["role"], m["uri"]) for m in rec["media"]] == [
        ("chosen", str(tmp_path / "c.png")),
        ("rejected", str(tmp_path / "r.png")),
    ]
    assert (rec["preference"]["chosen_media"], rec["preference"]["rejected_media"]) == (0, 1)
    assert rec["layout"] == "preference" and rec["modalities"] == ["image", "text"]


def test_ranked_candidates(tmp_path: Path) -> None:
    cands = [{"text": "best", "score": 0.9, "model": "m1"}, {"image": "x.png", "score": 1}, {"text": "meh"}]
    rec = _one(tmp_path, {"prompt": "p", "candidates": cands})
    assert rec["preference"]["candidates"] == [
        {"text": "best", "media_index": None, "score": 0.9},
        {"text": None, "media_index": 0, "score": 1.0},
        {"text": "meh", "media_index": None, "score": None},
    ]
    assert rec["media"][0]["role"] == "candidate"
    assert json.loads(rec["meta"]) == {"candidate_extra": {"0": {"model": "m1"}}}


def test_trajectory(tmp_path: Path) -> None:
    row = {
        "goal": "book a flight",
        "environment": "web",
        "steps": [
            {"observation": "home page", "screenshot": "s/0.png", "action": {"type": "click", "x": 3}},
            {"observation": "form", "action": "type('NYC')", "reward": 1},
            {"image": "s/2.png", "action": None},
        ],
        "episode": 7,
    }
    rec = _one(tmp_path, row)
    assert rec["layout"] == "trajectory" and rec["modalities"] == ["image", "text"]
    inter = rec["interaction"]
    assert (inter["goal"], inter["environment"]) == ("book a flight", "web")
    assert inter["steps"] == [
        {"observation": "home page", "media_index": 0, "action": '{"type": "click", "x": 3}'},
        {"observation": "form", "media_index": None, "action": "\"type('NYC')\""},
        {"observation": None, "media_index": 1, "action": "null"},
    ]
    assert [(m["role"], m["uri"]) for m in rec["media"]] == [
        ("observation", str(tmp_path / "s/0.png")),
        ("observation", str(tmp_path / "s/2.png")),
    ]
    assert json.loads(rec["meta"]) == {"episode": 7, "step_extra": {"1": {"reward": 1}}}


def test_obelics_row_and_reader(tmp_path: Path) -> None:
    row = {"texts": ["Intro", None, "Body"], "images": [None, "img/1.jpg", None], "url": "http://doc"}
    f = _jsonl(tmp_path / "docs.jsonl", [row, {"texts": ["only text"], "images": [None]}])
    for reader in (ObelicsReader(source="s", path=str(f)), JsonlReader(source="s", path=str(f))):
        doc, text_only = _read(reader)
        assert doc["layout"] == "interleaved" and doc["modalities"] == ["image", "text"]
        assert doc["interleaved"] == [
            {"kind": "text", "text": "Intro", "media_index": None},
            {"kind": "media", "text": None, "media_index": 0},
            {"kind": "text", "text": "Body", "media_index": None},
        ]
        assert doc["text"] == "Intro\n\nBody"
        assert doc["media"][0]["uri"] == str(tmp_path / "img/1.jpg")
        assert json.loads(doc["meta"]) == {"url": "http://doc"}
        assert text_only["layout"] == "text" and text_only["text"] == "only text"


def test_generic_rows(tmp_path: Path) -> None:
    rows = [
        {"image": "a.jpg", "alt_text": "alt", "width": 5},
        {"audio": "b.wav", "transcript": "hi"},
        {"video": "c.mp4"},
        {"text": "just text", "language": "en"},
    ]
    f = _jsonl(tmp_path / "g.jsonl", rows)
    a, b, c, d = _read(JsonlReader(source="s", path=str(f)))
    assert (a["layout"], a["alt_text"], json.loads(a["meta"])) == ("image-text", "alt", {"width": 5})
    assert (b["layout"], b["transcript"], b["modalities"]) == ("audio-text", "hi", ["audio", "text"])
    assert (c["layout"], c["modalities"]) == ("video", ["video"])
    assert (d["layout"], d["modalities"], d["text"], d["language"], d["media"]) == (
        "text",
        ["text"],
        "just text",
        "en",
        [],
    )


def test_bad_rows_are_quarantined_one_each(tmp_path: Path) -> None:
    rows = [
        {"text": "ok"},
        '{"text": "unterminated',
        {"foo": 1},
        [1, 2],
        {"texts": ["a"], "images": [None, None]},
        {"conversations": [{"from": "alien", "value": "x"}]},
        {"image": 5, "caption": "x"},
        {"chosen": "a", "rejected": None},
    ]
    f = _jsonl(tmp_path / "bad.jsonl", rows)
    recs = _read(JsonlReader(source="s", path=str(f)))
    assert len(recs) == len(rows)
    assert [r["status"] for r in recs] == ["kept"] + ["quarantined"] * 7
    assert {r["status_reason"] for r in recs[1:]} == {"bad_manifest_row"}
    details = [r["status_detail"] for r in recs[1:]]
    assert details[0].startswith("invalid JSON")
    assert "fits no known format" in details[1]
    assert "expected a JSON object" in details[2]
    assert "has 1 items but 'images' has 2" in details[3]
    assert "unknown speaker 'alien'" in details[4]
    assert "expected a media path" in details[5]
    assert "fits no known format" in details[6]  # a null 'rejected' is absent
    assert json.loads(recs[1]["meta"]) == {"raw": '{"text": "unterminated'}
    assert json.loads(recs[2]["meta"]) == {"raw": '{"foo": 1}'}
    to_table(recs)


def test_forced_format_rejects_other_rows(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"image": "a.jpg", "caption": "c"}, format="llava")
    assert (rec["status"], rec["status_reason"]) == ("quarantined", "bad_manifest_row")


def test_locators_are_byte_offsets(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "m.jsonl", [{"text": f"row {i}" * (i + 1)} for i in range(5)])
    data = f.read_bytes()
    for rec in _read(JsonlReader(source="s", path=str(f))):
        offset = int(rec["locator"].rsplit(":", 1)[1])
        line = data[offset:].split(b"\n", 1)[0]
        assert json.loads(line)["text"] == rec["text"]


@pytest.mark.parametrize("bytes_per_unit", [1, 7, 16, 33, 100, 10_000])
def test_byte_range_units_read_each_line_once(tmp_path: Path, bytes_per_unit: int) -> None:
    lines = [json.dumps({"text": f"line {i} " + "x" * (i * 7 % 23)}) for i in range(40)]
    lines.insert(10, "")  # a blank line is skipped, not a row
    f = tmp_path / "m.jsonl"
    f.write_text("\n".join(lines), encoding="utf-8")  # no newline at the very end
    reader = JsonlReader(source="s", path=str(f), params={"bytes_per_unit": bytes_per_unit})
    units = list(reader.plan())
    size = f.stat().st_size
    assert len(units) == -(-size // bytes_per_unit)
    assert units[0]["payload"]["start"] == 0 and units[-1]["payload"]["end"] == size
    texts = [rec["text"] for u in units for rec in reader.read(u["payload"])]
    assert texts == [f"line {i} " + "x" * (i * 7 % 23) for i in range(40)]
    assert units == list(JsonlReader(source="s", path=str(f), params={"bytes_per_unit": bytes_per_unit}).plan())


def test_folder_and_glob_paths(tmp_path: Path) -> None:
    _jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    _jsonl(tmp_path / "sub" / "a.jsonl", [{"text": "a"}])
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "empty.jsonl").write_text("")
    assert [r["text"] for r in _read(JsonlReader(source="s", path=str(tmp_path)))] == ["b", "a"]
    assert [r["text"] for r in _read(JsonlReader(source="s", path=str(tmp_path / "*.jsonl")))] == ["b"]


def test_parquet_row_groups(tmp_path: Path) -> None:
    rows = [{"image": f"i{i}.jpg", "caption": f"c{i}", "conversations": None, "score": i} for i in range(4)] + [
        {"image": None, "caption": None, "conversations": [{"from": "human", "value": "q"}], "score": 9}
    ]
    f = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f, row_group_size=2)
    reader = ParquetReader(source="s", path=str(tmp_path), params={"batch_size": 1})
    units = list(reader.plan())
    assert [(u["payload"]["row_group"], u["payload"]["first_row"]) for u in units] == [(0, 0), (1, 2), (2, 4)]
    recs = [rec for u in units for rec in reader.read(u["payload"])]
    assert [r["locator"] for r in recs] == [f"{f}:row{i}" for i in range(5)]
    # null columns count as absent: rows 0-3 are generic image-caption rows, row 4 is LLaVA text
    assert [r["layout"] for r in recs] == ["image-text"] * 4 + ["text"]
    assert [r["caption"] for r in recs] == ["c0", "c1", "c2", "c3", None]
    assert recs[4]["conversation"] == [{"role": "user", "text": "q"}]
    assert json.loads(recs[1]["meta"]) == {"score": 1} and json.loads(recs[4]["meta"]) == {"score": 9}
    to_table(recs)


def test_parquet_formats(tmp_path: Path) -> None:
    rows = [{"image": "a.jpg", "caption": "c", "score": 1.5}, {"image": "b.jpg", "caption": "d", "score": 2.0}]
    f = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    recs = _read(ParquetReader(source="s", path=str(f)))
    assert [(r["layout"], r["caption"], r["media"][0]["uri"]) for r in recs] == [
        ("image-text", "c", str(tmp_path / "a.jpg")),
        ("image-text", "d", str(tmp_path / "b.jpg")),
    ]
    assert json.loads(recs[0]["meta"]) == {"score": 1.5}


def test_corrupt_parquet_is_one_unreadable_record(tmp_path: Path) -> None:
    f = tmp_path / "bad.parquet"
    f.write_bytes(b"PAR1 this is not parquet")
    reader = ParquetReader(source="s", path=str(f))
    (unit,) = list(reader.plan())
    (rec,) = list(reader.read(unit["payload"]))
    assert (rec["status"], rec["status_reason"], rec["locator"]) == ("quarantined", "unreadable", str(f))
