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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixtures.config import MixtureConfig, StageMix
from mixtures.guarantee import Folder, cut_folders
from mixtures.interleave import Order, interleave
from mixtures.planner import MixError, Plan, Slot, plan_stage
from mixtures.pool import COST_KEYS, Pool, leaves_of, load_pool, order_key
from mixtures.report import build_report
from mixtures.report_model import BlendEntry, MixReport, ShardGuarantee
from mixtures.shards import ShardJob, ShardSample, ShardStats, write_shard
from schemas.files import atomic_write_json
from schemas.hashing import fingerprint

__all__ = ["MixError", "mix_stage"]

log = logging.getLogger(__name__)

#: shard folders of a stage: "" (the stage folder, pre-mixed) or a leaf path (per-group) -> its jobs
Layout = dict[str, list[ShardJob]]
#: how samples are ordered and cut into shards; part of the config hash, so that a folder of
#: shards cut another way is never resumed as if it were this one
_CUT_VERSION = 2


def mix_stage(cfg: MixtureConfig, stage_name: str, input_path: str | Path, output: str | Path, *, fresh: bool = False) -> MixReport:
    """Mix one stage into ``output``. Returns the report. Shards are written by Ray tasks on the Ray
    the caller started (`curate mix` opens a session; without one Ray starts itself)."""
    stage = cfg.stage(stage_name)
    out = _output_folder(output, fresh)
    pool = load_pool(input_path, stage, stage.estimators or cfg.estimators)
    plan = plan_stage(stage, pool, cfg.seed)
    folders, guarantee = _cut(stage, plan, pool)
    _say(stage, guarantee)  # before writing: a strict stage stops here
    manifest = _open_manifest(out, stage, _config_hash(cfg, stage), pool.fingerprint)
    layout = _shard_jobs(stage, plan, pool, out, cfg.seed, folders)
    jobs = [j for leaf_jobs in layout.values() for j in leaf_jobs]
    stats = _write_shards(jobs, out, manifest)
    blend = _write_indexes(stage, plan, layout, stats, out)
    names = [os.path.relpath(j.path, out) for j in jobs]
    full = [j is not leaf_jobs[-1] for leaf_jobs in layout.values() for j in leaf_jobs]
    report = build_report(cfg, stage, plan, pool, [stats[j.path] for j in jobs], blend=blend, names=names, full=full, guarantee=guarantee)
    _atomic_json(out / "report.json", report.to_json())
    return report


# --------------------------------------------------------------------------- plan -> jobs


def _config_hash(cfg: MixtureConfig, stage: StageMix) -> str:
    body = {"seed": cfg.seed, "estimators": (stage.estimators or cfg.estimators).model_dump(), "stage": stage.model_dump(), "cut": _CUT_VERSION}
    return fingerprint(body)


def _folder(out: Path, leaf: str) -> Path:
    return out / leaf.replace("/", "__") if leaf else out


def _cut(stage: StageMix, plan: Plan, pool: Pool) -> tuple[list[Folder], ShardGuarantee]:
    """The stage's sample order (one per group folder in per-group mode), cut into shards that
    hold the tolerance where the shard size allows (mixtures/guarantee.py)."""
    cost = pool.costs[stage.unit]
    leaves = [""] if stage.shards.mode == "premixed" else list(plan.targets)
    orders: dict[str, tuple[str, Order, np.ndarray | None]] = {}
    for leaf in leaves:
        order = interleave(plan, cost, leaf=leaf or None)
        nbytes = np.asarray([pool.bytes[plan.row(s)] + 1024 for s in order.slots], dtype=np.int64) if stage.shards.max_bytes else None
        orders[leaf.replace("/", "__") if leaf else "."] = (leaf, order, nbytes)
    return cut_folders(stage, orders)


def _say(stage: StageMix, guarantee: ShardGuarantee) -> None:
    """A tolerance the shards cannot hold: an error when the stage is strict, else a warning."""
    if guarantee.held:
        return
    if stage.strict:
        raise MixError(f"{guarantee.message} (strict: no shard written)")
    log.warning("%s Writing the shards that hold %.4f.", guarantee.message, guarantee.achievable)


def _shard_jobs(stage: StageMix, plan: Plan, pool: Pool, out: Path, seed: int, folders: list[Folder]) -> Layout:
    """Every folder's shards as jobs: its cuts of the order, keyed."""
    text_first = _text_first(stage)
    uses: Counter[str] = Counter()
    layout: Layout = {}
    for f in folders:
        keys = _keys(f.order.slots, plan, pool, uses)
        layout[f.leaf] = [
            ShardJob(
                path=str(_folder(out, f.leaf) / f"{stage.shards.split}-{n:06d}.tar"),
                samples=[_sample(slot, keys[slot], plan, pool, seed, text_first) for slot in f.order.slots[c.start : c.end]],
                stage=stage.name,
                unit=stage.unit,
            )
            for n, c in enumerate(f.cuts)
        ]
    return layout


def _keys(order: list[Slot], plan: Plan, pool: Pool, uses: Counter[str] | None = None) -> dict[Slot, str]:
    """The id on first use, ``<id>_<n>`` on the n-th repeat: unique across the stage's shards.
    ``uses`` is shared by the groups of a per-group mix, so a row two groups draw gets two keys."""
    uses = Counter() if uses is None else uses
    keys = {}
    for slot in order:
        sid = pool.ids[plan.row(slot)]
        n = uses[sid]
        keys[slot] = sid if n == 0 else f"{sid}_{n}"
        uses[sid] += 1
    return keys


