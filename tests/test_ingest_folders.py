"""Folder readers: media by extension, sidecars, orphans, unsupported files, units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from operators.ingest.folders import ImageFolderReader, MediaFolderReader, VideoFolderReader
from operators.registry import get_reader
from schemas.record import to_table


def _image(path: Path, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)
    return path


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _read(reader) -> list[dict]:
    return [rec for u in reader.plan() for rec in reader.read(u["payload"])]


def _by_locator(rows: list[dict]) -> dict[str, dict]:
    out = {r["locator"]: r for r in rows}
    assert len(out) == len(rows), "locators must be unique"
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _image(root / "a" / "cat.jpg")
    _write(root / "a" / "cat.txt", "  a red cat \n")
    _image(root / "a" / "dog.png", "blue")
    _write(root / "a" / "dog.json", json.dumps({"caption": "a dog", "license": "cc-by", "url": "http://x/dog"}))
    _image(root / "a" / "bad.webp", "green")
    _write(root / "a" / "bad.json", "{not json")
    _image(root / "a" / "plain.bmp")
    _write(root / "b" / "clip.mp4", b"\x00\x00\x00\x18ftypmp42")
    _write(root / "b" / "clip.txt", "a short clip")
    _write(root / "b" / "song.wav", b"RIFF....WAVE")
    _write(root / "b" / "song.txt", "hello world")
    _write(root / "notes.txt", "a sidecar without media")
    _write(root / "readme.md", "# docs")
    _image(root / ".hidden" / "x.jpg")
    _image(root / ".dot.jpg")
    return root


def test_media_folder_records(corpus: Path) -> None:
    rows = _read(MediaFolderReader(source="s", path=str(corpus)))
    recs = _by_locator(rows)
    assert sorted(recs) == sorted(
        str(corpus / p)
        for p in [
            "a/cat.jpg",
            "a/dog.png",
            "a/bad.webp",
            "a/plain.bmp",
            "b/clip.mp4",
            "b/song.wav",
            "notes.txt",
            "readme.md",
        ]
    )
    cat = recs[str(corpus / "a/cat.jpg")]
    assert cat["status"] == "kept"
    assert cat["caption"] == "a red cat"
    assert cat["layout"] == "image-text" and cat["modalities"] == ["image", "text"]
    assert [(m["modality"], m["uri"], m["role"]) for m in cat["media"]] == [
        ("image", str(corpus / "a/cat.jpg"), "input")
    ]
    assert cat["media"][0]["sha256"] is None and cat["id"] == ""  # the engine hashes

    dog = recs[str(corpus / "a/dog.png")]
    assert dog["caption"] == "a dog" and dog["license"] == "cc-by"
    assert json.loads(dog["meta"]) == {"url": "http://x/dog"}

    bad = recs[str(corpus / "a/bad.webp")]
    assert bad["status"] == "kept" and bad["caption"] is None and bad["layout"] == "image"
    assert bad["modalities"] == ["image"]
    (err,) = json.loads(bad["meta"])["sidecar_errors"]
    assert err.startswith("bad.json: JSONDecodeError")

    plain = recs[str(corpus / "a/plain.bmp")]
    assert plain["layout"] == "image" and plain["meta"] is None

    clip = recs[str(corpus / "b/clip.mp4")]
    assert (
        clip["layout"] == "video-text" and clip["caption"] == "a short clip" and clip["modalities"] == ["text", "video"]
    )

    song = recs[str(corpus / "b/song.wav")]
    assert song["layout"] == "audio-text" and song["transcript"] == "hello world" and song["caption"] is None
    assert song["modalities"] == ["audio", "text"]

    orphan = recs[str(corpus / "notes.txt")]
    assert (orphan["status"], orphan["status_reason"]) == ("quarantined", "orphan_sidecar")
    assert orphan["status_operator"] == "ingest:media_folder"
    unsupported = recs[str(corpus / "readme.md")]
    assert (unsupported["status"], unsupported["status_reason"]) == ("quarantined", "unsupported_format")
    assert "'.md'" in unsupported["status_detail"]

    to_table(rows)  # every record fits the Arrow schema


def test_source_license_kept_unless_sidecar_overrides(corpus: Path) -> None:
    recs = _by_locator(_read(MediaFolderReader(source="s", path=str(corpus), license="mit")))
    assert recs[str(corpus / "a/cat.jpg")]["license"] == "mit"
    assert recs[str(corpus / "a/dog.png")]["license"] == "cc-by"


def test_txt_wins_over_json_and_json_value_kept(tmp_path: Path) -> None:
    _image(tmp_path / "x.jpg")
    _write(tmp_path / "x.txt", "from txt")
    _write(tmp_path / "x.json", json.dumps({"caption": "from json", "alt_text": "alt", "language": "en"}))
    (rec,) = _read(MediaFolderReader(source="s", path=str(tmp_path)))
    assert (rec["caption"], rec["alt_text"], rec["language"]) == ("from txt", "alt", "en")
    assert json.loads(rec["meta"]) == {"sidecar_caption": "from json"}


def test_image_folder_quarantines_other_modalities(corpus: Path) -> None:
    recs = _by_locator(_read(ImageFolderReader(source="s", path=str(corpus))))
    clip = recs[str(corpus / "b/clip.mp4")]
    assert (clip["status"], clip["status_reason"]) == ("quarantined", "unsupported_format")
    assert "video file in a source read by 'image_folder'" in clip["status_detail"]
    # the sidecar of a rejected media file goes with it: not a second (orphan) record
    assert str(corpus / "b/clip.txt") not in recs
    assert recs[str(corpus / "a/cat.jpg")]["status"] == "kept"
    kept = sorted(k for k, r in recs.items() if r["status"] == "kept")
    assert kept == sorted(str(corpus / p) for p in ["a/cat.jpg", "a/dog.png", "a/bad.webp", "a/plain.bmp"])


def test_video_folder(corpus: Path) -> None:
    recs = _by_locator(_read(VideoFolderReader(source="s", path=str(corpus))))
    assert [k for k, r in recs.items() if r["status"] == "kept"] == [str(corpus / "b/clip.mp4")]
    assert recs[str(corpus / "a/cat.jpg")]["status_reason"] == "unsupported_format"


def test_units_chunk_and_plan_is_deterministic(corpus: Path) -> None:
    reader = MediaFolderReader(source="s", path=str(corpus), units_per_file=3)
    units = list(reader.plan())
    assert [len(u["payload"]["items"]) for u in units] == [3, 3, 2]
    assert units == list(MediaFolderReader(source="s", path=str(corpus), units_per_file=3).plan())
    paths = [it["path"] for u in units for it in u["payload"]["items"]]
    assert paths == sorted(paths) and len(set(paths)) == 8
    cat = next(it for u in units for it in u["payload"]["items"] if it["path"].endswith("cat.jpg"))
    assert cat == {"path": str(corpus / "a/cat.jpg"), "modality": "image", "sidecars": [str(corpus / "a/cat.txt")]}
    json.dumps([u["payload"] for u in units])  # payloads are JSON
    assert len({u["unit"] for u in units}) == 3


def test_not_recursive(corpus: Path) -> None:
    rows = _read(MediaFolderReader(source="s", path=str(corpus), params={"recursive": False}))
    assert sorted(r["locator"] for r in rows) == [str(corpus / "notes.txt"), str(corpus / "readme.md")]


def test_extra_extensions(tmp_path: Path) -> None:
    _write(tmp_path / "a.jxl", b"\xff\x0a")
    _write(tmp_path / "b.TS", b"G")
    rows = _read(
        MediaFolderReader(source="s", path=str(tmp_path), params={"extensions": {".jxl": "image", "ts": "video"}})
    )
    assert [(r["locator"].rsplit("/", 1)[1], r["layout"]) for r in rows] == [("a.jxl", "image"), ("b.TS", "video")]


def test_glob_path_finds_sidecars_beside(corpus: Path) -> None:
    rows = _read(MediaFolderReader(source="s", path=str(corpus / "a" / "*.jpg")))
    assert [(r["locator"], r["caption"]) for r in rows] == [(str(corpus / "a/cat.jpg"), "a red cat")]


def test_single_file_path(corpus: Path) -> None:
    (rec,) = _read(MediaFolderReader(source="s", path=str(corpus / "b" / "song.wav")))
    assert rec["transcript"] == "hello world"


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(MediaFolderReader(source="s", path=str(tmp_path / "nope")).plan())


def test_params_are_strict_and_registered() -> None:
    with pytest.raises(ValidationError):
        MediaFolderReader(source="s", path="/x", params={"recursve": True})
    for name in ("media_folder", "image_folder", "video_folder", "audio_folder"):
        assert get_reader(name).name == name
    for field in MediaFolderReader.Params.model_fields.values():
        assert field.description


def test_brace_list_of_folders_and_files(tmp_path: Path) -> None:
    for d in ("cam-1", "cam-2", "cam-3"):
        _image(tmp_path / d / "shot.png")
        _write(tmp_path / d / "shot.txt", f"from {d}")
    reader = MediaFolderReader(source="s", path=str(tmp_path / "cam-{1..2}"))
    rows = _read(reader)
    assert [(Path(r["locator"]).parent.name, r["caption"]) for r in rows] == [
        ("cam-1", "from cam-1"),
        ("cam-2", "from cam-2"),
    ]
    assert all(reader.confinement.check(r["media"][0]["uri"]) is None for r in rows)  # each named folder is a root
    assert reader.confinement.check(str(tmp_path / "cam-3" / "shot.png")) is not None  # the one not named is not
    files = MediaFolderReader(source="s", path=str(tmp_path / "{cam-1,cam-3}/shot.png"))
    assert [Path(r["locator"]).parent.name for r in _read(files)] == ["cam-1", "cam-3"]


def test_a_folder_path_with_braces_that_exists_is_taken_as_written(tmp_path: Path) -> None:
    _image(tmp_path / "odd{a,b}" / "x.png")
    rows = _read(MediaFolderReader(source="s", path=str(tmp_path / "odd{a,b}")))
    assert [Path(r["locator"]).name for r in rows] == ["x.png"]
