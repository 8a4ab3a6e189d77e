"""WebDataset reader: grouping by key, member refs with offsets and hashes, damaged tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

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


def test_gzipped_tar_is_unreadable(tmp_path: Path) -> None:
    plain = _tar(tmp_path / "p.tar", MEMBERS[:2])
    gz = tmp_path / "z.tar"
    gz.write_bytes(gzip.compress(plain.read_bytes()))  # offsets into a compressed stream mean nothing
    (rec,) = _read(WebDatasetReader(source="s", path=str(gz)))
    assert rec["status_reason"] == "unreadable"


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
