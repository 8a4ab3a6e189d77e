"""A source with nothing to read is refused before any work, naming the source, its path and what
was looked for; ``allow_empty: true`` lets it give 0 rows."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_pipeline
from curate.demo.synth import make_image
from curate.engine import Engine
from operators.base import EmptySourceError
from operators.ingest._common import NothingToRead, list_files
from operators.registry import get_reader
from schemas.config_file import ConfigError


def _tar_gz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _wrong_extensions(tmp_path: Path) -> Path:
    d = tmp_path / "wrong"
    d.mkdir()
    for name in ("a.zip", "b.zip", "notes.md"):
        (d / name).write_text("x")
    (d / ".hidden.tar").write_text("x")
    return d


#: reader -> (what the error says it looked for, a file that reader does not list in a folder)
READERS = {
    "webdataset": ".tar, .tar.gz, .tgz, .tar.zst",
    "jsonl": ".jsonl, .ndjson",
    "parquet": ".parquet",
    "html": ".html, .htm",
    "media_folder": "any file",
}


def _plan(reader: str, path: Path | str, **kw) -> list:
    return list(get_reader(reader)(source="photos", path=str(path), **kw).plan_checked())


@pytest.mark.parametrize("reader", sorted(READERS))
def test_empty_folder_is_refused_naming_the_source(tmp_path: Path, reader: str) -> None:
    folder = _empty(tmp_path)
    with pytest.raises(EmptySourceError) as e:
        _plan(reader, folder)
    msg = str(e.value)
    assert f"source 'photos' (reader {reader}) has nothing to read" in msg
    assert str(folder) in msg and READERS[reader] in msg and "the folder holds no file" in msg
    assert "allow_empty: true" in msg and isinstance(e.value, ConfigError)
    assert _plan(reader, folder, allow_empty=True) == []


@pytest.mark.parametrize("reader", ["webdataset", "jsonl", "parquet", "html"])
def test_folder_of_other_extensions_is_refused_saying_what_is_there(tmp_path: Path, reader: str) -> None:
    folder = _wrong_extensions(tmp_path)
    with pytest.raises(EmptySourceError, match="source 'photos'") as e:
        _plan(reader, folder)
    msg = str(e.value)
    assert READERS[reader] in msg
    assert "the folder holds 3 files (.zip: 2, .md: 1) and 1 hidden name (skipped)" in msg
    assert _plan(reader, folder, allow_empty=True) == []


@pytest.mark.parametrize("reader", sorted(READERS))
def test_glob_matching_nothing_is_refused(tmp_path: Path, reader: str) -> None:
    pattern = tmp_path / "shards-*" / "*.nothing"
    with pytest.raises(EmptySourceError, match=r"source 'photos'.*the pattern matches no file or folder"):
        _plan(reader, pattern)
    assert _plan(reader, pattern, allow_empty=True) == []


def test_glob_matching_folders_without_input_says_what_they_hold(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.txt").write_text("x")
    with pytest.raises(EmptySourceError, match=r"the 2 folders hold 2 files \(\.txt: 2\)"):
        _plan("webdataset", tmp_path / "*")  # the glob matches folders, whose files are not shards


def test_empty_manifest_file_plans_nothing_and_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_bytes(b"")
    with pytest.raises(EmptySourceError, match="plan no unit"):
        _plan("jsonl", tmp_path / "rows.jsonl")


def test_a_path_that_names_nothing_stays_an_error_even_when_empty_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder") as e:
        _plan("webdataset", tmp_path / "typo", allow_empty=True)
    assert not isinstance(e.value, NothingToRead)  # a typo is not an empty source


def test_list_files_raises_nothing_to_read(tmp_path: Path) -> None:
    with pytest.raises(NothingToRead, match=r"looked for names ending in \.tar, case-insensitive, in sub-folders too"):
        list_files(str(_empty(tmp_path)), (".tar",))
    assert list_files(str(_wrong_extensions(tmp_path))) == [
        str(tmp_path / "wrong" / n) for n in ("a.zip", "b.zip", "notes.md")
    ]


# -- through the config, the CLI and the engine -----------------------------------------------------


def _pipeline(tmp_path: Path, sources: list[dict]) -> Path:
    doc = {"name": "t", "sources": sources, "stages": [{"op": "probe"}]}
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_run_refuses_an_empty_source_as_a_config_error(tmp_path: Path) -> None:
    _wrong_extensions(tmp_path)
    pipe = _pipeline(tmp_path, [{"name": "shards", "reader": "webdataset", "path": "wrong"}])
    load_pipeline(pipe)  # validating a config does not list its sources
    with pytest.raises(ConfigError) as e:
        load_pipeline(pipe, output=tmp_path / "out")  # a run is about to start: listed now
    line = next(i for i, text in enumerate(pipe.read_text().splitlines(), 1) if "path: wrong" in text)
    assert f"{pipe}:{line}: sources[0].path: source 'shards' (reader webdataset) has nothing to read" in str(e.value)
    assert ".tar, .tar.gz, .tgz" in str(e.value)
    load_pipeline(pipe, ["sources.shards.allow_empty=true"], output=tmp_path / "out")
    load_pipeline(pipe, ["sources.shards.enabled=false"], output=tmp_path / "out")

    r = CliRunner().invoke(app, ["run", str(pipe), "-o", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "config error" in r.output and "source 'shards'" in r.output
    assert not (tmp_path / "out" / "_work").exists()  # nothing ran


def test_engine_refuses_an_empty_source_before_ray_work(tmp_path: Path) -> None:
    _empty(tmp_path)
    pipe = _pipeline(tmp_path, [{"name": "shards", "reader": "webdataset", "path": "empty"}])
    engine = Engine(load_pipeline(pipe), tmp_path / "out", progress=False)
    with pytest.raises(EmptySourceError, match="source 'shards'"):
        engine.run()  # planning comes before Ray starts
    assert not (tmp_path / "out" / "_work" / "seg-0").exists()


def test_engine_reads_compressed_shards_and_an_allowed_empty_source(ray_local, tmp_path: Path) -> None:
    members = []
    for i in range(3):
        img = make_image(tmp_path / "src" / f"{i}.jpg", 64 + 8 * i, 48, seed=i)
        members += [(f"k{i}.jpg", img.read_bytes()), (f"k{i}.txt", f"a caption {i}".encode())]
    _tar_gz(tmp_path / "shards" / "train-000000.tar.gz", members[:4])
    _tar_gz(tmp_path / "shards" / "train-000001.tgz", members[4:])
    _empty(tmp_path)
    pipe = _pipeline(
        tmp_path,
        [
            {"name": "wds", "reader": "webdataset", "path": "shards/train-{000000.tar.gz,000001.tgz}"},
            {"name": "later", "reader": "image_folder", "path": "empty", "allow_empty": True},
        ],
    )
    out = tmp_path / "out"
    s = Engine(load_pipeline(pipe, output=out), out, progress=False).run()
    assert s["counts"]["input"] == 3 and s["counts"]["kept"] == 3 and s["balanced"] is True
    rows = pq.read_table(out / "samples").to_pylist()
    assert sorted(r["caption"] for r in rows) == [f"a caption {i}" for i in range(3)]
    assert {r["source"] for r in rows} == {"wds"}
    copies = out / "artifacts" / "ingest" / "wds"
    for r in rows:
        (m,) = r["media"]
        assert Path(m["uri"]).parent == copies and m["member"].startswith("k")
        assert (m["width"], m["height"]) == (64 + 8 * int(m["member"][1]), 48)  # probed from the copy
    assert sorted(p.name.split("-")[1] for p in copies.iterdir()) == ["000000", "000001"]
