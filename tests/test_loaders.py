"""Shards written by the mixer load with no glue code in webdataset, wids, Hugging Face
`datasets` and Megatron-Energon, on real shards mixed from a small curated table with real
images, PNGs, videos, audio, interleaved documents and text-only rows."""

from __future__ import annotations

import glob
import io
import json
import math
import wave
from collections import Counter
from pathlib import Path

import _mixcorpus
import av
import pytest
import yaml
from PIL import Image

from mixtures.pool import COST_KEYS


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, ray_local):
    return _mixcorpus.build(tmp_path_factory)


def _tars(folder: Path) -> list[str]:
    return sorted(glob.glob(str(folder / "*-[0-9][0-9][0-9][0-9][0-9][0-9].tar")))


def _wds_samples(urls: list[str]) -> list[dict]:
    import webdataset as wds

    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"))


def _check_sample(s: dict) -> None:
    """Every member decodes and agrees with the record JSON."""
    rec = s["json"]
    assert rec["key"] == s["__key__"]
    assert set(rec["cost"]) >= {"samples", "tokens", "seconds"}
    for m in rec["media"]:
        suffix = m["member"].split(".", 1)[1]
        assert suffix in s, f"{s['__key__']}: member {suffix} missing"
        data = s[suffix]
        if m["modality"] == "image":
            assert isinstance(data, Image.Image) and data.size == (m["width"], m["height"])
        elif m["modality"] == "video":
            with av.open(io.BytesIO(data)) as c:
                frame = next(c.decode(video=0))
            assert (frame.width, frame.height) == (m["width"], m["height"])
        elif m["modality"] == "audio":
            with wave.open(io.BytesIO(data)) as w:
                assert math.isclose(w.getnframes() / w.getframerate(), m["duration_s"], abs_tol=0.01)
    text = rec.get("caption") or rec.get("transcript") or rec.get("text")
    if text:
        assert s["txt"] == text


# --------------------------------------------------------------------------- webdataset


def test_webdataset_decodes_every_sample_of_the_premixed_stage(mixed):
    root, report = mixed["premixed"], mixed["reports"]["premixed"]
    urls = _tars(root)
    samples = _wds_samples(urls)
    assert len(samples) == report.totals["samples"] == sum(s["nsamples"] for s in json.loads((root / "train.wids.json").read_text())["shardlist"])
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys)
    for s in samples:
        _check_sample(s)
    # what a trainer reads adds up to the report, group by group, in every unit
    by_group: dict[str, Counter] = {}
    for s in samples:
        by_group.setdefault(s["json"]["group"], Counter()).update(s["json"]["cost"])
    for g, r in report.groups.items():
        for k in COST_KEYS:
            assert math.isclose(by_group.get(g, Counter())[k], r.achieved[k], abs_tol=1e-6), (g, k)
    layouts = Counter(s["json"]["layout"] for s in samples)
    assert set(layouts) == {"image-text", "video-text", "audio-text", "interleaved", "text"}
    assert any("img1.jpg" in s for s in samples) and any("png" in s for s in samples)


def test_webdataset_per_group_shards_hold_their_group_only(mixed):
    root, report = mixed["pergroup"], mixed["reports"]["pergroup"]
    total = 0
    for b in report.blend:
        samples = _wds_samples(_tars(root / b.path))
        assert {s["json"]["group"] for s in samples} == {b.group}
        assert len(samples) == report.groups[b.group].achieved["samples"]
        total += len(samples)
    assert total == report.totals["samples"]


def test_keys_are_unique_across_per_group_folders_when_groups_overlap(mixed):
    root, report = _mixcorpus.mix_extra("overlap")
    keys = [s["__key__"] for s in _wds_samples(sorted(glob.glob(str(root / "*" / "*.tar"))))]
    assert len(keys) == report.totals["samples"]
    assert len(set(keys)) == len(keys)


# --------------------------------------------------------------------------- wids


def test_wids_loads_every_sample_by_index(mixed, tmp_path):
    import wids

    root = mixed["premixed"]
    ds = wids.ShardListDataset(str(root / "train.wids.json"), cache_dir=str(tmp_path))
    expected = _wds_samples(_tars(root))
    assert len(ds) == len(expected) == mixed["reports"]["premixed"].totals["samples"]
    for i in range(len(ds)):
        s = ds[i]
        assert s["__key__"] == expected[i]["__key__"]  # index i is the i-th sample in shard order
        assert s[".json"] == expected[i]["json"]
        for suffix in (k for k in expected[i] if k.endswith(("jpg", "png"))):
            assert isinstance(s[f".{suffix}"], Image.Image) and s[f".{suffix}"].size == expected[i][suffix].size
    last = ds[len(ds) - 1]
    assert last["__key__"] == expected[-1]["__key__"]


def test_wids_per_group_indexes(mixed, tmp_path):
    import wids

    root, report = mixed["pergroup"], mixed["reports"]["pergroup"]
    for b in report.blend:
        ds = wids.ShardListDataset(str(root / b.path / "train.wids.json"), cache_dir=str(tmp_path / b.path))
        assert len(ds) == report.groups[b.group].achieved["samples"]
        assert {ds[i][".json"]["group"] for i in range(len(ds))} == {b.group}


# --------------------------------------------------------------------------- Hugging Face datasets


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


@pytest.fixture()
def hf_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return str(tmp_path / "hf_cache")


def test_hf_datasets_loads_premixed_shards_through_the_card(mixed, hf_offline):
    from datasets import load_dataset

    from mixtures.hf import write_hf_card

    root, report = mixed["premixed"], mixed["reports"]["premixed"]
    card = write_hf_card(root)
    meta = yaml.safe_load(card.read_text().split("---")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default"]
    ds = load_dataset(str(root), split="train", cache_dir=hf_offline)
    expected = {s["__key__"]: s for s in _wds_samples(_tars(root))}
    assert ds.num_rows == len(expected) == report.totals["samples"]
    # one fixed set of fields: every member suffix of the stage, absent ones None
    assert {"json", "txt", "jpg", "png", "img0.jpg", "img1.jpg", "mp4", "wav"} <= set(ds.column_names)
    for row in ds:
        want = expected[row["__key__"]]
        assert _same(row["json"], want["json"])  # HF stores Json with ujson: floats to ~10 digits
        for col in ds.column_names:
            if col.startswith("__"):
                continue
            assert (row[col] is None) == (col not in want), (row["__key__"], col)
            if isinstance(row[col], Image.Image):
                assert row[col].size == want[col].size
            elif row[col] is not None and col in ("mp4", "wav"):
                assert isinstance(row[col], bytes) and len(row[col]) > 0


def test_hf_datasets_one_config_per_group(mixed, hf_offline):
    from datasets import get_dataset_config_names, load_dataset

    from mixtures.hf import write_hf_card

    root, report = mixed["pergroup"], mixed["reports"]["pergroup"]
    write_hf_card(root)
    assert sorted(get_dataset_config_names(str(root))) == sorted(b.path for b in report.blend)
    for b in report.blend:
        ds = load_dataset(str(root), b.path, split="train", cache_dir=hf_offline)
        assert ds.num_rows == report.groups[b.group].achieved["samples"]
        assert {r["group"] for r in ds["json"]} == {b.group}


# --------------------------------------------------------------------------- Megatron-Energon


def _energon_iter(path: Path, *, repeat: bool, limit: int | None = None):
    from megatron.energon import WorkerConfig, get_loader, get_train_dataset

    from mixtures.energon_task import NmmTaskEncoder

    wc = WorkerConfig(rank=0, world_size=1, num_workers=0)
    ds = get_train_dataset(
        str(path), worker_config=wc, batch_size=None, shuffle_buffer_size=None, max_samples_per_sequence=None,
        task_encoder=NmmTaskEncoder(), repeat=repeat,
    )  # fmt: skip
    for i, s in enumerate(get_loader(ds)):
        if limit is not None and i >= limit:
            break
        yield s


def _check_energon_sample(s) -> None:
    rec = s.record
    for m in rec["media"]:
        suffix = m["member"].split(".", 1)[1]
        if m["modality"] == "image":
            assert tuple(s.media[suffix].shape) == (3, m["height"], m["width"])  # Energon's default: torch RGB
        else:
            assert s.media[suffix] is not None


def test_energon_prepare_and_blend_reproduce_the_per_group_mix(mixed):
    from mixtures.energon import export_energon

    root, report = mixed["pergroup"], mixed["reports"]["pergroup"]
    out = export_energon(root)
    for b in report.blend:
        meta = root / b.path / ".nv-meta"
        assert (meta / "index.sqlite").is_file()  # written by `energon prepare`, not by us
        assert yaml.safe_load((meta / "dataset.yaml").read_text())["__class__"] == "CrudeWebdataset"
    assert sorted(Path(p).name for p in out["metadatasets"]) == ["energon.yaml", "energon_epochized.yaml"]

    # blend weights = samples per group: the expected share of every unit is the achieved share
    blend = yaml.safe_load((root / "energon.yaml").read_text())["splits"]["train"]["blend"]
    weights = {e["subflavors"]["group"]: e["weight"] for e in blend}
    assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6)
    groups = report.groups
    for unit in ("samples", "tokens", "seconds", "text_tokens", "image_tokens"):
        mean_cost = {g: groups[g].achieved[unit] / groups[g].achieved["samples"] for g in weights}
        norm = sum(weights[g] * mean_cost[g] for g in weights)
        total = sum(groups[g].achieved[unit] for g in weights)
        for g in weights:
            assert math.isclose(weights[g] * mean_cost[g] / norm, groups[g].achieved[unit] / total, abs_tol=1e-6), (g, unit)

    # one epoch of the epochized blend = exactly the stage's samples, every group, decoded
    expected = {b.group: {s["__key__"] for s in _wds_samples(_tars(root / b.path))} for b in report.blend}
    seen: dict[str, list[str]] = {g: [] for g in expected}
    for s in _energon_iter(root / "energon_epochized.yaml", repeat=False):
        g = s.record["group"]
        assert s.__subflavors__["group"] == g
        seen[g].append(s.__key__)
        _check_energon_sample(s)
    for g, keys in expected.items():
        assert sorted(seen[g]) == sorted(keys), g

    # the weighted blend draws groups in proportion to their weights
    n = 600
    counts = Counter(s.record["group"] for s in _energon_iter(root / "energon.yaml", repeat=True, limit=n))
    assert sum(counts.values()) == n
    for g, w in weights.items():
        assert abs(counts[g] / n - w) < 5 * math.sqrt(w * (1 - w) / n) + 0.01, (g, counts[g] / n, w)


def test_energon_loads_premixed_shards(mixed):
    from mixtures.energon import export_energon

    root, report = mixed["premixed"], mixed["reports"]["premixed"]
    export_energon(root)
    assert (root / ".nv-meta" / "index.sqlite").is_file()
    keys = []
    for s in _energon_iter(root / "energon.yaml", repeat=False):
        keys.append(s.__key__)
        assert s.__subflavors__["stage"] == "premixed"
        _check_energon_sample(s)
    assert sorted(keys) == sorted(s["__key__"] for s in _wds_samples(_tars(root)))
    assert len(keys) == report.totals["samples"]


def test_curate_loaders_cli_writes_the_card(mixed, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    runner = CliRunner()
    root = mixed["pergroup"]
    r = runner.invoke(app, ["loaders", str(root), "--no-energon"])
    assert r.exit_code == 0, r.output
    meta = yaml.safe_load((root / "README.md").read_text().split("---")[1])
    assert sorted(c["config_name"] for c in meta["configs"]) == sorted(b.path for b in mixed["reports"]["pergroup"].blend)
    assert runner.invoke(app, ["loaders", str(tmp_path)]).exit_code == 1
