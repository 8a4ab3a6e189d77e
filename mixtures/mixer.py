"""Mix one stage: curated table -> pool -> plan -> order -> shards (written by Ray tasks) ->
manifest, loader indexes and report.

The driver holds columns only: the pool (about 45 bytes a row), the plan and the order (about 40
bytes a planned sample) and the shard jobs (about 20 bytes a sample); rows, costs in every unit
and media are read by the shard-writing tasks, which Ray spreads over the cluster's nodes (at
most two per CPU in flight). On a cluster, the curated table and the output folder must be on a
file system every node mounts.

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
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixtures.config import Estimators, MixtureConfig, StageMix
from mixtures.gather import gather
from mixtures.gather import remove as remove_gathered
from mixtures.guarantee import Folder, cut_folders
from mixtures.interleave import Order, interleave
from mixtures.planner import MixError, Plan, plan_stage
from mixtures.pool import Pool, leaves_of, load_pool
from mixtures.report import build_report
from mixtures.report_model import BlendEntry, MixReport, ShardGuarantee
from mixtures.shards import ShardJob, ShardStats, write_shard
from schemas.files import atomic_write_json
from schemas.hashing import fingerprint

__all__ = ["MixError", "mix_stage"]

log = logging.getLogger(__name__)

#: shard folders of a stage: "" (the stage folder, pre-mixed) or a leaf path (per-group) -> its jobs
Layout = dict[str, list[ShardJob]]
#: how samples are ordered and cut into shards; part of the config hash, so that a folder of
#: shards cut another way is never resumed as if it were this one
_CUT_VERSION = 2
#: seconds between two writes of manifest.json while shards land (and once at the end)
MANIFEST_EVERY_S = 2.0
#: where the rows the shards draw are gathered while they are written (mixtures/gather.py)
GATHER = ".gather"


def mix_stage(cfg: MixtureConfig, stage_name: str, input_path: str | Path, output: str | Path, *, fresh: bool = False) -> MixReport:
    """Mix one stage into ``output``. Returns the report. Shards are written by Ray tasks on the Ray
    the caller started (`curate mix` opens a session; without one Ray starts itself)."""
    stage = cfg.stage(stage_name)
    estimators = stage.estimators or cfg.estimators
    out = _output_folder(output, fresh)
    pool = load_pool(input_path, stage, estimators, seed=cfg.seed)
    plan = plan_stage(stage, pool, cfg.seed)
    folders, guarantee = _cut(stage, plan, pool)
    _say(stage, guarantee)  # before writing: a strict stage stops here
    manifest = _open_manifest(out, stage, _config_hash(cfg, stage), pool.fingerprint)
    layout = _shard_jobs(stage, plan, pool, out, cfg.seed, folders, estimators=estimators)
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
        nbytes = pool.bytes[plan.rows[order.pos]] + 1024 if stage.shards.max_bytes else None
        orders[leaf.replace("/", "__") if leaf else "."] = (leaf, order, nbytes)
    return cut_folders(stage, orders)


def _say(stage: StageMix, guarantee: ShardGuarantee) -> None:
    """A tolerance the shards cannot hold: an error when the stage is strict, else a warning."""
    if guarantee.held:
        return
    if stage.strict:
        raise MixError(f"{guarantee.message} (strict: no shard written)")
    log.warning("%s Writing the shards that hold %.4f.", guarantee.message, guarantee.achievable)


def _shard_jobs(
    stage: StageMix, plan: Plan, pool: Pool, out: Path, seed: int, folders: list[Folder], *, estimators: Estimators | None = None
) -> Layout:
    """Every folder's shards as jobs: its cuts of the order, as columns."""
    estimators = estimators or Estimators()
    text_first = _text_first(stage)
    groups = list(plan.targets)
    code = {g: i for i, g in enumerate(groups)}
    starts = np.asarray([st.start for st in plan.streams], dtype=np.int64)
    stream_group = np.asarray([code[st.leaf] for st in plan.streams], dtype=np.int32)
    uses = _uses([f.order for f in folders], plan, len(pool))
    layout: Layout = {}
    for f, use in zip(folders, uses, strict=True):
        rows = plan.rows[f.order.pos]
        cols = {
            "file": pool.file_index[rows],
            "row": pool.row_index[rows],
            "use": use,
            "group": stream_group[np.searchsorted(starts, f.order.pos, side="right") - 1] if len(starts) else np.zeros(0, np.int32),
            "repeat": plan.repeats[f.order.pos],
            "phase": f.order.phase,
        }
        del rows
        jobs = []
        for n, c in enumerate(f.cuts):
            part = {k: v[c.start : c.end] for k, v in cols.items()}
            files, part["file"] = np.unique(part["file"], return_inverse=True)
            jobs.append(
                ShardJob(
                    path=str(_folder(out, f.leaf) / f"{stage.shards.split}-{n:06d}.tar"),
                    stage=stage.name,
                    unit=stage.unit,
                    files=[pool.files[int(i)] for i in files],
                    groups=groups,
                    estimators=estimators,
                    seed=seed,
                    text_first=text_first,
                    **{k: v if k == "file" else v.copy() for k, v in part.items()},
                )
            )
        layout[f.leaf] = jobs
    return layout


