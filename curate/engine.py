"""The engine: a validated pipeline -> a Ray Data run -> a curated, accounted table.

The DAG is cut into segments at global operators (dedup): segment 0 reads the sources unit by
unit and runs the row-local stages; each later segment starts with a hash-partitioned global
operator followed by row-local stages. Every segment writes Parquet under OUT/_work:
- segment 0 writes one file per ingest unit (``<unit>.parquet``), so a rerun skips finished units.
  OUT/_work/units.json records each planned unit's input fingerprint (payload, and path, size and
  mtime of every file it names) and planned input count. A rerun reads again only the units whose
  fingerprint changed or that are new, deletes the files of units no longer planned (removed
  inputs, another chunking), and rewrites the ingest order (``seq``) of reused files whose place in
  the plan moved, so the result is the one a fresh run on the new inputs gives;
- later segments write one file per input file, so a rerun skips finished files; they run again
  from scratch whenever segment 0 changed.
Rows are never removed in the middle: a filter marks a row dropped, dedup marks it duplicate, a
broken input is quarantined. ``curate.outputs`` then writes OUT/samples and OUT/summary.json.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import LoadedPipeline
from curate.global_phase import ApplyFn, decide_globally
from curate.ingest import IngestFn, describe_unit, planned_inputs, unit_fingerprint, unit_ordinal, with_ordinal
from curate.outputs import finalize
from curate.runtime import ray_session
from curate.sinks import UnitSink
from operators.base import BatchOperator, FusedOperators, GlobalOperator, Operator, Reader, StageContext
from operators.registry import get_operator
from schemas.files import atomic_write_json, atomic_write_parquet
from schemas.hashing import fingerprint

__all__ = ["Engine", "RunError", "plan_fingerprint"]

log = logging.getLogger(__name__)

_UNITS_FILE = "units.json"


class RunError(RuntimeError):
    """The run cannot go on (wrong output folder, failed stage)."""


@dataclass
class Segment:
    index: int
    global_op: GlobalOperator | None
    stages: list[tuple[Operator, Any]] = field(default_factory=list)  # (operator, resources)


def plan_fingerprint(loaded: LoadedPipeline) -> str:
    cfg = loaded.config
    body = {"sources": [s.model_dump() for s in cfg.sources], "stages": [s.model_dump() for s in cfg.stages]}
    return fingerprint(body)


class _StatefulOp:
    """Actor wrapper: builds the (model-backed) operator once per worker."""

    def __init__(self, op_name: str, params: dict, ctx: StageContext) -> None:
        self.op = get_operator(op_name)(params, ctx)

    def __call__(self, batch):
        return self.op(batch)


class Engine:
    def __init__(
        self,
        loaded: LoadedPipeline,
        output: str | Path,
        *,
        address: str | None = None,
        fresh: bool = False,
        progress: bool = True,
    ) -> None:
        self.out = Path(output).resolve()
        self.loaded = loaded.for_output(self.out)
        self.cfg = loaded.config
        self.work = self.out / "_work"
        self.address = address
        self.fresh = fresh
        self.progress = progress
        self.readers = self._readers()
        self.segments = self._segments()
        self.plan: dict[str, dict[str, Any]] = {}
        self._seg0_changed = False
        self._gpus = 0.0

    # -- plan -------------------------------------------------------------------------------
    def _readers(self) -> dict[str, Reader]:
        return {s.spec.name: s.reader for s in self.loaded.sources if s.spec.enabled}

    def _segments(self) -> list[Segment]:
        segments = [Segment(0, None)]
        for st in self.loaded.stages:
            if isinstance(st.op, GlobalOperator):
                segments.append(Segment(len(segments), st.op))
            else:
                segments[-1].stages.append((st.op, st.spec.resources))
        return segments

    def _check_output(self) -> None:
        fp = plan_fingerprint(self.loaded)
        marker = self.work / "plan.json"
        if self.fresh and self.out.exists():
            for name in ("_work", "samples", "rejected", "summary.json"):
                p = self.out / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if marker.exists():
            old = json.loads(marker.read_text()).get("fingerprint")
            if old != fp:
                raise RunError(
                    f"{self.out} holds a run of a different pipeline config (fingerprint {old}, now {fp}); "
                    "use --fresh to start over or choose another --output"
                )
        self.work.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fp, "pipeline": self.cfg.name, "config": str(self.loaded.file)}))

    # -- run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import ray.data

        self._check_output()
        t0 = time.time()
        planned = list(self._plan_units())  # listing only, before Ray starts: a wrong path fails at once
        self.units = [
            {"unit": u["unit"], "source": u["source"], "payload": json.dumps(u["payload"], sort_keys=True), "ordinal": i}
            for i, u in enumerate(planned)
        ]
        self.plan = self._unit_plan(planned)
        info: dict[str, Any] = {"resume": self._reconcile_units()}
        with ray_session(self.cfg.ray, self.address) as cluster:
            self._check_resources(cluster)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours (below) counts finished units, Ray's counts blocks
            ctx.print_on_execution_start = False
            ctx.target_max_block_size = 1024 * 1024 * 1024  # keep one ingest unit in one block
            info.update(cluster=cluster, segments=[])
            rerun_rest = False
            for seg in self.segments:
                started = time.time()
                ran = self._run_segment(seg, force=rerun_rest, info=info)
                rerun_rest = rerun_rest or ran
                info["segments"][-1]["seconds"] = round(time.time() - started, 3)
            info["elapsed_s"] = round(time.time() - t0, 3)
            # per-file partial counts and the explain index, as Ray tasks on the same cluster
            return finalize(self.out, self.loaded, self._segment_dir(self.segments[-1]), info, plan=self.plan)

    # -- the unit plan: fingerprints, planned counts, resume ----------------------------------
    def _unit_plan(self, planned: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """unit id -> its source, ordinal, input fingerprint, planned input count and description.
        Counts are taken on the driver (``curate.ingest.planned_inputs``), or reused from the
        previous run's units.json for a unit whose fingerprint did not change."""
        before = self._recorded_units()
        plan: dict[str, dict[str, Any]] = {}
        for i, u in enumerate(planned):
            fp = unit_fingerprint(u["payload"])
            old = before.get(u["unit"]) or {}
            same = old.get("fp") == fp
            count = old["planned"] if same and "planned" in old else planned_inputs(u["payload"])
            plan[u["unit"]] = {
                "source": u["source"], "ordinal": i, "fp": fp, "planned": count, "where": describe_unit(u["payload"]),
            }  # fmt: skip
            if same and old.get("empty"):
                plan[u["unit"]]["empty"] = True  # read before and gave no rows (so it has no file)
        return plan

    def _recorded_units(self) -> dict[str, dict[str, Any]]:
        path = self.work / _UNITS_FILE
        try:
            return json.loads(path.read_text())["units"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _reconcile_units(self) -> dict[str, int]:
        """Make segment 0's unit files those of the current plan, before anything runs: delete the
        files of units no longer planned and of units whose inputs changed since they were written
        (units.json says from what each was made), renumber reused files whose plan position moved;
        then record the current plan. Returns what it did, by kind."""
        before = self._recorded_units()
        seg0 = self._segment_dir(self.segments[0])
        counts = {"reused": 0, "changed": 0, "stale": 0, "renumbered": 0}
        for f in sorted(seg0.glob("*.parquet")) if seg0.exists() else []:
            unit = self.plan.get(f.stem)
            if unit is None:
                kind = "stale"  # an input removed, or another chunking: never counted again
            elif (before.get(f.stem) or {}).get("fp") != unit["fp"]:
                kind = "changed"  # inputs changed (or unknown: a run from before units.json)
            else:
                counts["reused"] += 1
                counts["renumbered"] += self._renumber(f, unit["ordinal"])
                continue
            f.unlink()
            counts[kind] += 1
        atomic_write_json(self.work / _UNITS_FILE, {"units": self.plan}, indent=None, sort_keys=True)
        self._seg0_changed = counts["changed"] + counts["stale"] + counts["renumbered"] > 0
        if self._seg0_changed:
            log.info(
                "inputs changed since the last run: %d unit files reused (%d renumbered), %d changed, %d no longer planned",
                counts["reused"], counts["renumbered"], counts["changed"], counts["stale"],
            )  # fmt: skip
        return counts

    @staticmethod
    def _renumber(path: Path, ordinal: int) -> int:
        """Move a reused unit file to its new plan position (1 if it had to be rewritten)."""
        import pyarrow.parquet as pq

        seq = pq.read_table(path, columns=["seq"])["seq"]
        first = next((s for s in seq.to_pylist() if s is not None), None)
        if first is None or unit_ordinal(first) == ordinal:
            return 0
        atomic_write_parquet(with_ordinal(pq.read_table(path), ordinal), path)
        return 1

    def _check_resources(self, cluster: dict[str, Any]) -> None:
        """A stage whose workers need more GPUs (or CPUs) than any one node has would wait
        forever: on a fixed local Ray that is an error before any work, on a cluster a warning (it
        may scale up). Also sizes GPU actor pools: up to as many actors as the GPUs allow."""
        import ray

        nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
        largest = {k: max((n.get(k, 0) for n in nodes), default=0) for k in ("CPU", "GPU")}
        self._gpus = float(cluster.get("gpus") or 0)
        for st in self.loaded.stages:
            res = st.spec.resources
            for what, need in (("GPU", res.num_gpus), ("CPU", res.num_cpus)):
                if need and need > largest[what]:
                    msg = (
                        f"stage '{st.spec.stage_name}' asks for {need:g} {what}(s) per worker and the largest "
                        f"node of this Ray has {largest[what]:g}; lower its resources.num_{what.lower()}s or run "
                        "on a cluster that has them"
                    )
                    if cluster.get("local"):
                        raise RunError(msg)
                    log.warning("%s (waiting for the cluster to scale up)", msg)

    @contextmanager
    def _watch(self, label: str, total: int, count: Callable[[], int]) -> Iterator[None]:
        """A progress bar fed by ``count()`` (files written so far) while Ray works."""
        if not self.progress or total <= 0:
            yield
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        stop = threading.Event()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(label, total=total)

            def poll() -> None:
                while not stop.wait(0.5):
                    bar.update(task, completed=min(total, count()))

            thread = threading.Thread(target=poll, daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
                bar.update(task, completed=min(total, count()))

    def _plan_units(self):
        from operators.base import EmptySourceError

        for name, reader in self.readers.items():
            reader.artifacts_dir = str(self.out / "artifacts" / "ingest" / name)  # e.g. decompressed shards
            try:
                yield from reader.plan_checked()  # nothing to read: EmptySourceError, unless allow_empty
            except EmptySourceError:
                raise
            except (OSError, ValueError) as e:
                raise RunError(
                    f"source '{name}' ({reader.name}): {e}. Point it elsewhere with "
                    f"--set sources.{name}.path=PATH, or skip it with --set sources.{name}.enabled=false"
                ) from None

    def _segment_dir(self, seg: Segment) -> Path:
        return self.work / f"seg-{seg.index}"

    def _actors(self, res: Any) -> int | tuple[int, int]:
        """Default actor pool of a stateful or GPU stage: one actor; a GPU stage scales from one up
        to as many actors as the cluster's GPUs hold (its resources.concurrency overrides)."""
        most = int(self._gpus // res.num_gpus) if res.num_gpus else 1
        return (1, most) if most > 1 else 1

    def _apply_stages(self, ds, seg: Segment):
        """One ``map_batches`` per run of stateless operators with the same resources (fused: one
        Arrow conversion for the run), one actor pool per stateful or GPU operator."""
        runs: list[tuple[list[Operator], Any, bool]] = []  # (operators, resources, fusable)
        for op, res in seg.stages:
            fusable = isinstance(op, BatchOperator) and not (op.stateful or res.num_gpus)
            if fusable and runs and runs[-1][2] and runs[-1][1] == res:
                runs[-1][0].append(op)
            else:
                runs.append(([op], res, fusable))
        for ops, res, _ in runs:
            kwargs: dict[str, Any] = {"batch_size": None, "batch_format": "pyarrow", "num_cpus": res.num_cpus}
            op = ops[0]
            if res.num_gpus:
                # Ray Data needs a batch size for GPU actors: the operator's own (the stage's
                # resources.batch_size, else its default), so one call is one model batch.
                # Whole units still reach the sink: a task's outputs are joined into one block
                # (target_max_block_size), and the ledger check would flag a unit cut short.
                kwargs["num_gpus"] = res.num_gpus
                kwargs["batch_size"] = op.batch_size
            if res.memory_mb:
                kwargs["memory"] = res.memory_mb * 1024 * 1024
            if op.stateful or res.num_gpus:
                ds = ds.map_batches(
                    _StatefulOp,
                    fn_constructor_kwargs={
                        "op_name": op.name,
                        "params": op.params.model_dump(by_alias=True),
                        "ctx": op.ctx,
                    },
                    concurrency=res.concurrency or self._actors(res),
                    **kwargs,
                )
            else:
                if res.concurrency:
                    kwargs["concurrency"] = res.concurrency
                ds = ds.map_batches(FusedOperators(ops) if len(ops) > 1 else op, **kwargs)
        return ds

    def _run_segment(self, seg: Segment, *, force: bool, info: dict) -> bool:
        """Run one segment unless its output is complete. Returns True if it ran."""
        import ray.data

        out = self._segment_dir(seg)
        names = [op.stage for op, _ in seg.stages]
        if seg.global_op is None:
            units = self.units
            done = {p.stem for p in out.glob("*.parquet")} if out.exists() else set()
            done |= {u for u, p in self.plan.items() if p.get("empty")}
            pending = [u for u in units if u["unit"] not in done]
            info["units"] = {"total": len(units), "done_before": len(units) - len(pending), "ran": len(pending)}
            changed = bool(pending) or self._seg0_changed
            info["segments"].append({"segment": 0, "stages": ["ingest", *names], "ran": changed})
            log.info("segment 0: %d units (%d already done), stages %s", len(units), len(units) - len(pending), names)
            if not pending:
                return changed
            ds = ray.data.from_items(pending, override_num_blocks=len(pending))
            ds = ds.map_batches(IngestFn(self.readers), batch_size=None, batch_format="pyarrow", num_cpus=1)
            ds = self._apply_stages(ds, seg)
            before = len(done)
            label = " > ".join(["ingest", *names])
            with self._watch(f"units  {label}", len(pending), lambda: _count(out) - before):
                ds.write_datasink(UnitSink(out))
            empty = [u["unit"] for u in pending if not (out / f"{u['unit']}.parquet").exists()]
            if empty:  # the sink writes no file for a unit without rows: remember it was read
                for unit in empty:
                    self.plan[unit]["empty"] = True
                atomic_write_json(self.work / _UNITS_FILE, {"units": self.plan}, indent=None, sort_keys=True)
            return True

        if force:
            shutil.rmtree(out, ignore_errors=True)
        prev = self._segment_dir(self.segments[seg.index - 1])
        files = sorted(prev.glob("*.parquet"))
        gop = seg.global_op
        decisions = decide_globally(gop, files, out, int(info["cluster"].get("cpus") or 1))
        done = {p.stem for p in out.glob("*.parquet")}
        pending = [f for f in files if f.stem not in done]
        info["segments"].append(
            {"segment": seg.index, "stages": [gop.stage, *names], "ran": bool(pending), "files": len(files)}
        )
        if not pending:
            return False
        ds = ray.data.from_items([{"path": str(f)} for f in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(ApplyFn(gop, decisions), batch_size=None, batch_format="pyarrow", num_cpus=1)
        ds = self._apply_stages(ds, seg)
        before = len(done)
        label = " > ".join([gop.stage, *names])
        with self._watch(f"files  {label}", len(pending), lambda: _count(out) - before):
            ds.write_datasink(UnitSink(out))
        return True


def _count(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.parquet")) if folder.exists() else 0
