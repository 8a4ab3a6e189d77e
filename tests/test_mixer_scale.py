"""The mixer at scale keeps the row-by-row answers: costs and group matching on Arrow columns
equal ``sample_costs`` and ``Leaf.matches`` on every kind of row; the columnar pool enters a row
stored in two bucket partitions once, keeps its bytes per row bounded and fingerprints the input
as a row loop does; chunked drawing and merging give the one-pass order; shards stream their
large media to the file and hash what they wrote; the default shard limit is 1 GiB."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from mixtures.config import Estimators, MixtureConfig, ShardSpec
from mixtures.costs import sample_costs
from mixtures.pool import COST_KEYS, leaves_of, load_pool, order_key, order_keys
from mixtures.table_costs import media_bytes, table_costs
from mixtures.table_match import match_leaves
from schemas.record import from_table, new_media, new_record, to_table


def _media(modality: str, **kw) -> dict:
    return new_media(modality, kw.pop("uri", f"/nowhere/{modality}"), **kw)


def _varied_rows() -> list[dict]:
    """Rows of every shape the cost rules tell apart."""
    rows = []
    rng = np.random.default_rng(0)
    sizes = [(None, None), (0, 480), (640, 0), (1, 1), (27, 29), (56, 56), (640, 480), (1023, 769), (4000, 3000), (12000, 80), (81, 12000)]
    for i, (w, h) in enumerate(sizes):
        rows.append(new_record(source="img", locator=f"i{i}", layout="image-text", caption="x" * (i * 7), media=[_media("image", width=w, height=h, bytes=1000 + i)]))
    for i in range(40):  # random sides and durations, videos with and without sound, audio
        w, h = int(rng.integers(16, 5000)), int(rng.integers(16, 5000))
        d = float(rng.uniform(0, 900)) if i % 7 else None
        media = [
            _media("video", width=w, height=h, duration_s=d, has_audio=bool(i % 2) if i % 3 else None, bytes=int(rng.integers(0, 10**9))),
            _media("audio", duration_s=float(rng.uniform(0, 60)), bytes=None),
            _media("image", width=h, height=w, role="keyframe"),  # keyframes cost nothing
            _media("image", width=w, height=h, error="decode_error: broken"),  # nor do broken media
            _media("image", width=w // 3 + 1, height=h // 3 + 1, error=""),  # an empty error is no error
        ]
        rows.append(new_record(source="vid", locator=f"v{i}", layout="video-text", transcript="é" * i, media=media[: 1 + i % 5]))
    rows.append(
        new_record(
            source="doc", locator="d0", layout="interleaved",
            interleaved=[{"kind": "text", "text": "ab€", "media_index": None}, {"kind": "media", "text": "not counted", "media_index": 0}],
            media=[_media("image", width=300, height=200)],
        )
    )  # fmt: skip
    rows.append(new_record(source="doc", locator="d1", layout="interleaved", text="the body wins", interleaved=[{"kind": "text", "text": "x" * 99, "media_index": None}]))
    rows.append(new_record(source="doc", locator="d2", layout="interleaved", text="", interleaved=[{"kind": "text", "text": "y" * 13, "media_index": None}]))
    rows.append(new_record(source="chat", locator="c0", layout="text", conversation=[{"role": "user", "text": "hello"}, {"role": "assistant", "text": None}, {"role": "user", "text": "日本語"}]))
    rows.append(
        new_record(
            source="pref", locator="p0", layout="preference", instruction="pick", response="r",
            preference={"prompt": "p" * 5, "chosen": "c" * 11, "rejected": None, "chosen_media": None, "rejected_media": None,
                        "candidates": [{"text": "t1", "media_index": None, "score": 1.0}, {"text": None, "media_index": 0, "score": None}]},
        )
    )  # fmt: skip
    rows.append(new_record(source="pref", locator="p1", layout="preference", preference=None, alt_text="alt"))
    rows.append(
        new_record(
            source="agent", locator="a0", layout="trajectory",
            interaction={"goal": "book a flight", "environment": "web", "steps": [{"observation": "page", "media_index": None, "action": '{"click": 1}'}, {"observation": None, "media_index": None, "action": None}]},
        )
    )  # fmt: skip
    rows.append(new_record(source="agent", locator="a1", layout="trajectory", interaction={"goal": None, "environment": None, "steps": None}))
    rows.append(new_record(source="empty", locator="e0", layout="text"))
    for r in rows:
        r["id"] = r["content_hash"] = hashlib.sha1(r["locator"].encode()).hexdigest()[:24]
    return rows


ESTIMATORS = [
    Estimators(),
    Estimators.model_validate({"text": {"chars_per_token": 3.3}, "image": {"patch_size": 16, "merge": 1, "min_pixels": 10000, "max_pixels": 400000}}),
    Estimators.model_validate({"image": {"fixed_tokens": 576}, "video": {"fps": 0.7, "max_frames": 9, "min_frames": 3, "temporal_patch": 3}, "audio": {"frame_rate_hz": 25}}),
]


@pytest.mark.parametrize("est", range(len(ESTIMATORS)))
def test_costs_on_columns_equal_the_row_loop(est):
    rows = _varied_rows()
    table = to_table(rows)
    records = from_table(table)
    e = ESTIMATORS[est]
    got = table_costs(table, e)
    for i, r in enumerate(records):
        want = sample_costs(r, e)
        assert {k: float(got[k][i]) for k in COST_KEYS} == want, (r["locator"], want)
    assert media_bytes(table).tolist() == [sum(m.get("bytes") or 0 for m in r["media"] or []) for r in records]
    # a batch that lacks columns counts them as empty; slices agree with the whole
    part = table.slice(5, 30)
    assert all(np.array_equal(table_costs(part, e)[k], got[k][5:35]) for k in COST_KEYS)
    bare = table.select(["id", "caption"])
    assert table_costs(bare, e)["tokens"].tolist() == [math.ceil(len(r["caption"] or "") / e.text.chars_per_token) for r in records]


def test_costs_with_a_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a cat on a mat", "a dog"], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tok.json"))
    e = Estimators.model_validate({"text": {"tokenizer": str(tmp_path / "tok.json")}})
    table = to_table(_varied_rows())
    got = table_costs(table, e)
    for i, r in enumerate(from_table(table)):
        assert {k: float(got[k][i]) for k in COST_KEYS} == sample_costs(r, e)


def test_group_matching_on_columns_equals_the_row_code():
    rows = _varied_rows()
    for i, r in enumerate(rows):
        r["buckets"] = [["understanding"], ["generation"], ["understanding", "generation"], [], None][i % 5]
        r["tasks"] = [["captioning"], ["asr", "text"], None][i % 3]
        r["modalities"] = [["image", "text"], ["video"], ["audio", "video", "text"], []][i % 4]
        r["scores"] = {"aesthetic": float(i % 9), "clip_score": 0.1 * (i % 4)} if i % 6 else {}
        r["language"] = ["en", "de", None][i % 3]
    groups = MixtureConfig.model_validate(
        {
            "name": "m",
            "stages": [
                {
                    "name": "s",
                    "budget": 10,
                    "groups": [
                        {"name": "u", "buckets": ["understanding"], "groups": [
                            {"name": "img", "where": {"layout": ["image-text"], "rules": [{"field": "aesthetic", "min": 3, "max": 7}]}},
                            {"name": "vid", "where": {"modalities_all": ["video", "text"]}, "tasks": "asr"},
                            {"name": "any", "where": {"modalities_any": ["audio", "image"], "source": ["vid", "doc"]}},
                            {"name": "has", "where": {"has": ["preference.chosen"], "missing": ["caption", "interaction.goal"]}},
                            {"name": "rule", "where": {"rules": [{"field": "clip_score", "min": 0.15, "missing": "pass"}, {"field": "language", "in": ["en"]}]}},
                            {"name": "none", "where": {"modalities_any": []}},
                        ]},
                        {"name": "g", "buckets": ["generation"], "tasks": ["captioning", "asr"]},
                        {"name": "all"},
                    ],
                }
            ],
        }
    ).stages[0].groups  # fmt: skip
    leaves = leaves_of(groups)
    table = to_table(rows)
    got = match_leaves(leaves, table)
    want = np.array([[leaf.matches(r) for leaf in leaves] for r in from_table(table)])
    assert np.array_equal(got, want)
    assert want.any(axis=0).tolist() == [True] * 5 + [False, True, True]  # every clause selects some; "none" takes nothing
    assert not want.all(axis=0)[:5].any()


def _stage(groups: list[dict], unit: str = "samples", **kw) -> MixtureConfig:
    return MixtureConfig.model_validate({"name": "m", "seed": 4, "stages": [{"name": "s", "unit": unit, "budget": 50, "groups": groups, **kw}]})


def test_pool_enters_a_row_once_at_its_first_copy(tmp_path):
    rows = _varied_rows()
    for i, r in enumerate(rows):
        r["buckets"] = ["understanding", "generation"] if i % 3 == 0 else ["understanding"]
        r["status"] = "dropped" if i % 11 == 5 else "kept"
    run = tmp_path / "run" / "samples"
    (run / "bucket=generation").mkdir(parents=True)
    (run / "bucket=understanding").mkdir(parents=True)
    gen = [r for r in rows if "generation" in r["buckets"]]
    pq.write_table(to_table(gen), run / "bucket=generation" / "part-0.parquet")
    pq.write_table(to_table(rows[:30]), run / "bucket=understanding" / "part-0.parquet", row_group_size=7)
    pq.write_table(to_table(rows[30:]), run / "bucket=understanding" / "part-1.parquet")
    cfg = _stage([{"name": "gen", "buckets": ["generation"]}, {"name": "all", "where": {"source": ["img", "vid", "doc", "chat", "pref", "agent"]}}], unit="tokens")
    stage = cfg.stages[0]
    pool = load_pool(tmp_path / "run", stage, cfg.estimators, seed=cfg.seed)
    # the row loop of a pool: every kept row some leaf takes, the first copy of each id
    seen, want = set(), []
    leaves = leaves_of(stage.groups)
    for fi, f in enumerate(pool.files):
        for ri, r in enumerate(from_table(pq.read_table(f))):
            if r["status"] != "kept" or r["id"] in seen:
                continue
            matched = [leaf.path for leaf in leaves if leaf.matches(r)]
            if matched:
                seen.add(r["id"])
                want.append((fi, ri, r, matched))
    assert len(pool) == len(want) and len(want) < len(rows) + len(gen)
    assert pool.file_index.tolist() == [w[0] for w in want] and pool.row_index.tolist() == [w[1] for w in want]
    assert [pool.source_names[s] for s in pool.source] == [w[2]["source"] for w in want]
    assert pool.costs["tokens"].tolist() == [sample_costs(w[2], cfg.estimators)["tokens"] for w in want]
    assert pool.bytes.tolist() == [sum(m.get("bytes") or 0 for m in w[2]["media"]) for w in want]
    for leaf in leaves:
        assert pool.members[leaf.path].tolist() == [i for i, w in enumerate(want) if leaf.path in w[3]]
    fp = hashlib.sha256()
    for w in want:
        fp.update(f"{w[2]['id']}:{w[2].get('content_hash')}\n".encode())
    assert pool.fingerprint == fp.hexdigest()[:16]
    assert pool.order_keys(cfg.seed, 0).tolist() == [order_key(w[2]["id"], cfg.seed, 0) for w in want]
    assert pool.order_keys(9, 2)[[1, 3]].tolist() == [order_key(want[i][2]["id"], 9, 2) for i in (1, 3)]
    assert pool.ids_of(np.array([4, 0, 2])) == [want[i][2]["id"] for i in (4, 0, 2)]


def test_order_keys_are_the_hash_of_id_seed_and_epoch():
    ids = ["a", "b" * 40, "é日", ""]
    assert order_keys(pa.array(ids), 7, 3).tolist() == [order_key(i, 7, 3) for i in ids]


def _synthetic(tmp: Path, rows: int) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_mix_scale

    return bench_mix_scale.make_table(tmp, rows)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return _synthetic(tmp_path_factory.mktemp("synthetic"), 20000)


def test_pool_bytes_per_row_are_bounded(synthetic):
    import bench_mix_scale

    cfg = MixtureConfig.model_validate(bench_mix_scale.mixture(1e6))
    pool = load_pool(synthetic, cfg.stages[0], cfg.estimators, seed=cfg.seed)
    assert len(pool) > 15000
    assert pool.nbytes() / len(pool) <= 64  # arrays of the pool, ids left in the files (README: at most ~100 B a row)


def test_chunked_draw_and_merge_give_the_one_pass_order(synthetic, monkeypatch):
    import bench_mix_scale

    import mixtures.interleave as il
    import mixtures.planner as planner

    mix = bench_mix_scale.mixture(1.0)
    probe = MixtureConfig.model_validate(mix)
    pool = load_pool(synthetic, probe.stages[0], probe.estimators, seed=probe.seed)
    cost = pool.costs["tokens"]
    mix["stages"][0]["budget"] = 0.8 * float(cost.sum())  # the small groups repeat
    mix["stages"][0]["schedule"] = [{"at": 0.4, "weights": {"video": 1.0}}]
    cfg = MixtureConfig.model_validate(mix)
    stage = cfg.stages[0]

    def run():
        plan = planner.plan_stage(stage, pool, cfg.seed)
        return plan, il.interleave(plan, cost), il.interleave(plan, cost, leaf="understanding/video")

    plan, order, video = run()
    assert plan.repeats.max() >= 1 and len(plan.phases) == 2  # repeats and phases are exercised
    monkeypatch.setattr(planner, "_CHUNK", 97)
    monkeypatch.setattr(il, "CHUNK", 50)
    plan2, order2, video2 = run()
    assert np.array_equal(plan.rows, plan2.rows) and np.array_equal(plan.repeats, plan2.repeats)
    assert [s.amount for s in plan.streams] == [s.amount for s in plan2.streams]
    for a, b in ((order, order2), (video, video2)):
        assert np.array_equal(a.pos, b.pos) and np.array_equal(a.lane, b.lane) and np.array_equal(a.cost, b.cost)
    # the draw is the old loop: per source, rows by (key, id), epoch after epoch, while under quota
    st = next(s for s in plan.streams if s.leaf == "understanding/video" and s.phase == 0)
    rows = [r for r in pool.members[st.leaf].tolist() if pool.source_names[pool.source[r]] == st.source]
    first = sorted(rows, key=lambda r: int(pool.order_keys(cfg.seed, 0)[r]))
    n = min(len(first), len(st.items))
    assert st.items[:n].tolist() == first[:n]


def test_large_media_stream_into_the_tar_and_the_hash_is_of_what_was_written(tmp_path, monkeypatch):
    import mixtures.shards as shards

    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB
    small = tmp_path / "small.jpg"
    small.write_bytes(b"\xff\xd8" + b"j" * 3000)
    rows = [
        new_record(source="s", locator="0", layout="video-text", caption="a video", media=[_media("video", uri=str(big), format="mp4", width=64, height=48, duration_s=3.0, bytes=1_280_000)]),
        new_record(source="s", locator="1", layout="image-text", caption="a picture", media=[_media("image", uri=str(small), format="jpeg", width=8, height=8)]),
        new_record(source="s", locator="2", layout="image-text", caption="gone", media=[_media("image", uri=str(tmp_path / "gone.jpg"), format="jpeg")]),
    ]
    for r in rows:
        r["id"] = r["content_hash"] = f"id{r['locator']}"
    pq.write_table(to_table(rows), tmp_path / "part.parquet")
    job = shards.ShardJob(
        path=str(tmp_path / "out" / "train-000000.tar"), stage="s", unit="samples", files=[str(tmp_path / "part.parquet")],
        file=np.zeros(4, np.int32), row=np.array([0, 1, 2, 0], np.int32), use=np.array([0, 0, 0, 1], np.int32),
        group=np.zeros(4, np.int32), groups=["g"], repeat=np.array([0, 0, 0, 1], np.int32), phase=np.zeros(4, np.int32),
        estimators=Estimators(), seed=1, text_first={"g": 0.5},
    )  # fmt: skip
    reads: list[int] = []
    opened = shards.open_media

    class Counted:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def seek(self, *a):
            return self.f.seek(*a)

        def close(self):
            self.f.close()

    def spy(m):
        return Counted(opened(m))

    monkeypatch.setattr(shards, "open_media", spy)
    monkeypatch.setattr(shards, "STREAM_ABOVE", 100_000)
    stats = shards.write_shard(job)
    data = Path(job.path).read_bytes()
    assert stats.sha256 == hashlib.sha256(data).hexdigest() and stats.bytes == len(data)
    assert stats.samples == 3 and [s["key"] for s in stats.skipped] == ["id2"]
    assert max(reads) < 1_280_000  # the big file went to the tar in pieces, never read whole
    # the same bytes as WebDataset's writer, members buffered, would write
    buf = io.BytesIO()
    w = wds.TarWriter(buf, encoder=False, mtime=0.0, user="nmm", group="nmm")
    with tarfile.open(job.path) as t:
        names = t.getnames()
        members = {n: t.extractfile(n).read() for n in names}
    keys = []
    for n in names:
        k = n.split(".", 1)[0]
        if k not in keys:
            keys.append(k)
    for k in keys:
        w.write({"__key__": k, **{n.split(".", 1)[1]: v for n, v in members.items() if n.split(".", 1)[0] == k}})
    w.close()
    assert buf.getvalue() == data
    assert keys == ["id0", "id1", "id0_1"] and members["id0.mp4"] == big.read_bytes()
    rec = json.loads(members["id0_1.json"])
    assert rec["repeat"] == 1 and rec["cost"]["video_tokens"] > 0 and isinstance(rec["text_first"], bool)
    assert not list((tmp_path / "out").glob(".*.tmp"))
    # from the rows gathered into memory-mapped Arrow (what mix_stage does), the very same bytes
    from mixtures.gather import gather

    (again,) = gather([dataclasses.replace(job, path=str(tmp_path / "again" / "train-000000.tar"))], tmp_path / ".gather")
    assert again.gathered and again.gathered_row.tolist() == [0, 1, 2, 0]
    assert shards.write_shard(again).sha256 == stats.sha256 and Path(again.path).read_bytes() == data


def test_a_mix_leaves_no_gathered_rows(ray_local, synthetic, tmp_path):
    import bench_mix_scale

    from mixtures.mixer import mix_stage

    mix = bench_mix_scale.mixture(400000)
    mix["stages"][0]["shards"] = {"max_samples": 100}
    out = tmp_path / "s"
    rep = mix_stage(MixtureConfig.model_validate(mix), "pretrain", synthetic, out)
    assert rep.shards >= 3 and not (out / ".gather").exists()
    written = sum(1 for t in sorted(out.glob("train-*.tar")) for _ in wds.WebDataset(str(t), shardshuffle=False))
    assert written == rep.totals["samples"] and not rep.skipped


def test_shards_default_to_at_most_one_gib():
    assert ShardSpec().max_bytes == 2**30
    assert ShardSpec(max_bytes=None).max_bytes is None
