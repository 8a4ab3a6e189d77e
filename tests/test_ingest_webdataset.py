"""WebDataset reader: grouping by key, member refs with offsets and hashes, damaged tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from curate.demo.synth import make_image
from operators.ingest.webdataset_tar import WebDatasetReader, split_member_name
from operators.media_io import read_media_bytes
from schemas.record import to_table


def _png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _read(reader) -> list[dict]:
    return [rec for u in reader.plan() for rec in reader.read(u["payload"])]


JPG = _png("red")
PNG = _png("blue")
MEMBERS = [
    ("000.jpg", JPG),
    ("000.txt", b"  a red square \n"),
    ("000.json", json.dumps({"alt_text": "red", "width": 4, "caption": "from json"}).encode()),
    ("000.cls", b"3"),
    ("001.png", PNG),
    ("001.caption", b"a blue square"),
    ("002.flac", b"fLaC fake audio"),
    ("002.txt", b"hello there"),
    ("003.txt", b"only words"),
    ("004.cls", b"7"),
    ("dir/005.left.jpg", JPG),
    ("dir/005.right.jpg", PNG),
    ("dir/005.mp4", b"\x00\x00\x00\x18ftypisom"),
]


def test_split_member_name() -> None:
    assert split_member_name("dir/abc.seg.jpg") == ("dir/abc", "seg.jpg")
    assert split_member_name("abc.jpg") == ("abc", "jpg")
    assert split_member_name("noext") is None
    assert split_member_name("dir/.hidden") is None


def test_samples(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "shard-0.tar", MEMBERS)
    recs = _read(WebDatasetReader(source="s", path=str(tar)))
    assert [r["locator"] for r in recs] == [f"{tar}#{k}" for k in ["000", "001", "002", "003", "004", "dir/005"]]
    s0, s1, s2, s3, s4, s5 = recs

    assert (s0["status"], s0["layout"], s0["modalities"]) == ("kept", "image-text", ["image", "text"])
    assert (s0["caption"], s0["alt_text"]) == ("a red square", "red")
    assert json.loads(s0["meta"]) == {"cls": "3", "width": 4, "json_caption": "from json"}
    (m,) = s0["media"]
    assert (m["modality"], m["uri"], m["member"], m["role"]) == ("image", str(tar), "000.jpg", "input")
    assert m["length"] == m["bytes"] == len(JPG)
    assert m["sha256"] == hashlib.sha256(JPG).hexdigest()
    assert read_media_bytes(m) == JPG  # offset/length point at the member's data

    assert (s1["caption"], s1["layout"], s1["media"][0]["member"]) == ("a blue square", "image-text", "001.png")
    assert read_media_bytes(s1["media"][0]) == PNG
    assert (s2["layout"], s2["transcript"], s2["caption"]) == ("audio-text", "hello there", None)
    assert (s3["layout"], s3["modalities"], s3["text"], s3["media"]) == ("text", ["text"], "only words", [])
    assert (s4["status"], s4["status_reason"]) == ("quarantined", "unsupported_format")
    assert json.loads(s4["meta"]) == {"cls": "7"}
    assert s5["layout"] == "interleaved" and s5["modalities"] == ["image", "video"]
    assert [x["member"] for x in s5["media"]] == ["dir/005.left.jpg", "dir/005.right.jpg", "dir/005.mp4"]
    assert read_media_bytes(s5["media"][1]) == PNG
    to_table(recs)


def test_hash_media_off(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "a.tar", MEMBERS[:2])
    (rec,) = _read(WebDatasetReader(source="s", path=str(tar), params={"hash_media": False}))
    assert rec["media"][0]["sha256"] is None and rec["media"][0]["offset"] == 512


def test_plan_one_unit_per_tar(tmp_path: Path) -> None:
    for name in ("b.tar", "a.tar", "sub/c.tar"):
        _tar(tmp_path / name, MEMBERS[:2])
    (tmp_path / "readme.txt").write_text("x")
    units = list(WebDatasetReader(source="s", path=str(tmp_path)).plan())
    assert [u["payload"]["file"] for u in units] == [str(tmp_path / n) for n in ("a.tar", "b.tar", "sub/c.tar")]
    assert units == list(WebDatasetReader(source="s", path=str(tmp_path)).plan())
    glob_units = list(WebDatasetReader(source="s", path=str(tmp_path / "*.tar")).plan())
    assert [u["payload"]["file"] for u in glob_units] == [str(tmp_path / n) for n in ("a.tar", "b.tar")]


def _member_offsets(tar: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(tar) as tf:
        return {m.name: (m.offset, m.offset_data) for m in tf.getmembers()}


def test_truncated_inside_member_keeps_earlier_samples(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "t.tar", MEMBERS)
    header, data_at = _member_offsets(tar)["002.flac"]
    tar.write_bytes(tar.read_bytes()[: data_at + 5])  # cut inside 002.flac's data
    recs = _read(WebDatasetReader(source="s", path=str(tar)))
    assert [r["status"] for r in recs] == ["kept", "kept", "quarantined"]
    bad = recs[-1]
    assert (bad["status_reason"], bad["locator"]) == ("unreadable", f"{tar}@{header}")
    assert json.loads(bad["meta"]) == {"incomplete_key": "002", "members_read": ["002.flac"]}


def test_truncated_at_member_boundary(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "t.tar", MEMBERS[:4])
    header, _ = _member_offsets(tar)["000.cls"]
    tar.write_bytes(tar.read_bytes()[: header + 1024])  # 000.cls complete, no end-of-archive blocks
    recs = _read(WebDatasetReader(source="s", path=str(tar)))
    assert [r["status"] for r in recs] == ["kept", "quarantined"]
    assert recs[1]["status_reason"] == "unreadable" and "no end-of-archive marker" in recs[1]["status_detail"]
    assert recs[1]["locator"] == f"{tar}@{header + 1024}"


def test_corrupt_header_in_the_middle(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "t.tar", MEMBERS)
    header, _ = _member_offsets(tar)["003.txt"]
    data = bytearray(tar.read_bytes())
    data[header : header + 512] = b"\xab" * 512  # tarfile would silently stop here
    tar.write_bytes(bytes(data))
    recs = _read(WebDatasetReader(source="s", path=str(tar)))
    assert [r["locator"] for r in recs[:3]] == [f"{tar}#000", f"{tar}#001", f"{tar}#002"]
    assert len(recs) == 4 and recs[3]["status_reason"] == "unreadable"
    assert recs[3]["locator"] == f"{tar}@{header}"


@pytest.mark.parametrize("content", [b"", b"this is not a tar file at all" * 40])
def test_not_a_tar(tmp_path: Path, content: bytes) -> None:
    tar = tmp_path / "x.tar"
    tar.write_bytes(content)
    (rec,) = _read(WebDatasetReader(source="s", path=str(tar)))
    assert (rec["status"], rec["status_reason"], rec["locator"]) == ("quarantined", "unreadable", f"{tar}@0")


def test_gzipped_file_named_tar_is_read_as_gzip(tmp_path: Path) -> None:
    plain = _tar(tmp_path / "p.tar", MEMBERS[:2])
    gz = tmp_path / "z.tar"
    gz.write_bytes(gzip.compress(plain.read_bytes()))  # the first bytes tell the compression, not the name
    reader = WebDatasetReader(source="s", path=str(gz))
    reader.artifacts_dir = str(tmp_path / "copies")
    (rec,) = _read(reader)
    assert (rec["status"], rec["locator"], rec["caption"]) == ("kept", f"{gz}#000", "a red square")
    assert read_media_bytes(rec["media"][0]) == JPG


def test_links_and_odd_names_are_quarantined(tmp_path: Path) -> None:
    tar = tmp_path / "l.tar"
    with tarfile.open(tar, "w") as tf:
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        link = tarfile.TarInfo("sub/x.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "y.jpg"
        tf.addfile(link)
        info = tarfile.TarInfo("sub/README")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    recs = _read(WebDatasetReader(source="s", path=str(tar)))
    assert [(r["locator"], r["status_reason"]) for r in recs] == [
        (f"{tar}#sub/x.jpg", "unsupported_format"),
        (f"{tar}#sub/README", "unsupported_format"),
    ]


# -- compressed shards ---------------------------------------------------------------------------


def _compress(data: bytes, codec: str) -> bytes:
    if codec == "gz":
        return gzip.compress(data, mtime=0)
    if codec == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    if codec == "xz":
        return lzma.compress(data)
    raise AssertionError(codec)


def _sample_members(tmp_path: Path, n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """Real JPEG/PNG images (curate.demo.synth) with captions and JSON, ``n`` samples."""
    out: list[tuple[str, bytes]] = []
    for i in range(start, start + n):
        ext = "jpg" if i % 2 else "png"
        img = make_image(tmp_path / "src" / f"{i}.{ext}", 48 + i, 32, seed=i)
        out += [(f"s{i:04d}.{ext}", img.read_bytes()), (f"s{i:04d}.txt", f"caption {i}".encode())]
        out.append((f"s{i:04d}.json", json.dumps({"language": "en", "idx": i}).encode()))
    return out


def _comparable(rec: dict) -> dict:
    """A record without what names its file: the locator and the media uri."""
    out = {k: v for k, v in rec.items() if k != "locator"}
    out["media"] = [{k: v for k, v in m.items() if k != "uri"} for m in rec["media"]]
    return out


def _shards(tmp_path: Path, codec_suffix: str, codec: str) -> tuple[Path, Path]:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    for k in range(3):
        tar = _tar(plain / f"train-{k:06d}.tar", _sample_members(tmp_path, 4, start=4 * k))
        (packed / f"train-{k:06d}{codec_suffix}").parent.mkdir(parents=True, exist_ok=True)
        (packed / f"train-{k:06d}{codec_suffix}").write_bytes(_compress(tar.read_bytes(), codec))
    return plain, packed


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".tar.gz", "gz"), (".tgz", "gz"), (".tar.zst", "zst"), (".tar.xz", "xz")]
)
def test_folder_of_compressed_shards_reads_like_plain_tars(tmp_path: Path, suffix: str, codec: str) -> None:
    plain, packed = _shards(tmp_path, suffix, codec)
    want = _read(WebDatasetReader(source="s", path=str(plain)))
    reader = WebDatasetReader(source="s", path=str(packed))
    reader.artifacts_dir = str(tmp_path / "out" / "artifacts" / "ingest" / "s")
    units = list(reader.plan())
    assert [Path(u["payload"]["file"]).name for u in units] == [f"train-{k:06d}{suffix}" for k in range(3)]
    got = [rec for u in units for rec in reader.read(u["payload"])]

    assert len(got) == len(want) == 12 and all(r["status"] == "kept" for r in got)  # every sample, no loss
    assert [_comparable(r) for r in got] == [_comparable(r) for r in want]
    assert [r["locator"] for r in got] == [
        f"{packed}/train-{k:06d}{suffix}#s{i:04d}" for k in range(3) for i in range(4 * k, 4 * k + 4)
    ]
    copies = sorted(Path(reader.artifacts_dir).iterdir())
    assert [p.name.split("-")[:2] for p in copies] == [
        ["train", f"{k:06d}"] for k in range(3)
    ]  # one plain tar per shard
    assert all(p.suffix == ".tar" for p in copies)
    for rec, ref in zip(got, want, strict=True):
        (m,) = rec["media"]
        assert Path(m["uri"]).parent == Path(reader.artifacts_dir)
        assert read_media_bytes(m) == read_media_bytes(ref["media"][0])  # the copy is seekable like a tar
        assert reader.confinement_for(units[0]["payload"]).check(m["uri"]) is None  # the copy is inside the roots


def test_rereading_a_compressed_shard_rewrites_the_same_copy(tmp_path: Path) -> None:
    _, packed = _shards(tmp_path, ".tar.gz", "gz")
    reader = WebDatasetReader(source="s", path=str(packed / "train-000001.tar.gz"))
    reader.artifacts_dir = str(tmp_path / "copies")
    first = _read(reader)
    second = _read(reader)
    assert first == second
    assert len(list((tmp_path / "copies").iterdir())) == 1  # no temporary names left behind


def test_truncated_gzip_shard_keeps_the_samples_before_the_damage(tmp_path: Path) -> None:
    plain = _tar(tmp_path / "p.tar", _sample_members(tmp_path, 12))
    gz = tmp_path / "cut.tar.gz"
    packed = _compress(plain.read_bytes(), "gz")
    gz.write_bytes(packed[: len(packed) * 2 // 3])
    reader = WebDatasetReader(source="s", path=str(gz))
    reader.artifacts_dir = str(tmp_path / "copies")
    recs = _read(reader)
    kept, bad = recs[:-1], recs[-1]
    assert kept and all(r["status"] == "kept" for r in kept) and len(kept) < 12
    assert [r["locator"] for r in kept] == [f"{gz}#s{i:04d}" for i in range(len(kept))]
    for r in kept:
        m = r["media"][0]
        member = Path(m["member"])
        assert read_media_bytes(m) == (tmp_path / "src" / f"{int(member.stem[1:])}{member.suffix}").read_bytes()
    assert (bad["status"], bad["status_reason"]) == ("quarantined", "unreadable")
    assert bad["locator"].startswith(f"{gz}@") and "EOFError" in bad["status_detail"] and "gzip" in bad["status_detail"]
    # the sample open when the stream broke is not passed off as whole: the unreadable row names it
    assert json.loads(bad["meta"])["incomplete_key"] == f"s{len(kept):04d}"


@pytest.mark.parametrize("first_member", ["BZh91AY&SY.txt", "\x1f\x8b.txt"])
def test_plain_tar_whose_first_member_looks_like_a_compression_magic(tmp_path: Path, first_member: str) -> None:
    tar = _tar(tmp_path / "odd.tar", [(first_member, b"x"), *MEMBERS[:2]])
    recs = _read(WebDatasetReader(source="s", path=str(tar)))
    assert [r["locator"] for r in recs] == [f"{tar}#{first_member.split('.')[0]}", f"{tar}#000"]
    assert recs[1]["media"][0]["uri"] == str(tar)


def test_bz2_shard(tmp_path: Path) -> None:
    import bz2

    plain = _tar(tmp_path / "p.tar", MEMBERS[:4])
    shard = tmp_path / "s.tar.bz2"
    shard.write_bytes(bz2.compress(plain.read_bytes()))
    reader = WebDatasetReader(source="s", path=str(tmp_path / "*.bz2"))
    reader.artifacts_dir = str(tmp_path / "copies")
    (rec,) = _read(reader)
    assert (rec["locator"], rec["caption"], read_media_bytes(rec["media"][0])) == (f"{shard}#000", "a red square", JPG)


def test_compressed_shard_past_the_size_cap_stops_there(tmp_path: Path) -> None:
    plain = _tar(tmp_path / "p.tar", _sample_members(tmp_path, 8))
    gz = tmp_path / "big.tgz"
    gz.write_bytes(_compress(plain.read_bytes(), "gz"))
    cap = plain.stat().st_size // 2
    reader = WebDatasetReader(source="s", path=str(gz), params={"max_decompressed_gb": cap / 2**30})
    reader.artifacts_dir = str(tmp_path / "copies")
    recs = _read(reader)
    assert 0 < len(recs) - 1 < 8 and recs[-1]["status_reason"] == "unreadable"
    assert "max_decompressed_gb" in recs[-1]["status_detail"]
    (copy,) = (tmp_path / "copies").iterdir()
    assert copy.stat().st_size <= cap


def test_brace_list_picks_exactly_the_named_shards(tmp_path: Path) -> None:
    for k in range(5):
        _tar(tmp_path / f"train-{k:06d}.tar", MEMBERS[:2])
    _tar(tmp_path / "val-000000.tar", MEMBERS[:2])
    _tar(tmp_path / "x" / "a.tar", MEMBERS[:2])
    _tar(tmp_path / "y" / "b.tar", MEMBERS[:2])

    def planned(path: str) -> list[str]:
        return [
            str(Path(u["payload"]["file"]).relative_to(tmp_path))
            for u in WebDatasetReader(source="s", path=path).plan()
        ]

    assert planned(str(tmp_path / "train-{000001..000003}.tar")) == [f"train-00000{k}.tar" for k in (1, 2, 3)]
    assert planned(str(tmp_path / "{train-000004,val-000000}.tar")) == ["train-000004.tar", "val-000000.tar"]
    assert planned(str(tmp_path / "{x,y}")) == ["x/a.tar", "y/b.tar"]
    with pytest.raises(
        FileNotFoundError, match=r"1 of the 3 names in the brace list does not exist: .*/train-000009\.tar$"
    ):
        list(WebDatasetReader(source="s", path=str(tmp_path / "train-{000003,000004,000009}.tar")).plan())
    # media of a brace list across folders stay inside its roots
    reader = WebDatasetReader(source="s", path=str(tmp_path / "{x,y}/*.tar"))
    recs = [r for u in reader.plan() for r in reader.read(u["payload"])]
    assert all(reader.confinement.check(r["media"][0]["uri"]) is None for r in recs) and len(recs) == 2
