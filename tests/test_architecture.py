"""The import graph keeps the one-way picture of the design: schemas <- operators <- curate's
engine and mixtures <- the CLI. No package imports one above it, and no module imports itself
back through others. Every import counts, including those inside functions (lazy ones)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "operators", "curate", "mixtures")
#: what each package may import (besides itself)
ALLOWED = {
    "schemas": set(),
    "operators": {"schemas"},
    "mixtures": {"schemas", "operators"},
    "curate": {"schemas", "operators"},
}
#: modules on top of everything: the command line
TOP = {"curate.cli"}
KNOWN_UPWARD: set[tuple[str, str]] = set()  # none left; nothing may join


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = f
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (``from a.b import c`` counts ``a.b.c`` if it is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            if name in modules:
                found.add(name)
    return found


MODULES = _modules()
GRAPH = {m: _imports(p, MODULES) - {m} for m, p in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_runs_back_up(module: str) -> None:
    if module in TOP:
        return
    pkg = _package(module)
    upward = {i for i in GRAPH[module] if _package(i) != pkg and _package(i) not in ALLOWED[pkg]}
    bad = sorted(i for i in upward if (module, i) not in KNOWN_UPWARD)
    assert not bad, f"{module} imports {bad}: {pkg} may only import {sorted(ALLOWED[pkg]) or 'nothing of ours'}"


def test_no_import_circle() -> None:
    """Module-level cycles, ignoring a package's ``__init__`` re-exporting its own modules."""
    graph = {m: {i for i in deps if not (i == _package(m) and "." not in i)} for m, deps in GRAPH.items()}
    seen: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_imports() -> None:
    # the graph is not empty by accident: the engine imports the operator bases
    assert "operators.base" in GRAPH["curate.engine"]
    assert "schemas.record" in GRAPH["operators.base"]
