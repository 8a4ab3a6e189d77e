"""The engine: a validated pipeline -> a Ray Data run -> a curated, accounted table.

The DAG is cut into segments at global operators (dedup): segment 0 reads the sources unit by
unit and runs the row-local stages; each later segment starts with a hash-partitioned global
operator followed by row-local stages. Every segment writes Parquet under OUT/_work:
- segment 0 writes one file per ingest unit, so a rerun skips finished units;
- later segments write a _SUCCESS marker, so a rerun skips finished segments.
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
from curate.ingest import IngestFn
from curate.outputs import finalize
from curate.runtime import ray_session
from curate.sinks import UnitSink
from operators.base import BatchOperator, FusedOperators, GlobalOperator, Operator, Reader, StageContext
from operators.registry import get_operator
from schemas.hashing import fingerprint

__all__ = ["Engine", "RunError", "plan_fingerprint"]

log = logging.getLogger(__name__)


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
        self.units = [  # listing only, before Ray starts: a wrong path fails at once
            {"unit": u["unit"], "source": u["source"], "payload": json.dumps(u["payload"], sort_keys=True), "ordinal": i}
            for i, u in enumerate(self._plan_units())
        ]
        with ray_session(self.cfg.ray, self.address) as cluster:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours (below) counts finished units, Ray's counts blocks
            ctx.print_on_execution_start = False
            ctx.target_max_block_size = 1024 * 1024 * 1024  # keep one ingest unit in one block
            info = {"cluster": cluster, "segments": []}
            rerun_rest = False
            for seg in self.segments:
                started = time.time()
                ran = self._run_segment(seg, force=rerun_rest, info=info)
                rerun_rest = rerun_rest or ran
                info["segments"][-1]["seconds"] = round(time.time() - started, 3)
        info["elapsed_s"] = round(time.time() - t0, 3)
        return finalize(self.out, self.loaded, self._segment_dir(self.segments[-1]), info)

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
            if res.num_gpus:
                kwargs["num_gpus"] = res.num_gpus
            if res.memory_mb:
                kwargs["memory"] = res.memory_mb * 1024 * 1024
            op = ops[0]
            if op.stateful or res.num_gpus:
                ds = ds.map_batches(
                    _StatefulOp,
                    fn_constructor_kwargs={
                        "op_name": op.name,
                        "params": op.params.model_dump(by_alias=True),
                        "ctx": op.ctx,
                    },
                    concurrency=res.concurrency or 1,
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
            pending = [u for u in units if u["unit"] not in done]
            info["units"] = {"total": len(units), "done_before": len(units) - len(pending), "ran": len(pending)}
            info["segments"].append({"segment": 0, "stages": ["ingest", *names], "ran": bool(pending)})
            log.info("segment 0: %d units (%d already done), stages %s", len(units), len(units) - len(pending), names)
            if not pending:
                return False
            ds = ray.data.from_items(pending, override_num_blocks=len(pending))
            ds = ds.map_batches(IngestFn(self.readers), batch_size=None, batch_format="pyarrow", num_cpus=1)
            ds = self._apply_stages(ds, seg)
            before = len(done)
            label = " > ".join(["ingest", *names])
            with self._watch(f"units  {label}", len(pending), lambda: _count(out) - before):
                ds.write_datasink(UnitSink(out))
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