def _uses(orders: list[Order], plan: Plan, pool_rows: int) -> list[np.ndarray]:
    """For every sample of every order, how many times the stage used its row before (in folder
    order, then sample order): 0 keys it ``<id>``, n keys it ``<id>_<n>``, unique across the
    stage's shards (a row two groups draw gets two keys in a per-group mix)."""
    seen = np.zeros(pool_rows, dtype=np.int32)
    out = []
    for order in orders:
        rows = plan.rows[order.pos]
        o = np.argsort(rows, kind="stable")
        sr = rows[o]
        first = np.concatenate(([True], sr[1:] != sr[:-1])) if len(sr) else np.zeros(0, dtype=bool)
        at = np.arange(len(sr))
        rank = np.empty(len(sr), dtype=np.int32)
        rank[o] = at - np.maximum.accumulate(np.where(first, at, 0))
        use = seen[rows] + rank
        starts = np.flatnonzero(first)
        seen[sr[starts]] += np.diff(np.concatenate((starts, [len(sr)]))).astype(np.int32)
        out.append(use.astype(np.int32))
    return out


def _text_first(stage: StageMix) -> dict[str, float]:
    """Leaf path -> its (inherited) ``text_first`` share, for leaves that set one."""
    out = {}
    for leaf in leaves_of(stage.groups):
        p = next((g.text_first for g in reversed(leaf.specs) if g.text_first is not None), None)
        if p is not None:
            out[leaf.path] = p
    return out


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _finished(job: ShardJob, done: dict[str, Any] | None) -> ShardStats | None:
    """The stats of a shard the manifest lists, when the tar is there with that hash."""
    tar = Path(job.path)
    if not (done and tar.exists() and job.stats_path.exists()):
        return None
    if tar.stat().st_size != done.get("bytes", tar.stat().st_size) or _sha256(tar) != done["sha256"]:
        return None
    return ShardStats.from_json(json.loads(job.stats_path.read_text()))


def _write_shards(jobs: list[ShardJob], out: Path, manifest: dict[str, Any]) -> dict[str, ShardStats]:
    """Write every shard not finished yet, recording each in the manifest as it lands (the file
    at most every MANIFEST_EVERY_S seconds; a shard that landed after the last write is written
    again by a resume, byte-identical). Stats by path."""
    stats: dict[str, ShardStats] = {}
    todo = []
    for job in jobs:
        finished = _finished(job, manifest["shards"].get(os.path.relpath(job.path, out)))
        if finished is None:
            todo.append(job)
        else:
            stats[job.path] = finished
    log.info("stage %s: %d shards, %d to write", manifest["stage"], len(jobs), len(todo))
    todo = gather(todo, out / GATHER)  # every row read once, not once per shard that draws it
    last = time.monotonic()
    nodes: set[str] = set()
    for job, (s, node) in _on_ray(todo):
        nodes.add(node)
        stats[job.path] = s
        manifest["shards"][os.path.relpath(job.path, out)] = {"sha256": s.sha256, "samples": s.samples, "bytes": s.bytes}
        if time.monotonic() - last >= MANIFEST_EVERY_S:
            _atomic_json(out / "manifest.json", manifest)
            last = time.monotonic()
    _atomic_json(out / "manifest.json", manifest)
    remove_gathered(out / GATHER)
    if todo:
        log.info("stage %s: %d shards written by tasks on %d node(s)", manifest["stage"], len(todo), len(nodes))
    return stats


def _write_on_node(job: ShardJob) -> tuple[ShardStats, str]:
    """A shard task: the shard's stats and the Ray node that wrote it."""
    import ray

    return write_shard(job), ray.get_runtime_context().get_node_id()


def _on_ray(jobs: Iterable[ShardJob], in_flight: int | None = None) -> Iterator[tuple[ShardJob, tuple[ShardStats, str]]]:
    """(job, (stats, node)) of every job, one Ray task each, as they finish; tasks spread over
    the cluster's nodes, at most ``in_flight`` (default two per CPU) submitted at a time."""
    jobs = list(jobs)
    if not jobs:
        return
    import ray

    if not ray.is_initialized():
        ray.init()
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_write_on_node)
    limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, ShardJob] = {}
    for job in jobs:
        pending[task.remote(job)] = job
        if len(pending) >= limit:
            ready, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ready[0]), ray.get(ready[0])
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
