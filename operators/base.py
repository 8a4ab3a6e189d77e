"""Operator and reader base classes: one contract for every stage.

An operator is built once per process from its typed params and a ``StageContext`` (stage name,
rows per call, artifacts folder), and is a picklable callable ``pa.Table -> pa.Table``. Its base
is generic over its params model (``class Filter(RowOperator[FilterParams])``: ``self.params`` is
a ``FilterParams``). A row operator implements ``process(row)``, a batch operator
``process_batch(rows)``, an expanding one ``expand(row)``, a global one ``summarize / decide /
apply``. The base does the rest: skipping rows that are no longer kept, lineage, Arrow
conversion, and the error policy of ``operators.errors`` (written once, in ``_guard``).

Operators know nothing of Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from operators.confine import Confinement, source_root
from operators.errors import FATAL_ERRORS, OperatorError, SkipSample
from schemas.config_file import ConfigError
from schemas.enums import ReasonCode, Status
from schemas.record import from_table, new_record, to_table

__all__ = [
    "FATAL_ERRORS",
    "BatchOperator",
    "EmptyParams",
    "EmptySourceError",
    "ExpandOperator",
    "FusedOperators",
    "GlobalOperator",
    "Operator",
    "OperatorError",
    "Params",
    "Reader",
    "RowOperator",
    "SkipSample",
    "StageContext",
    "Unit",
    "mark",
]

log = logging.getLogger(__name__)


class Params(BaseModel):
    """Base of every operator's typed params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class EmptyParams(Params):
    pass


P = TypeVar("P", bound=Params)


@dataclass(frozen=True, slots=True)
class StageContext:
    """What an operator knows of the run it is in, given at construction."""

    #: the stage's name in the pipeline (lineage, status_operator, artifact folder)
    stage: str
    #: rows per ``process_batch`` call (the stage's ``resources.batch_size``); None: the default
    batch_size: int | None = None
    #: where this stage writes files it makes (clips, thumbnails, transcodes): OUT/artifacts/<stage>.
    #: Name files deterministically (by row id) so reruns overwrite. None: the stage writes none.
    artifacts_dir: str | None = None


def mark(row: dict[str, Any], status: Status, operator: str, reason: str, detail: str | None = None) -> None:
    """Set a row's status with the operator and reason that decided it."""
    row["status"] = status.value
    row["status_operator"] = operator
    row["status_reason"] = str(reason)
    row["status_detail"] = detail


def _params_type(cls: type) -> type[Params] | None:
    """The params model named by a generic base (``RowOperator[FilterParams]``), if any."""
    for base in getattr(cls, "__orig_bases__", ()):
        for arg in typing.get_args(base):
            if isinstance(arg, type) and issubclass(arg, Params):
                return arg
    return None


class _Configurable(Generic[P]):
    """Typed params, resolved once per class from its generic base."""

    Params: ClassVar[type[Params]] = EmptyParams
    params: P

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Params" not in cls.__dict__:
            found = _params_type(cls)
            if found is not None:
                cls.Params = found

    def _validated(self, params: Params | dict[str, Any] | None) -> P:
        if isinstance(params, BaseModel):
            return params  # type: ignore[return-value]
        return self.Params.model_validate(params or {})  # type: ignore[return-value]


