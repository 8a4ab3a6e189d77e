"""Mix one stage: curated table -> pool -> plan -> order -> shards (written by Ray tasks) ->
manifest, loader indexes and report.

SHARDS/<split>-000000.tar            pre-mixed shards (or SHARDS/<group>/... per group)
SHARDS/<split>-000000.stats.json     per-shard stats (what `curate stats` reads)
SHARDS/<split>.wids.json             wids-shard-index-v1 (per group in per_group mode)
SHARDS/manifest.json                 finished shards with hashes of config and input (resume)
SHARDS/report.json                   target vs achieved per group in every unit
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from mixtures.config import MixtureConfig, StageMix
from mixtures.interleave import Slot, interleave
from mixtures.planner import MixError, Plan, plan_stage
from mixtures.pool import COST_KEYS, Pool, leaves_of, load_pool, order_key
from mixtures.report import build_report
from mixtures.shards import write_shard
from schemas.files import atomic_write_json
from schemas.hashing import fingerprint

__all__ = ["MixError", "mix_stage"]

log = logging.getLogger(__name__)


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=1, sort_keys=True)


def _config_hash(cfg: MixtureConfig, stage: StageMix) -> str:
    body = {"seed": cfg.seed, "estimators": (stage.estimators or cfg.estimators).model_dump(), "stage": stage.model_dump()}
    return fingerprint(body)


def _cut(order: list[Slot], plan: Plan, pool: Pool, stage: StageMix) -> list[list[Slot]]:
    shards: list[list[Slot]] = [[]]
    size = 0
    for slot in order:
        row = plan.streams[slot[0]].items[slot[1]]
        nbytes = pool.bytes[row] + 1024
        full = len(shards[-1]) >= stage.shards.max_samples
        if stage.shards.max_bytes and shards[-1] and size + nbytes > stage.shards.max_bytes:
            full = True
        if full:
            shards.append([])
            size = 0
        shards[-1].append(slot)
        size += nbytes
    return [s for s in shards if s]


def _text_first(stage: StageMix) -> dict[str, float]:
    """Leaf path -> its (inherited) ``text_first`` share, for leaves that set one."""
    out = {}
    for leaf in leaves_of(stage.groups):
        p = next((g.text_first for g in reversed(leaf.specs) if g.text_first is not None), None)
        if p is not None:
            out[leaf.path] = p
    return out


def _jobs(shards: list[list[Slot]], folder: Path, plan: Plan, pool: Pool, stage: StageMix, keys: dict, seed: int) -> list[dict]:
    jobs = []
    text_first = _text_first(stage)
    for n, slots in enumerate(shards):
        samples = []
        for si, ii in slots:
            st = plan.streams[si]
            row = st.items[ii]
            samples.append(
                {
                    "file": pool.files[pool.file_index[row]],
                    "row": pool.row_index[row],
                    "key": keys[(si, ii)],
                    "group": st.leaf,
                    "repeat": st.repeat[ii],
                    "phase": st.phase,
                    "cost": {k: float(pool.costs[k][row]) for k in COST_KEYS},
                }
            )
            if st.leaf in text_first:  # a pure function of (seed, key): reruns and resumes agree
                samples[-1]["text_first"] = order_key(keys[(si, ii)], seed, -1) < text_first[st.leaf] * 2**64
        jobs.append({"path": str(folder / f"{stage.shards.split}-{n:06d}.tar"), "samples": samples, "stage": stage.name, "unit": stage.unit})
    return jobs


def _keys(order: list[Slot], plan: Plan, pool: Pool, uses: Counter[str] | None = None) -> dict[Slot, str]:
    """The id on first use, ``<id>_<n>`` on the n-th repeat: unique across the stage's shards.
    ``uses`` is shared by the groups of a per-group mix, so a row two groups draw gets two keys."""
    uses = Counter() if uses is None else uses
    keys = {}
    for slot in order:
        sid = pool.ids[plan.streams[slot[0]].items[slot[1]]]
        n = uses[sid]
        keys[slot] = sid if n == 0 else f"{sid}_{n}"
        uses[sid] += 1
    return keys


def _wids(folder: Path, name: str, stats: list[dict], base: Path) -> dict:
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": name,
        "shardlist": [{"url": os.path.relpath(folder / s["shard"], base), "nsamples": s["samples"]} for s in stats],
    }
    return index


def mix_stage(cfg: MixtureConfig, stage_name: str, input_path: str | Path, output: str | Path, *, fresh: bool = False) -> dict:
    """Mix one stage into ``output``. Returns the report."""
    import ray

    stage = cfg.stage(stage_name)
    estimators = stage.estimators or cfg.estimators
    out = Path(output).resolve()
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    pool = load_pool(input_path, stage, estimators)
    plan = plan_stage(stage, pool, cfg.seed)
    cost = pool.costs[stage.unit]
    config_hash = _config_hash(cfg, stage)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest and (manifest.get("config_hash"), manifest.get("input_fingerprint")) != (config_hash, pool.fingerprint):
        raise MixError(
            f"{out} holds shards of another mix (config {manifest.get('config_hash')}, input "
            f"{manifest.get('input_fingerprint')}; now {config_hash}, {pool.fingerprint}); use --fresh or another --output"
        )
    manifest = {"stage": stage.name, "config_hash": config_hash, "input_fingerprint": pool.fingerprint, "shards": manifest.get("shards", {})}

    if stage.shards.mode == "premixed":
        groups = {"": interleave(plan, cost)}
    else:
        groups = {leaf: interleave(plan, cost, leaf=leaf) for leaf in plan.targets}
    jobs: list[dict] = []
    layout: dict[str, list[str]] = {}
    uses: Counter[str] = Counter()
    for leaf, order in groups.items():
        folder = out / leaf.replace("/", "__") if leaf else out
        keys = _keys(order, plan, pool, uses)
        leaf_jobs = _jobs(_cut(order, plan, pool, stage), folder, plan, pool, stage, keys, cfg.seed)
        layout[leaf] = [j["path"] for j in leaf_jobs]
        jobs += leaf_jobs
    todo = []
    stats_by_path: dict[str, dict] = {}
    for job in jobs:
        rel = os.path.relpath(job["path"], out)
        done = manifest["shards"].get(rel)
        stats_file = Path(job["path"][: -len(".tar")] + ".stats.json")
        if (
            done
            and Path(job["path"]).exists()
            and stats_file.exists()
            and hashlib.sha256(Path(job["path"]).read_bytes()).hexdigest() == done["sha256"]
        ):
            stats_by_path[job["path"]] = json.loads(stats_file.read_text())
            continue
        todo.append(job)
    log.info("stage %s: %d shards, %d to write", stage.name, len(jobs), len(todo))
    if todo:  # on the Ray its caller started (`curate mix` opens a session; else Ray starts itself)
        task = ray.remote(num_cpus=1)(write_shard)
        pending = {task.remote(j): j for j in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            stats = ray.get(ready[0])
            stats_by_path[job["path"]] = stats
            rel = os.path.relpath(job["path"], out)
            manifest["shards"][rel] = {"sha256": stats["sha256"], "samples": stats["samples"], "bytes": stats["bytes"]}
            _atomic_json(manifest_path, manifest)
    _atomic_json(manifest_path, manifest)

    # loader indexes
    blend = []
    for leaf, paths in layout.items():
        folder = out / leaf.replace("/", "__") if leaf else out
        stats = [stats_by_path[p] for p in paths]
        name = f"{stage.name}" if not leaf else f"{stage.name}/{leaf}"
        index_path = (out if not leaf else folder) / f"{stage.shards.split}.wids.json"
        _atomic_json(index_path, _wids(folder, name, stats, index_path.parent))
        if leaf:
            samples = sum(s["samples"] for s in stats)
            blend.append({"group": leaf, "path": leaf.replace("/", "__"), "samples": samples, "amount": plan.allocated.get(leaf, 0.0)})
    total_samples = sum(b["samples"] for b in blend)
    for b in blend:  # a sampling probability: what a loader mixing the group folders draws
        b["weight"] = b["samples"] / total_samples if total_samples else 0.0
    if blend:  # wids index over all groups, with each group's weight
        _atomic_json(
            out / f"{stage.shards.split}.wids.json",
            {
                "__kind__": "wids-shard-index-v1",
                "wids_version": 1,
                "name": stage.name,
                "shardlist": [
                    {"url": os.path.relpath(p, out), "nsamples": stats_by_path[p]["samples"], "weight": b["weight"], "group": b["group"]}
                    for b in blend
                    for p in layout[b["group"]]
                ],
            },
        )
    all_stats = [stats_by_path[j["path"]] for j in jobs]
    report = build_report(cfg, stage, plan, pool, all_stats, blend=blend)
    _atomic_json(out / "report.json", report)
    return report