def _text_first(stage: StageMix) -> dict[str, float]:
    """Leaf path -> its (inherited) ``text_first`` share, for leaves that set one."""
    out = {}
    for leaf in leaves_of(stage.groups):
        p = next((g.text_first for g in reversed(leaf.specs) if g.text_first is not None), None)
        if p is not None:
            out[leaf.path] = p
    return out


def _sample(slot: Slot, key: str, plan: Plan, pool: Pool, seed: int, text_first: dict[str, float]) -> ShardSample:
    st = plan.streams[slot.stream]
    row = st.items[slot.item]
    share = text_first.get(st.leaf)
    return ShardSample(
        file=pool.files[pool.file_index[row]],
        row=pool.row_index[row],
        key=key,
        group=st.leaf,
        repeat=st.repeat[slot.item],
        phase=st.phase,
        cost={k: float(pool.costs[k][row]) for k in COST_KEYS},
        # a pure function of (seed, key): reruns and resumes agree
        text_first=None if share is None else order_key(key, seed, -1) < share * 2**64,
    )


# --------------------------------------------------------------------------- write


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=1, sort_keys=True)


def _output_folder(output: str | Path, fresh: bool) -> Path:
    out = Path(output).resolve()
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _open_manifest(out: Path, stage: StageMix, config_hash: str, input_fingerprint: str) -> dict[str, Any]:
    """The manifest of a mix already in ``out`` (its finished shards), or a new one; a folder that
    holds another mix (other config or input) is an error."""
    path = out / "manifest.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old and (old.get("config_hash"), old.get("input_fingerprint")) != (config_hash, input_fingerprint):
        raise MixError(
            f"{out} holds shards of another mix (config {old.get('config_hash')}, input "
            f"{old.get('input_fingerprint')}; now {config_hash}, {input_fingerprint}); use --fresh or another --output"
        )
    return {"stage": stage.name, "config_hash": config_hash, "input_fingerprint": input_fingerprint, "shards": old.get("shards", {})}


def _finished(job: ShardJob, done: dict[str, Any] | None) -> ShardStats | None:
    """The stats of a shard the manifest lists, when the tar is there with that hash."""
    tar = Path(job.path)
    if not (done and tar.exists() and job.stats_path.exists()):
        return None
    if hashlib.sha256(tar.read_bytes()).hexdigest() != done["sha256"]:
        return None
    return ShardStats.from_json(json.loads(job.stats_path.read_text()))


def _write_shards(jobs: list[ShardJob], out: Path, manifest: dict[str, Any]) -> dict[str, ShardStats]:
    """Write every shard not finished yet, recording each in the manifest as it lands. Stats by path."""
    stats: dict[str, ShardStats] = {}
    todo = []
    for job in jobs:
        finished = _finished(job, manifest["shards"].get(os.path.relpath(job.path, out)))
        if finished is None:
            todo.append(job)
        else:
            stats[job.path] = finished
    log.info("stage %s: %d shards, %d to write", manifest["stage"], len(jobs), len(todo))
    for job, s in _on_ray(todo):
        stats[job.path] = s
        manifest["shards"][os.path.relpath(job.path, out)] = {"sha256": s.sha256, "samples": s.samples, "bytes": s.bytes}
        _atomic_json(out / "manifest.json", manifest)
    _atomic_json(out / "manifest.json", manifest)
    return stats


def _on_ray(jobs: list[ShardJob]) -> Iterator[tuple[ShardJob, ShardStats]]:
    """(job, stats) of every job, one Ray task each, as they finish."""
    if not jobs:
        return
    import ray

    task = ray.remote(num_cpus=1)(write_shard)
    pending = {task.remote(j): j for j in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(ready[0]), ray.get(ready[0])


# --------------------------------------------------------------------------- index


def _wids(name: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name, "shardlist": shards}


def _write_indexes(stage: StageMix, plan: Plan, layout: Layout, stats: dict[str, ShardStats], out: Path) -> list[BlendEntry]:
    """A wids index per shard folder, and in per-group mode one over all groups with each group's
    blend weight. Returns the blend (per-group mode; empty when pre-mixed)."""
    split = stage.shards.split
    folders = []  # (group, folder name, samples, amount) of every group folder
    for leaf, jobs in layout.items():
        folder = _folder(out, leaf)
        shards = [{"url": stats[j.path].shard, "nsamples": stats[j.path].samples} for j in jobs]
        _atomic_json(folder / f"{split}.wids.json", _wids(f"{stage.name}/{leaf}" if leaf else stage.name, shards))
        if leaf:
            folders.append((leaf, folder.name, sum(stats[j.path].samples for j in jobs), plan.allocated.get(leaf, 0.0)))
    total = sum(n for _, _, n, _ in folders)
    # the weight is a sampling probability: what a loader mixing the group folders draws
    blend = [BlendEntry(leaf, name, n, amount, n / total if total else 0.0) for leaf, name, n, amount in folders]
    if blend:
        shards = [
            {"url": os.path.relpath(j.path, out), "nsamples": stats[j.path].samples, "weight": b.weight, "group": b.group}
            for b in blend
            for j in layout[b.group]
        ]
        _atomic_json(out / f"{split}.wids.json", _wids(stage.name, shards))
    return blend