class Operator(_Configurable[P]):
    """Base of everything a stage can name. Subclasses set ``name`` and their params type."""

    name: ClassVar[str] = ""
    #: rows per call inside a block unless the stage's resources say otherwise
    default_batch_size: ClassVar[int] = 256
    #: model-backed operators load once per worker: the engine runs them as an actor pool
    stateful: ClassVar[bool] = False
    #: (import name, pip requirement) pairs checked before the run starts
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: score keys this operator writes into ``row["scores"]``, with a one-line meaning each
    writes: ClassVar[dict[str, str]] = {}

    def __init__(
        self, params: P | dict[str, Any] | None = None, ctx: StageContext | None = None, *, stage: str | None = None
    ) -> None:
        self.params = self._validated(params)
        self.ctx = ctx or StageContext(stage or self.name)

    @property
    def stage(self) -> str:
        return self.ctx.stage

    @property
    def batch_size(self) -> int:
        """Rows per ``process_batch`` call."""
        return self.ctx.batch_size or self.default_batch_size

    @property
    def artifacts_dir(self) -> str | None:
        return self.ctx.artifacts_dir

    @classmethod
    def check_requirements(cls) -> None:
        """Fail early, with the pip command, when an optional dependency is missing."""
        import importlib.util

        for module, requirement in cls.requires:
            if importlib.util.find_spec(module) is None:
                raise OperatorError(f"Please install {requirement} to use '{cls.name}' (pip install '{requirement}')")

    def validate_setup(self) -> None:
        """Checks that need the params (weights exist...), run on the driver before any work."""

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError


