"""Idempotent Parquet sinks shaped on Ray's write lifecycle: each task writes under a temporary
name and renames, so at-least-once execution gives exactly-once files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from schemas.files import atomic_write_parquet

__all__ = ["UnitSink"]


class UnitSink(Datasink):
    """Writes one file per ingest unit (``<unit>.parquet``): the unit of resume."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def on_write_start(self, schema: Any = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, blocks: Iterable[Block], ctx: Any) -> list[tuple[str, int]]:
        written = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue
            for unit in pc.unique(table["unit"]).to_pylist():
                part = table.filter(pc.equal(table["unit"], unit))
                atomic_write_parquet(part, self.directory / f"{unit}.parquet")
                written.append((unit, part.num_rows))
        return written
