"""A stage that declares GPUs runs (issue 14, item 9): on the session's Ray, which advertises one
GPU (fake on a CPU machine, conftest.py), a ``num_gpus: 1`` stage becomes a GPU actor pool with a
batch size, and every row of every unit comes out. A stage that asks for more GPUs than a local
Ray has fails before any work instead of waiting forever."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.data
import yaml

from curate.config import load_pipeline
from curate.demo.synth import make_image
from curate.engine import Engine, RunError


def _pipeline(tmp_path: Path, resources: dict) -> Path:
    imgs = tmp_path / "imgs"
    imgs.mkdir(exist_ok=True)
    for i, (w, h) in enumerate([(96, 64), (40, 30), (128, 128), (80, 80), (64, 90)]):
        make_image(imgs / f"im{i}.jpg", w, h, seed=i)
    cfg = {
        "name": "gpu",
        "ray": {"units_per_file": 3},  # units of 3 and 2 rows, model batches of 2: units span batches
        "sources": [{"name": "imgs", "reader": "image_folder", "path": "imgs"}],
        "stages": [
            {"op": "probe", "resources": resources},
            {"op": "filter", "params": {"rules": [{"field": "min_side", "min": 50}]}},
        ],
    }
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_gpu_stage_runs_as_a_gpu_actor_pool_with_a_batch_size(ray_local, tmp_path, monkeypatch):
    assert ray_local.cluster_resources().get("GPU") == 1
    calls: list[dict] = []
    original = ray.data.Dataset.map_batches

    def recording(self, fn, *args, **kwargs):
        calls.append({"fn": getattr(fn, "__name__", type(fn).__name__), **{k: kwargs.get(k) for k in ("num_gpus", "batch_size", "concurrency")}})
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "map_batches", recording)
    pipe = _pipeline(tmp_path, {"num_gpus": 1, "batch_size": 2})
    s = Engine(load_pipeline(pipe), tmp_path / "out", progress=False).run()

    gpu = [c for c in calls if c["num_gpus"]]
    assert gpu == [{"fn": "_StatefulOp", "num_gpus": 1.0, "batch_size": 2, "concurrency": 1}]
    assert s["run"]["cluster"]["gpus"] == 1
    assert s["counts"]["input"] == 5 and s["counts"]["kept"] == 4 and s["counts"]["dropped"] == 1
    assert s["balanced"] and s["plan"]["planned_inputs"] == s["plan"]["accounted_inputs"] == 5


def test_gpu_stage_gives_the_rows_a_cpu_stage_gives(ray_local, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    on_gpu = Engine(load_pipeline(_pipeline(tmp_path / "a", {"num_gpus": 1})), tmp_path / "a" / "out", progress=False).run()
    on_cpu = Engine(load_pipeline(_pipeline(tmp_path / "b", {})), tmp_path / "b" / "out", progress=False).run()
    assert on_gpu["counts"] == on_cpu["counts"]
    assert on_gpu["dropped"] == on_cpu["dropped"] == {"filter": {"below_min": 1}}


def test_stage_asking_for_more_gpus_than_local_ray_has_fails_before_work(ray_local, tmp_path):
    pipe = _pipeline(tmp_path, {"num_gpus": 2})
    with pytest.raises(RunError, match=r"stage 'probe' asks for 2 GPU\(s\) per worker and the largest node of this Ray has 1"):
        Engine(load_pipeline(pipe), tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out" / "_work" / "seg-0").exists()


def test_gpu_actor_pool_scales_up_to_the_gpus_there_are():
    from types import SimpleNamespace

    from schemas.config import Resources

    def pool(gpus: float, **res) -> int | tuple[int, int]:
        return Engine._actors(SimpleNamespace(_gpus=gpus), Resources(**res))

    assert pool(1, num_gpus=1) == 1
    assert pool(8, num_gpus=1) == (1, 8)
    assert pool(2, num_gpus=0.5) == (1, 4)
    assert pool(8) == 1  # a stateful CPU stage: one actor unless resources.concurrency says more