class BatchOperator(Operator[P]):
    """An operator that sees the kept rows of a batch together (model-backed, vectorised):
    implement ``process_batch(rows)``. A batch that fails is retried row by row, so one bad row
    never takes its neighbours with it."""

    def process_batch(self, rows: list[dict[str, Any]]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def drop(self, row: dict[str, Any], reason: ReasonCode | str, detail: str | None = None) -> None:
        mark(row, Status.DROPPED, self.stage, str(reason), detail)

    def quarantine(self, row: dict[str, Any], reason: ReasonCode | str, detail: str | None = None) -> None:
        mark(row, Status.QUARANTINED, self.stage, str(reason), detail)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return to_table(self.run_rows(from_table(batch)))

    def _live(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The kept rows, with this stage added to their lineage."""
        live = [r for r in rows if r["status"] == Status.KEPT.value]
        for r in live:
            r["lineage"] = [*(r.get("lineage") or []), self.stage]
        return live

    def run_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The operator on record dicts (the engine chains several without converting to Arrow)."""
        live = self._live(rows)
        size = self.batch_size
        for start in range(0, len(live), size):
            chunk = live[start : start + size]
            if len(chunk) == 1:
                self._guard(chunk[0], self.process_batch, chunk)
            elif not self._guard(None, self.process_batch, chunk):
                for r in chunk:  # retry row by row: the failing rows get their own reasons
                    self._guard(r, self.process_batch, [r])
        return rows

    def _guard(self, row: dict[str, Any] | None, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` under the error policy; True when it raised nothing.

        Fatal errors stop the run; otherwise ``row`` (when given) is quarantined with the
        error's reason: a ``SkipSample``'s own, or ``operator_error``.
        """
        try:
            fn(*args)
            return True
        except FATAL_ERRORS:
            raise
        except OperatorError:
            raise
        except SkipSample as e:
            if row is not None:
                self.quarantine(row, e.reason, e.detail)
        except Exception as e:  # noqa: BLE001 - any other per-row failure quarantines that row
            if row is not None:
                log.debug("operator %s failed on %s", self.stage, row.get("locator"), exc_info=True)
                self.quarantine(row, ReasonCode.OPERATOR_ERROR, f"{type(e).__name__}: {e}")
        return False


class RowOperator(BatchOperator[P]):
    """An operator that handles one record at a time: implement ``process(row)``."""

    def process(self, row: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def process_batch(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._guard(row, self.process, row)


class ExpandOperator(BatchOperator[P]):
    """An operator that may replace a row by rows derived from it (clips of a video, segments
    of a recording). Implement ``expand(row)``: return None to keep the row as it is, or a list
    of children made with ``schemas.record.derive(row, suffix=...)``. The parent is then marked
    ``split`` (it stays in the ledger), and the children are new kept rows with ``parent_id``.
    An empty list drops the row (reason ``empty``).
    """

    def expand(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        children: list[dict[str, Any]] = []
        for row in self._live(rows):
            got: list[list[dict[str, Any]] | None] = []
            if not self._guard(row, lambda r, got=got: got.append(self.expand(r)), row):
                continue
            parts = got[0]
            if parts is None:
                continue
            if not parts:
                self.drop(row, ReasonCode.EMPTY, "no parts left")
                continue
            mark(row, Status.SPLIT, self.stage, ReasonCode.SPLIT, f"{len(parts)} parts")
            for child in parts:
                child["parent_id"] = row["id"]
                child["unit"], child["seq"] = row.get("unit"), row.get("seq")
            children.extend(parts)
        return rows + children


class FusedOperators:
    """Consecutive row-local operators run as one callable: Arrow -> records once, every
    operator in order on the records, records -> Arrow once (what ``map_batches`` calls)."""

    def __init__(self, ops: list[BatchOperator]) -> None:
        self.ops = ops

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = from_table(batch)
        for op in self.ops:
            rows = op.run_rows(rows)
        return to_table(rows)


class Unit(dict):
    """One piece of ingest work (a chunk of files, a byte range of a manifest, one tar).

    ``unit`` is a stable id (the unit of resume); ``payload`` is JSON-serialisable.
    """

    @classmethod
    def make(cls, source: str, payload: dict[str, Any]) -> Unit:
        digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return cls(unit=f"{source}-{digest}", source=source, payload=payload)


class EmptySourceError(ConfigError):
    """A source that has nothing to read (an empty folder, no file with the reader's extensions,
    a glob that matches nothing), found while planning, before any work: the message names the
    source, its path and what was looked for."""


class Reader(_Configurable[P]):
    """Turns a source into records. ``plan`` runs on the driver and must be cheap (listing only);
    ``read`` runs on workers, one unit at a time, and streams records. The engine plans through
    ``plan_checked``: a source that plans no unit is an ``EmptySourceError`` unless ``allow_empty``.

    A reader never loses an input: a file or line it cannot parse becomes a quarantined record
    (``self.broken(...)``) with its locator and reason.
    """

    name: ClassVar[str] = ""
    #: modalities this reader can produce (documentation for `curate operators`)
    produces: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        source: str,
        path: str,
        license: str | None = None,
        params: P | dict[str, Any] | None = None,
        units_per_file: int = 64,
        allow_roots: Iterable[str] = (),
        allow_schemes: Iterable[str] = (),
        allow_empty: bool = False,
    ) -> None:
        self.source = source
        self.path = path
        self.license = license
        self.params = self._validated(params)
        self.units_per_file = units_per_file
        self.allow_roots = tuple(allow_roots)
        self.allow_schemes = tuple(allow_schemes)
        self.allow_empty = allow_empty
        #: where the reader may write files it makes while reading (the decompressed copy of a
        #: compressed archive): set by the engine to OUT/artifacts/ingest/<source> before planning
        self.artifacts_dir: str | None = None
        self._confinement: Confinement | None = None

    def extra_roots(self) -> list[str]:
        """Folders besides the source's own that this reader's params point media at (media_root)."""
        return []

    @property
    def confinement(self) -> Confinement:
        """Where this source may read from (``operators.confine``): its folder, the reader's
        extra roots, the source's ``allow_roots``; URL schemes from ``allow_schemes``."""
        if self._confinement is None:
            from operators.ingest._common import expand_braces  # lazy: the ingest package imports this module

            named = {source_root(p) for p in expand_braces(self.path)}  # a brace list: each name's folder
            roots = [*named, *self.extra_roots(), *self.allow_roots]
            self._confinement = Confinement(roots, self.allow_schemes)
        return self._confinement

    def confinement_for(self, payload: dict[str, Any]) -> Confinement:
        """The confinement of one unit (a manifest adds the media_root of its own file)."""
        return self.confinement

    def plan(self) -> Iterator[Unit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan_checked(self) -> Iterator[Unit]:
        """``plan()``, refusing a source with nothing to read (``EmptySourceError``: no unit, or a
        listing that found no input file) unless the source sets ``allow_empty``."""
        from operators.ingest._common import NothingToRead  # lazy: the ingest package imports this module

        found = False
        why = f"{self.path}: the files it names plan no unit (are they empty?)"
        try:
            for unit in self.plan():
                found = True
                yield unit
        except NothingToRead as e:
            if found:
                raise
            why = str(e)
        if not found and not self.allow_empty:
            raise EmptySourceError(
                f"source '{self.source}' (reader {self.name}) has nothing to read: {why}. Fix its path, or set "
                f"`allow_empty: true` on the source if it may be empty (--set sources.{self.source}.allow_empty=true)"
            )

    def unit(self, payload: dict[str, Any]) -> Unit:
        return Unit.make(self.source, payload)

    def record(self, locator: str, **fields: Any) -> dict[str, Any]:
        """A new kept record of this source."""
        fields.setdefault("license", self.license)
        return new_record(source=self.source, locator=locator, **fields)

    def broken(self, locator: str, reason: ReasonCode | str, detail: str, **fields: Any) -> dict[str, Any]:
        """A quarantined record for an input that could not be read."""
        rec = self.record(locator, **fields)
        mark(rec, Status.QUARANTINED, f"ingest:{self.name}", str(reason), detail)
        return rec

    def isolated(self, locator: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``make()``'s record for one input, or a quarantined record for ``locator`` when it
        raises: one bad input is one bad row, never the rest of its unit."""
        try:
            return make()
        except FATAL_ERRORS:
            raise
        except SkipSample as e:
            return self.broken(locator, e.reason, e.detail)
        except Exception as e:  # noqa: BLE001 - any failure on one input quarantines that input only
            log.warning("%s: cannot read %s: %s: %s", self.name, locator, type(e).__name__, e)
            return self.broken(locator, ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")


class GlobalOperator(Operator[P]):
    """An operator that must see every row sharing a key (deduplication), in three Ray-agnostic
    steps the engine runs as a map-reduce over files:

    1. ``summarize(table)`` on every file: a small table with ``id``, ``_key`` and what ``decide``
       needs (never the full records). The engine hash-partitions these rows on ``_key``.
    2. ``decide(summary)`` on every partition (all rows of a key are in one partition): a table
       of decisions, one row per ``id`` whose record must change.
    3. ``apply(table, decisions)`` on every file with the decisions for its ids.
    Rows are never removed: a decision changes a status, it does not delete.

    Two optional hooks (an operator that defines neither runs exactly as above):

    - ``combine(partials)``: for decisions that need every partition's result at once (the
      connected components of near-duplicate edges found in different partitions). When an
      operator overrides it, ``decide`` receives its summary WITH the ``_file`` column (the file
      each id lives in) and returns partial results in any shape; after every partition is
      decided the engine concatenates them, calls ``combine`` once, and ``combine`` returns the
      decisions, one row per changed ``id``, each with its ``_file``.
      With ``combine``, ``report(partials, decisions)`` may describe the result (thresholds,
      counts); the engine writes it as JSON to ``artifacts_dir / report_file``.
    - ``fit(sample, total_rows)``: for operators that need a global model before the map step
      (k-means centroids for semantic dedup). When ``fit_rows()`` is above 0, the engine first
      passes about that many rows, sampled evenly over the files, to ``fit``; the fitted operator
      then runs the map-reduce.
    """

    @classmethod
    def has_combine(cls) -> bool:
        """Whether this operator defines the optional ``combine`` step."""
        return cls.combine is not GlobalOperator.combine

    #: file under the stage's artifacts folder that ``report`` is written to (None: no report)
    report_file: ClassVar[str | None] = None

    def combine(self, partials: pa.Table) -> pa.Table:  # pragma: no cover - optional hook
        raise NotImplementedError

    def report(self, partials: pa.Table, decisions: pa.Table) -> dict[str, Any]:
        """What ``combine`` decided, for people and reports (with ``report_file``)."""
        return {}

    def fit_rows(self) -> int:
        """Rows the optional ``fit`` step wants to see (0: no fit step)."""
        return 0

    def fit(self, sample: pa.Table, total_rows: int) -> None:  # pragma: no cover - optional hook
        raise NotImplementedError

    def summarize(self, table: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError

    def decide(self, summary: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, table: pa.Table, decisions: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError
