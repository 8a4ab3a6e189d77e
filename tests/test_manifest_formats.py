"""Manifests as people ship them: JSON array files, Anthropic-HH dialogues, answer1/answer2 pairs,
key mappings (``fields``), rows that fit no format, and media paths that resolve to nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curate.demo import synth
from operators.ingest.json_array import ArrayError, is_json_array, iter_elements
from operators.ingest.manifests import JsonlParams, JsonlReader, ObelicsReader, ParquetReader
from operators.ingest.media_check import suggest_media_root
from schemas.record import to_table


def _read(reader) -> list[dict]:
    return [rec for u in reader.plan() for rec in reader.read(u["payload"])]


def _jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one(tmp_path: Path, row, **params) -> dict:
    f = _jsonl(tmp_path / "m.jsonl", [row])
    (rec,) = _read(JsonlReader(source="s", path=str(f), params=params))
    return rec


ROWS = [
    {"image": "imgs/a.jpg", "caption": "a red fox"},
    {
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}],
        "image": "b.png",
    },
    {"text": 'just text, with a ] and a [ and "quotes"', "language": "en"},
    {"prompt": "p", "chosen": "good", "rejected": "bad"},
]


# ----------------------------------------------------------------------------- JSON arrays


@pytest.mark.parametrize("indent", [None, 2, "\t"], ids=["compact", "pretty", "tabs"])
def test_json_array_file_is_one_row_per_element(tmp_path: Path, indent) -> None:
    f = tmp_path / "train.json"
    f.write_text(json.dumps(ROWS, indent=indent, ensure_ascii=False), encoding="utf-8")
    recs = _read(JsonlReader(source="s", path=str(f)))
    assert [r["status"] for r in recs] == ["kept"] * 4
    assert [r["layout"] for r in recs] == ["image-text", "image-text", "text", "preference"]
    assert recs[0]["caption"] == "a red fox" and recs[0]["media"][0]["uri"] == str(tmp_path / "imgs/a.jpg")
    assert recs[1]["conversation"][1] == {"role": "assistant", "text": "A cat."}
    assert recs[2]["text"] == ROWS[2]["text"]
    data = f.read_bytes()
    for rec, row in zip(recs, ROWS, strict=True):  # locators are the byte offsets of the elements
        offset = int(rec["locator"].rsplit(":", 1)[1])
        assert json.JSONDecoder().raw_decode(data[offset:].decode())[0] == row


def test_json_array_split_into_units_reads_each_element_once(tmp_path: Path) -> None:
    rows = [{"text": f"row {i} " + "x" * (i * 13 % 40), "nested": {"list": [1, {"a": "]"}]}} for i in range(60)]
    f = tmp_path / "big.json"
    f.write_text("\ufeff" + json.dumps(rows, indent=1) + "\n", encoding="utf-8")  # a BOM, pretty-printed
    reader = JsonlReader(source="s", path=str(f), params={"bytes_per_unit": 500})
    units = list(reader.plan())
    assert len(units) > 5 and all(u["payload"]["array"] for u in units)
    assert units[0]["payload"]["start"] == 0 and units[-1]["payload"]["end"] == f.stat().st_size
    assert [u["payload"]["end"] for u in units[:-1]] == [u["payload"]["start"] for u in units[1:]]
    texts = [rec["text"] for u in units for rec in reader.read(u["payload"])]
    assert texts == [r["text"] for r in rows]
    assert units == list(reader.plan())  # the same units every time (resume)


def test_jsonl_and_parquet_are_not_mistaken_for_arrays(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_text('[1, 2]\n{"text": "second line"}\n', encoding="utf-8")  # JSON Lines whose first row is a list
    assert not is_json_array(str(f))
    first, second = _read(JsonlReader(source="s", path=str(f)))
    assert first["status"] == "quarantined" and "expected a JSON object" in first["status_detail"]
    assert second["text"] == "second line"
    one_line = tmp_path / "one.jsonl"
    one_line.write_text('[{"text": "a"}, {"text": "b"}]\n', encoding="utf-8")
    assert is_json_array(str(one_line))
    assert [r["text"] for r in _read(JsonlReader(source="s", path=str(one_line)))] == ["a", "b"]


def test_broken_json_array_keeps_what_came_before_and_quarantines_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "cut.json"
    f.write_text('[{"text": "a"},\n {"text": "b"},\n {"text": "c", "image": "x.jp', encoding="utf-8")  # cut short
    recs = _read(JsonlReader(source="s", path=str(f)))
    assert [(r["status"], r["text"]) for r in recs[:2]] == [("kept", "a"), ("kept", "b")]
    bad = recs[2]
    assert (bad["status"], bad["status_reason"]) == ("quarantined", "bad_manifest_row")
    offset = f.read_bytes().index(b'{"text": "c"')
    assert bad["locator"] == f"{f}:{offset}"
    assert "invalid JSON array" in bad["status_detail"] and f"byte {offset}" in bad["status_detail"]
    assert json.loads(bad["meta"])["raw"].startswith('{"text": "c"')
    with open(f, "rb") as fh, pytest.raises(ArrayError):
        list(iter_elements(fh))
    to_table(recs)


def test_json_array_elements_that_are_not_objects_and_trailing_data(tmp_path: Path) -> None:
    f = tmp_path / "odd.json"
    f.write_text('[{"text": "ok"}, 5, "str", {"foo": 1}] [{"text": "after"}]', encoding="utf-8")
    recs = _read(JsonlReader(source="s", path=str(f)))
    assert [r["status"] for r in recs] == ["kept", "quarantined", "quarantined", "quarantined", "quarantined"]
    assert "expected a JSON object, got int" in recs[1]["status_detail"]
    assert "fits no known format" in recs[3]["status_detail"]
    assert "data after the end of the JSON array" in recs[4]["status_detail"]


def test_obelics_documents_in_a_json_array(tmp_path: Path) -> None:
    docs = [{"texts": ["Intro", None], "images": [None, "i.jpg"]}, {"texts": ["only"], "images": [None]}]
    f = tmp_path / "docs.json"
    f.write_text(json.dumps(docs, indent=2), encoding="utf-8")
    doc, text_only = _read(ObelicsReader(source="s", path=str(f)))
    assert doc["layout"] == "interleaved" and text_only["layout"] == "text"


# ----------------------------------------------------------------------------- preference pairs


def test_hh_dialogues_split_into_prompt_turns_and_final_answers(tmp_path: Path) -> None:
    context = "\n\nHuman: What is a good bread?\n\nAssistant: Sourdough.\n\nSome like rye.\n\nHuman: How long to bake?"
    row = {"chosen": context + "\n\nAssistant: About 40 minutes.", "rejected": context + "\n\nAssistant: No idea."}
    rec = _one(tmp_path, row)
    assert (rec["status"], rec["layout"], rec["modalities"]) == ("kept", "preference", ["text"])
    assert rec["conversation"] == [
        {"role": "user", "text": "What is a good bread?"},
        {"role": "assistant", "text": "Sourdough.\n\nSome like rye."},  # a paragraph break stays in its turn
        {"role": "user", "text": "How long to bake?"},
    ]
    pref = rec["preference"]
    assert (pref["prompt"], pref["chosen"], pref["rejected"]) == ("How long to bake?", "About 40 minutes.", "No idea.")
    assert rec["meta"] is None  # nothing duplicated, nothing left over


def test_hh_single_turn_and_prompt_as_dialogue(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"chosen": "Human: hi?\n\nAssistant: hello!", "rejected": "Human: hi?\n\nAssistant: go away"})
    assert rec["conversation"] is None  # the context is the prompt alone
    assert rec["meta"] is None
    assert (rec["preference"]["prompt"], rec["preference"]["chosen"], rec["preference"]["rejected"]) == (
        "hi?",
        "hello!",
        "go away",
    )
    # the rm-static shape: the dialogue in `prompt`, the answers alone
    rec = _one(
        tmp_path,
        {"prompt": "\n\nHuman: a?\n\nAssistant: b.\n\nHuman: c?\n\nAssistant:", "chosen": " d.", "rejected": " e."},
    )
    assert [t["text"] for t in rec["conversation"]] == ["a?", "b.", "c?"]
    assert (rec["preference"]["prompt"], rec["preference"]["chosen"], rec["preference"]["rejected"]) == (
        "c?",
        "d.",
        "e.",
    )
    # trl's conversational shape: prompt and answers as message lists
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q?"}]
    rec = _one(tmp_path, {"prompt": prompt, "chosen": [{"role": "assistant", "content": "yes"}],
                          "rejected": [{"role": "assistant", "content": "no"}]})  # fmt: skip
    assert rec["conversation"] == [{"role": "system", "text": "be brief"}, {"role": "user", "text": "q?"}]
    assert (rec["preference"]["prompt"], rec["preference"]["chosen"], rec["preference"]["rejected"]) == (
        "q?",
        "yes",
        "no",
    )
    assert rec["meta"] is None


def test_hh_dialogues_that_differ_before_the_end_are_kept_whole(tmp_path: Path) -> None:
    chosen = "\n\nHuman: q1\n\nAssistant: a1"
    rejected = "\n\nHuman: q2\n\nAssistant: a2\n\nHuman: more\n\nAssistant: b2"
    rec = _one(tmp_path, {"chosen": chosen, "rejected": rejected})
    pref = rec["preference"]
    assert (pref["prompt"], pref["chosen"], pref["rejected"]) == ("q1", "a1", "b2")
    assert json.loads(rec["meta"]) == {"rejected_messages": rejected}  # nothing lost


@pytest.mark.parametrize(
    ("label", "chosen"),
    [(1, "A1"), (2, "A2"), ("answer2", "A2"), ("B", "A2"), ("a", "A1"), (2.0, "A2")],
)
def test_answer_pairs_with_a_label(tmp_path: Path, label, chosen: str) -> None:
    rec = _one(tmp_path, {"prompt": "Which?", "answer1": "A1", "answer2": "A2", "preference": label, "id": 3})
    assert (rec["status"], rec["layout"]) == ("kept", "preference")
    rejected = "A1" if chosen == "A2" else "A2"
    assert rec["preference"] == {"prompt": "Which?", "chosen": chosen, "rejected": rejected,
                                 "chosen_media": None, "rejected_media": None, "candidates": None}  # fmt: skip
    assert json.loads(rec["meta"]) == {"id": 3}


def test_answer_pairs_other_label_keys_ties_and_no_label(tmp_path: Path) -> None:
    for key in ("label", "choice", "winner"):
        rec = _one(tmp_path, {"prompt": "p", "answer1": "x", "answer2": "y", key: 2})
        assert (rec["preference"]["chosen"], rec["preference"]["rejected"]) == ("y", "x")
    tie = _one(tmp_path, {"prompt": "p", "answer1": "x", "answer2": "y", "label": "tie"})
    assert tie["preference"]["chosen"] is None
    assert tie["preference"]["candidates"] == [
        {"text": "x", "media_index": None, "score": 0.5},
        {"text": "y", "media_index": None, "score": 0.5},
    ]
    unlabelled = _one(tmp_path, {"prompt": "p", "answer1": "x", "answer2": "y"})
    assert [c["score"] for c in unlabelled["preference"]["candidates"]] == [None, None]
    assert unlabelled["status"] == "kept"
    bad = _one(tmp_path, {"prompt": "p", "answer1": "x", "answer2": "y", "preference": 0})
    assert (
        bad["status"] == "quarantined" and "'preference' 0 does not say which answer is better" in bad["status_detail"]
    )


# ----------------------------------------------------------------------------- fields and hints


def test_fields_mapping_reads_path_and_text_as_a_captioned_image(tmp_path: Path) -> None:
    synth.make_image(tmp_path / "photos" / "a.jpg", 32, 24)
    row = {"path": "photos/a.jpg", "text": "a small photo", "width": 32}
    rec = _one(tmp_path, row, fields={"image": "path", "caption": "text"})
    assert (rec["status"], rec["layout"], rec["modalities"]) == ("kept", "image-text", ["image", "text"])
    assert rec["caption"] == "a small photo" and rec["text"] is None
    assert rec["media"][0]["uri"] == str(tmp_path / "photos/a.jpg")
    assert json.loads(rec["meta"]) == {"width": 32}
    assert rec["scores"] == {"media_referenced": 1.0, "media_missing": 0.0}
    # a swap works, and a value the mapping displaces is kept
    rec = _one(tmp_path, {"text": "T", "caption": "C"}, fields={"caption": "text", "text": "caption"})
    assert (rec["caption"], rec["text"]) == ("T", "C")
    rec = _one(tmp_path, {"text": "T", "caption": "C"}, fields={"caption": "text"})
    assert rec["caption"] == "T" and json.loads(rec["meta"]) == {"fields_replaced": {"caption": "C"}}


def test_fields_mapping_in_parquet(tmp_path: Path) -> None:
    f = tmp_path / "laion.parquet"
    pq.write_table(pa.Table.from_pylist([{"URL": "s3://b/x.jpg", "TEXT": "a dog", "similarity": 0.3}]), f)
    (rec,) = _read(ParquetReader(source="s", path=str(f), params={"fields": {"image": "URL", "caption": "TEXT"}}))
    assert (rec["layout"], rec["caption"], rec["media"][0]["uri"]) == ("image-text", "a dog", "s3://b/x.jpg")
    assert "media_referenced" not in rec["scores"]  # URLs are not checked here


def test_fields_param_is_validated() -> None:
    with pytest.raises(ValidationError, match="unknown record key"):
        JsonlParams(fields={"imgae": "path"})
    with pytest.raises(ValidationError, match="mapped to more than one"):
        JsonlParams(fields={"image": "path", "caption": "path"})


@pytest.mark.parametrize(
    ("row", "named", "mapping"),
    [
        ({"path": "imgs/a.jpg", "text": "a cat"}, "'path'", "fields: {image: path, caption: text}"),
        ({"file_name": "a.png", "text": "x y"}, "'file_name'", "fields: {image: file_name, caption: text}"),
        ({"img": "a", "text": "a dog runs"}, "'img'", "fields: {image: img, caption: text}"),
        ({"image_path": ["a.jpg", "b.jpg"], "caption": "c"}, "'image_path'", "fields: {image: image_path}"),
        ({"url": "https://x.org/a.jpg?s=1", "text": "t"}, "'url'", "fields: {image: url, caption: text}"),
        ({"file": "clips/v.mp4", "text": "a clip"}, "'file'", "fields: {video: file, caption: text}"),
        (
            {"audio_path": "s.flac", "text": "hello there"},
            "'audio_path'",
            "fields: {audio: audio_path, transcript: text}",
        ),
    ],
)
def test_unmapped_media_keys_are_refused_with_the_mapping_to_set(tmp_path: Path, row, named, mapping) -> None:
    rec = _one(tmp_path, row)
    assert (rec["status"], rec["status_reason"]) == ("quarantined", "bad_manifest_row")
    detail = rec["status_detail"]
    assert named in detail and f"keys: {sorted(row)}" in detail
    assert f"sources.s.params.{mapping}" in detail
    assert "unmapped_media: keep" in detail
    kept = _one(tmp_path, row, unmapped_media="keep")  # the old reading, when asked for
    assert kept["status"] == "kept" and kept["media"] == []


def test_rows_that_look_like_text_with_urls_are_not_refused(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"text": "a web page", "url": "https://example.org/page.html", "timestamp": "2020"})
    assert rec["status"] == "kept" and rec["layout"] == "text"
    rec = _one(tmp_path, {"image": "a.jpg", "url": "https://x.org/a.jpg", "caption": "c"})  # media read already
    assert rec["status"] == "kept"


def test_row_that_fits_no_format_names_its_keys_and_a_mapping(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"file_name": "x.jpg", "label_text": "a red bus", "n": 3})
    detail = rec["status_detail"]
    assert "fits no known format" in detail and "keys: ['file_name', 'label_text', 'n']" in detail
    assert "sources.s.params.fields: {image: file_name, caption: label_text}" in detail
    rec = _one(tmp_path, {"foo": 1, "bar": [2]})
    assert "fits no known format" in rec["status_detail"] and "keys: ['bar', 'foo']" in rec["status_detail"]
    assert "conversations" in rec["status_detail"] and "{record key: manifest key}" in rec["status_detail"]


# ----------------------------------------------------------------------------- where media resolve


def test_missing_media_are_counted_and_a_media_root_is_suggested(tmp_path: Path, caplog) -> None:
    corpus = tmp_path / "corpus"
    for i in range(4):
        synth.make_image(corpus / "images" / f"{i}.jpg", 16, 16, seed=i)
    rows = [{"image": f"images/{i}.jpg", "caption": f"c{i}"} for i in range(4)] + [{"text": "no media"}]
    f = _jsonl(corpus / "annotations" / "train.jsonl", rows)  # paths relative to the corpus, not the manifest
    with caplog.at_level(logging.WARNING, logger="operators.ingest.media_check"):
        recs = _read(JsonlReader(source="caps", path=str(f)))
    assert [r["scores"] for r in recs[:4]] == [{"media_referenced": 1.0, "media_missing": 1.0}] * 4
    assert recs[4]["scores"] == {}
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "source 'caps': 4 of 4 media referenced by" in warning
    assert "set sources.caps.params.media_root: .." in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="operators.ingest.media_check"):
        recs = _read(JsonlReader(source="caps", path=str(corpus), params={"media_root": ".."}))
    assert [r["scores"].get("media_missing") for r in recs[:4]] == [0.0] * 4
    assert not caplog.records
    reader = JsonlReader(source="caps", path=str(f))
    assert reader.media_root_hint(str(f), [str(corpus / "annotations" / "images" / "0.jpg")]) == ".."
    # the images one folder down: the suggestion names it
    assert suggest_media_root(str(corpus), str(corpus), [str(corpus / "1.jpg")]) == "images"
    assert suggest_media_root(str(corpus), str(corpus), [str(tmp_path / "elsewhere.jpg")]) is None


def test_media_check_never_fails_a_row(tmp_path: Path) -> None:
    rec = _one(tmp_path, {"image": "bad\u0000name.jpg", "caption": "c"})
    assert rec["status"] == "kept" and "media_missing" not in rec["scores"]  # the ingest step reports it
    rec = _one(tmp_path, {"image": "../../outside.jpg", "caption": "c"})
    assert "media_missing" not in rec["scores"]  # outside the roots: never looked at
