"""Where every number of the stage presets comes from.

``mixtures/presets/citations.json`` keeps each published number once: its value, unit, source
(paper or repository), locator (section, table or file) and a short quote of the text it was read
from. Per preset file it then says, for every numeric value the YAML holds (keyed by its path, for
example ``stages.pretraining.groups.t2i.weight``), either which citation it is or why it is only an
illustrative template value. :func:`check_preset` compares the two and lists every disagreement: a
number that is neither cited nor marked illustrative, a cited number the YAML does not hold, a value
that differs from its citation.

Paths name list items by their ``name`` where they have one (stages, groups) and by position
otherwise. A number the YAML spells in a form PyYAML reads as a string (``1.0e9``) still counts.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.config_file import load_yaml

__all__ = ["CITATIONS", "PRESETS_DIR", "check_citations", "check_preset", "load_citations", "numeric_leaves"]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
CITATIONS = PRESETS_DIR / "citations.json"

_NUMBER = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_NUMBER_FIELDS = ("value", "unit", "source", "locator", "quote")


def load_citations(path: str | Path = CITATIONS) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and _NUMBER.match(v.strip()):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _walk(node: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            key = v["name"] if isinstance(v, dict) and isinstance(v.get("name"), str) else str(i)
            yield from _walk(v, f"{prefix}.{key}" if prefix else key)
    else:
        n = _as_number(node)
        if n is not None:
            yield prefix, n


def numeric_leaves(doc: dict[str, Any]) -> dict[str, float]:
    """Every number written in a mixture document, by path (``stages.<stage>.groups.<group>.weight``)."""
    return dict(_walk(doc, ""))


def _arith(expr: str) -> float:
    """Evaluate a small arithmetic expression of number literals (+ - * / ** and parentheses)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"not plain arithmetic: {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def _renderings(v: float) -> set[str]:
    out = {f"{v:g}", repr(v)}
    if v == int(v):
        out |= {str(int(v)), f"{int(v)}.0"}
    return out


def check_citations(citations: dict[str, Any] | None = None) -> list[str]:
    """Problems with the cited numbers themselves: missing fields, an unknown source, a quote that
    does not show the number, a derivation that does not give the value."""
    c = load_citations() if citations is None else citations
    sources, numbers = c.get("sources", {}), c.get("numbers", {})
    problems = []
    for name, src in sources.items():
        for field in ("title", "url", "read_via"):
            if not src.get(field):
                problems.append(f"source {name}: no {field}")
    for key, num in numbers.items():
        missing = [f for f in _NUMBER_FIELDS if num.get(f) in (None, "")]
        if missing:
            problems.append(f"{key}: missing {', '.join(missing)}")
            continue
        if num["source"] not in sources:
            problems.append(f"{key}: unknown source {num['source']!r}")
        value = float(num["value"])
        derivation = num.get("derivation")
        if derivation is None:
            shown = [num["as_written"]] if "as_written" in num else sorted(_renderings(value))
            if not any(s in num["quote"] for s in shown):
                problems.append(f"{key}: the quote does not show the value (looked for {shown})")
            continue
        if "complement_of" in derivation:
            other = numbers.get(derivation["complement_of"])
            if other is None:
                problems.append(f"{key}: complement of unknown number {derivation['complement_of']!r}")
            elif not math.isclose(value, 1 - float(other["value"]), abs_tol=1e-12):
                problems.append(f"{key}: {value} is not 1 - {other['value']}")
        elif "expression" in derivation:
            got = _arith(derivation["expression"])
            if not math.isclose(value, got, rel_tol=1e-12):
                problems.append(f"{key}: {derivation['expression']} = {got}, not {value}")
        else:
            problems.append(f"{key}: derivation needs complement_of or expression")
    return problems


def check_preset(path: str | Path, citations: dict[str, Any] | None = None, entry: str | None = None) -> list[str]:
    """Every disagreement between a preset YAML and its entry in the citations file (``entry``:
    the preset's file name by default). An empty list means every number is accounted for."""
    c = load_citations() if citations is None else citations
    path = Path(path)
    name = entry or path.name
    spec = c.get("presets", {}).get(name)
    if spec is None:
        return [f"{name}: no entry in the citations file"]
    numbers = c.get("numbers", {})
    data, _ = load_yaml(path)
    leaves = numeric_leaves(data)
    cited: dict[str, str] = spec.get("cited", {})
    omitted: dict[str, str] = spec.get("omitted_zero", {})
    illustrative: dict[str, str] = spec.get("illustrative", {})
    problems = []
    for p in sorted(set(cited) & set(illustrative)):
        problems.append(f"{name}: {p} is both cited and illustrative")
    for p, v in sorted(leaves.items()):
        if p not in cited and p not in illustrative:
            problems.append(f"{name}: {p} = {v:g} is neither cited nor marked illustrative")
    for p, key in sorted(cited.items()):
        num = numbers.get(key)
        if num is None:
            problems.append(f"{name}: {p} cites unknown number {key!r}")
        elif p not in leaves:
            problems.append(f"{name}: {p} (cited as {key}) is not in the YAML")
        elif not math.isclose(leaves[p], float(num["value"]), rel_tol=1e-12, abs_tol=1e-12):
            problems.append(f"{name}: {p} = {leaves[p]:g}, but {key} says {num['value']} ({num['locator']})")
    for p, key in sorted(omitted.items()):
        num = numbers.get(key)
        if num is None:
            problems.append(f"{name}: {p} cites unknown number {key!r}")
        elif float(num["value"]) != 0:
            problems.append(f"{name}: {p} is left out as zero, but {key} says {num['value']}")
        elif p in leaves:
            problems.append(f"{name}: {p} is listed as left out (zero) but the YAML has {leaves[p]:g}")
    for p, note in sorted(illustrative.items()):
        if p not in leaves:
            problems.append(f"{name}: illustrative {p} is not in the YAML")
        if not str(note).strip():
            problems.append(f"{name}: illustrative {p} has no note")
    stages = {s.get("name"): s.get("unit", "samples") for s in data.get("stages", []) if isinstance(s, dict)}
    units = {k: v["unit"] for k, v in spec.get("units", {}).items()}
    if units != stages:
        problems.append(f"{name}: stage units {stages} differ from the citations file's {units}")
    return problems
