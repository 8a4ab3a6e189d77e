"""The stage-aware mixer on a synthetic curated table with buckets of very different sizes."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml

from curate.demo.synth import make_image
from mixtures.config import load_mixture
from mixtures.mixer import MixError, mix_stage
from mixtures.report_model import MixReport
from schemas.config_file import ConfigError
from schemas.record import new_media, new_record, to_table


def _rows(tmp: Path) -> dict[str, list[dict]]:
    imgs = [make_image(tmp / f"m{i}.jpg", w, h, seed=i) for i, (w, h) in enumerate([(64, 48), (320, 240), (640, 480)])]
    sizes = {str(p): (int(p.stem[1:]), (64, 48) if p.stem == "m0" else (320, 240) if p.stem == "m1" else (640, 480)) for p in imgs}
    out: dict[str, list[dict]] = {"understanding": [], "generation": []}

    def media(i: int) -> dict:
        p = str(imgs[i % 3])
        w, h = sizes[p][1]
        return new_media("image", p, width=w, height=h, bytes=Path(p).stat().st_size, format="jpeg")

    def row(source: str, i: int, buckets: list[str], layout: str = "image-text", **kw) -> dict:
        rid = hashlib.sha1(f"{source}{i}".encode()).hexdigest()[:24]
        base = dict(id=rid, content_hash=rid, layout=layout, buckets=buckets, status="kept")
        if layout == "image-text":
            base.update(media=[media(i)], modalities=["image", "text"], caption=f"caption {i} of {source}")
        else:
            base.update(modalities=["text"], text=f"text body {i} " * (40 + 10 * (i % 5)))
        base.update(kw)
        return new_record(source=source, locator=f"{source}:{i}", **base)

    for i in range(2000):
        out["understanding"].append(row("big", i, ["understanding"], tasks=["captioning"]))
    for i in range(200):
        out["understanding"].append(row("small", i, ["understanding"], tasks=["captioning"]))
    for i in range(300):
        r = row("gen", i, ["understanding", "generation"], tasks=["captioning", "text_to_image"])
        out["understanding"].append(r)
        out["generation"].append(r)
    for i in range(40):
        out["understanding"].append(row("text", i, ["understanding"], layout="text", tasks=["text"]))
    return out


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("curated")
    for bucket, rows in _rows(tmp).items():
        d = tmp / "run" / "samples" / f"bucket={bucket}"
        d.mkdir(parents=True)
        pq.write_table(to_table(rows), d / "part-00000.parquet")
    return tmp / "run"


MIX = {
    "name": "t",
    "seed": 3,
    "stages": [
        {
            "name": "samples",
            "unit": "samples",
            "budget": 1000,
            "max_repeat": 5,
            "tolerance": 0.05,
            "shards": {"max_samples": 200},
            "groups": [
                {"name": "caption", "weight": 0.5, "buckets": ["understanding"], "where": {"layout": ["image-text"]}},
                {"name": "t2i", "weight": 0.3, "buckets": ["generation"]},
                {"name": "text", "weight": 0.2, "where": {"layout": ["text"]}},
            ],
        },
        {
            "name": "tokens",
            "unit": "tokens",
            "budget": 200000,
            "max_repeat": 10,
            "shards": {"max_samples": 250},
            "groups": [
                {"name": "img", "weight": 0.75, "where": {"layout": ["image-text"]}},
                {"name": "text", "weight": 0.25, "where": {"layout": ["text"]}},
            ],
        },
    ],
}


def load(tmp_path: Path, mix: dict | None = None):
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump(mix or MIX))
    return load_mixture(p)


def test_samples_ratios_hold_over_the_stage_and_every_shard(ray_local, curated, tmp_path):
    rep = mix_stage(load(tmp_path), "samples", curated, tmp_path / "s")
    got = {g: r.achieved["samples"] for g, r in rep.groups.items()}
    assert got == {"caption": 500, "t2i": 300, "text": 200}
    assert rep.shortfalls == []
    assert rep.shards == 5 and rep.within_tolerance
    assert all(p.max_abs_drift <= 0.05 for p in rep.prefix_drift)
    # text has 40 rows: 200 samples is exactly 5 epochs, the cap
    assert rep.groups["text"].sources["text"].repeat_factor == 5.0
    # report.json is the returned report, and reads back to it
    doc = json.loads((tmp_path / "s" / "report.json").read_text())
    assert doc == rep.to_json() and MixReport.from_json(doc) == rep


def test_cap_and_strict(ray_local, curated, tmp_path):
    mix = json.loads(json.dumps(MIX))
    mix["stages"][0]["max_repeat"] = 2  # text: 40 rows x 2 = 80 < 200 wanted
    rep = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "s")
    (short,) = rep.shortfalls
    assert short.group == "text" and short.target == 200 and short.planned == 80
    assert rep.groups["text"].achieved["samples"] == 80
    assert sum(r.achieved["samples"] for r in rep.groups.values()) == 1000  # redistributed
    mix["stages"][0]["strict"] = True
    with pytest.raises(MixError, match=r"text: target 200 samples, at most 80"):
        mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "s2")
    mix["stages"][0].update(strict=False, shortfall="shrink")
    rep = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "s3")
    assert sum(r.achieved["samples"] for r in rep.groups.values()) == 880


def test_token_ratios_within_one_percent(ray_local, curated, tmp_path):
    rep = mix_stage(load(tmp_path), "tokens", curated, tmp_path / "t")
    shares = {g: r.achieved_share for g, r in rep.groups.items()}
    assert abs(shares["img"] - 0.75) < 0.01 and abs(shares["text"] - 0.25) < 0.01
    assert abs(rep.totals["tokens"] - 200000) / 200000 < 0.01


def test_temperature_flattens_sources(ray_local, curated, tmp_path):
    mix = json.loads(json.dumps(MIX))
    stage = mix["stages"][0]
    stage["groups"] = [{"name": "caption", "weight": 1, "buckets": ["understanding"], "where": {"source": ["big", "small"]}}]
    stage["budget"] = 440
    rep = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "a")
    src = rep.groups["caption"].sources
    assert (src["big"].samples, src["small"].samples) == (400, 40)  # T=1: proportional
    stage["temperature"] = 1000.0
    rep = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "b")
    src = rep.groups["caption"].sources
    assert (src["big"].samples, src["small"].samples) == (220, 220)  # T large: uniform


def test_rerun_is_byte_identical_and_resumes(ray_local, curated, tmp_path):
    cfg = load(tmp_path)
    mix_stage(cfg, "samples", curated, tmp_path / "a")
    mix_stage(cfg, "samples", curated, tmp_path / "b")
    tars = sorted((tmp_path / "a").glob("*.tar"))
    for t in tars:
        assert t.read_bytes() == (tmp_path / "b" / t.name).read_bytes()
    victim = tmp_path / "a" / "train-000002.tar"
    before = victim.read_bytes()
    victim.unlink()
    mix_stage(cfg, "samples", curated, tmp_path / "a")
    assert victim.read_bytes() == before
    other = load(tmp_path, {**MIX, "seed": 4})
    with pytest.raises(MixError, match="another mix"):
        mix_stage(other, "samples", curated, tmp_path / "a")


def test_selection_is_stable_when_a_source_is_added(ray_local, curated, tmp_path):
    mix = json.loads(json.dumps(MIX))
    stage = mix["stages"][0]
    stage["groups"] = [
        {"name": "caption", "weight": 0.5, "where": {"source": ["big"]}},
        {"name": "other", "weight": 0.5, "where": {"source": ["small"]}},
    ]
    stage["budget"] = 300
    a = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "a")
    stage["groups"][1]["where"]["source"] = ["small", "gen"]
    b = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "b")
    assert b.groups["caption"].achieved["samples"] == 150

    def ids(folder: Path, group: str) -> set[str]:
        out = set()
        for t in sorted(folder.glob("*.tar")):
            for s in wds.WebDataset(str(t), shardshuffle=False).decode():
                if s["json"]["group"] == group:
                    out.add(s["json"]["id"])
        return out

    assert a.groups["caption"].achieved["samples"] == 150
    assert ids(tmp_path / "a", "caption") == ids(tmp_path / "b", "caption")


def test_shards_are_valid_webdataset(ray_local, curated, tmp_path):
    rep = mix_stage(load(tmp_path), "samples", curated, tmp_path / "s")
    keys = []
    for t in sorted((tmp_path / "s").glob("train-*.tar")):
        with tarfile.open(t) as tar:
            names = tar.getnames()
        # members of a sample are adjacent, one per extension, no dot in the key
        seen, last = set(), None
        for n in names:
            key, ext = n.split(".", 1)
            if key != last:
                assert key not in seen
                seen.add(key)
                last = key
        keys += list(seen)
        stats = json.loads((tmp_path / "s" / t.name.replace(".tar", ".stats.json")).read_text())
        assert stats["samples"] == len(seen)
    assert len(keys) == len(set(keys)) == 1000
    samples = list(wds.WebDataset(sorted(str(t) for t in (tmp_path / "s").glob("*.tar")), shardshuffle=False).decode("pil"))
    assert len(samples) == 1000
    img = next(s for s in samples if "jpg" in s)
    assert img["jpg"].size[0] == img["json"]["media"][0]["width"]
    assert set(img["json"]["cost"]) >= {"samples", "tokens", "seconds", "image_tokens", "text_tokens"}
    index = json.loads((tmp_path / "s" / "train.wids.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert sum(s["nsamples"] for s in index["shardlist"]) == 1000
    assert rep.input_fingerprint


def test_schedule_changes_weights_late_in_the_stage(ray_local, curated, tmp_path):
    mix = json.loads(json.dumps(MIX))
    stage = mix["stages"][0]
    stage["groups"] = [
        {"name": "caption", "weight": 0.8, "where": {"source": ["big"]}},
        {"name": "t2i", "weight": 0.2, "buckets": ["generation"]},
    ]
    stage["schedule"] = [{"at": 0.8, "weights": {"caption": 0.2, "t2i": 0.8}}]
    rep = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "s")
    last = json.loads((tmp_path / "s" / "train-000004.stats.json").read_text())
    first = json.loads((tmp_path / "s" / "train-000000.stats.json").read_text())
    assert first["by_group"]["caption"]["samples"] == 160 and last["by_group"]["t2i"]["samples"] == 160
    assert rep.within_tolerance


def test_bad_mixture_names_file_and_key(tmp_path):
    mix = json.loads(json.dumps(MIX))
    mix["stages"][0]["unit"] = "minutes"
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(mix))
    with pytest.raises(ConfigError, match=r"m\.yaml:\d+: stages\[0\]\.unit"):
        load_mixture(p)


def test_text_tokens_from_a_real_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from mixtures.config import Estimators
    from mixtures.costs import sample_costs

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a cat on a mat", "a dog"], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    row = new_record(source="s", locator="x", layout="text", text="a cat on a mat", caption="a dog and a bird")
    est = Estimators.model_validate({"text": {"tokenizer": str(path)}})
    assert sample_costs(row, est)["text_tokens"] == 5 + 5
    rate = sample_costs(row, Estimators.model_validate({"text": {"chars_per_token": 2.0}}))
    assert rate["text_tokens"] == 15  # (14 + 16) / 2


def test_image_tokens_follow_the_resize_rule():
    from mixtures.config import ImageEstimator
    from mixtures.costs import image_tokens

    est = ImageEstimator()
    assert image_tokens(640, 480, est) == (476 // 14) * (644 // 14) // 4  # sides rounded to 28
    assert image_tokens(4000, 3000, est) <= est.max_pixels // (14 * 14 * 4)
    assert image_tokens(32, 24, est) * 14 * 14 * 4 >= est.min_pixels
    assert image_tokens(640, 480, ImageEstimator(fixed_tokens=256)) == 256


def test_text_first_share_is_drawn_per_sample_and_stable(ray_local, curated, tmp_path):
    mix = json.loads(json.dumps(MIX))
    mix["stages"][0]["groups"][0]["text_first"] = 0.8  # Transfusion: caption before image 80% of the time
    rep = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "a")
    assert abs(rep.groups["caption"].text_first_share - 0.8) < 0.05
    assert rep.groups["t2i"].text_first_share is None
    doc = json.loads((tmp_path / "a" / "report.json").read_text())
    assert "text_first_share" in doc["groups"]["caption"] and "text_first_share" not in doc["groups"]["t2i"]
    samples = list(wds.WebDataset(sorted(str(t) for t in (tmp_path / "a").glob("*.tar")), shardshuffle=False).decode())
    flags = [s["json"]["text_first"] for s in samples if s["json"]["group"] == "caption"]
    assert len(flags) == 500 and sum(flags) == round(rep.groups["caption"].text_first_share * 500)
    assert all("text_first" not in s["json"] for s in samples if s["json"]["group"] != "caption")
    again = mix_stage(load(tmp_path, mix), "samples", curated, tmp_path / "b")
    assert again.groups["caption"].text_first_share == rep.groups["caption"].text_first_share
