"""Mixture sweeps for mixing-law and RegMix-style proxy studies (`curate sweep`).

One stage of a mixture file, N variants of its weights drawn from a Dirichlet centred on them,
level by level of the group tree (``mixtures.sweep_draw``); each variant is the same mixture
file with that stage's weights replaced, checked by loading it. With the curated table
(``input``) each variant is planned, to say which ones hit a cap (a group whose planned amount
is limited by ``max_repeat`` epochs of its sources, or that has no samples); with ``mix`` each is
also cut into a small shard set for a proxy run, at ``budget`` (group ``amount``s scaled with it).

DIR/variant_000.yaml ...     the variants (mixture files that `curate mix` takes)
DIR/variant_000/...          with ``mix``: the variant's shards (a `curate mix` output folder)
DIR/weights.csv, .parquet    one row per variant: ``weight:<path>`` (normalised among siblings),
                             ``share:<leaf>`` (target share of the stage budget), and with the
                             curated table ``planned:<leaf>`` (after caps), ``capped``,
                             ``capped_groups``; with ``mix`` ``achieved:<leaf>``, ``shards``,
                             ``max_shard_drift``
DIR/sweep.json               the parameters, the base, every variant and which hit a cap

Everything is a function of (mixture file, overrides, stage, n, seed, concentration, schedule,
input, budget): the same arguments write byte-identical files.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from rich.console import Console
from rich.table import Table

from mixtures.config import MixtureConfig, StageMix, load_mixture
from mixtures.report_model import MixReport, Shortfall
from mixtures.sweep_draw import (
    base_weights,
    draw_variant,
    leaf_paths,
    sibling_sets,
    stage_shares,
    variant_rng,
    weight_paths,
)
from schemas.config_file import ConfigDoc, ConfigError, load_document, validate_document
from schemas.files import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["DEFAULT_CONCENTRATION", "SweepError", "SweepResult", "Variant", "check_sweep", "print_sweep", "run_sweep"]

Schedule = Literal["keep", "drop"]
DEFAULT_CONCENTRATION = 10.0


class SweepError(ValueError):
    """A sweep that cannot run as asked (bad arguments, a folder holding another sweep)."""


@dataclass
class Variant:
    index: int
    file: str  # variant_000.yaml, relative to the sweep folder
    weights: dict[str, float]  # group path -> normalised weight among its siblings
    shares: dict[str, float]  # leaf -> target share of the stage budget
    planned_shares: dict[str, float] | None = None  # leaf -> planned share after caps (with the curated table)
    capped: list[Shortfall] | None = None  # None: not checked (no curated table)
    shards: str | None = None  # with mix: the shard folder, relative to the sweep folder
    report: MixReport | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return Path(self.file).stem

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"variant": self.index, "file": self.file, "weights": self.weights, "shares": self.shares}
        if self.planned_shares is not None:
            doc["planned_shares"] = self.planned_shares
        if self.capped is not None:
            doc["capped"] = [_shortfall_json(s) for s in self.capped]
        if self.report is not None:
            r = self.report
            doc["mix"] = {
                "shards_folder": self.shards,
                "report": f"{self.shards}/report.json",
                "shards": r.shards,
                "achieved_shares": {g: r.groups[g].achieved_share for g in r.groups},
                "totals": {r.unit: r.totals[r.unit], "samples": r.totals["samples"]},
                "max_shard_drift": r.max_shard_drift,
                "within_tolerance": r.within_tolerance,
                "skipped": len(r.skipped),
            }
        return doc


@dataclass
class SweepResult:
    folder: Path
    stage: str
    unit: str
    params: dict[str, Any]
    base_weights: dict[str, float]
    base_shares: dict[str, float]
    variants: list[Variant]
    leaves: list[str]
    weight_columns: list[str]

    @property
    def caps_checked(self) -> bool:
        return all(v.capped is not None for v in self.variants)

    @property
    def capped_variants(self) -> list[int]:
        return [v.index for v in self.variants if v.capped]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "nmm-curate-sweep",
            "version": 1,
            **self.params,
            "unit": self.unit,
            "base": {"weights": self.base_weights, "shares": self.base_shares},
            "caps_checked": self.caps_checked,
            "capped_variants": self.capped_variants if self.caps_checked else None,
            "tables": {"csv": "weights.csv", "parquet": "weights.parquet"},
            "variants": [v.to_json() for v in self.variants],
        }


def _shortfall_json(s: Shortfall) -> dict[str, Any]:
    return {"group": s.group, "target": s.target, "planned": s.planned, "missing": s.missing, "capacity": s.capacity, "reason": s.reason}


# --------------------------------------------------------------------------- the sweep


def run_sweep(
    mixture: str | Path,
    stage: str,
    output: str | Path,
    *,
    n: int,
    seed: int,
    concentration: float = DEFAULT_CONCENTRATION,
    schedule: Schedule = "keep",
    overrides: list[str] | None = None,
    input: str | Path | None = None,
    mix: bool = False,
    budget: float | None = None,
    fresh: bool = False,
) -> SweepResult:
    """Write ``n`` variants of ``stage`` into ``output`` (see the module doc), plan them when
    ``input`` is given and mix each into ``output/variant_NNN`` when ``mix``. ``mix`` writes
    shards with Ray tasks, on the Ray the caller started (or one Ray starts by itself)."""
    data, doc, cfg, index = check_sweep(
        mixture, stage, n=n, concentration=concentration, schedule=schedule, overrides=overrides, input=input, mix=mix, budget=budget
    )
    spec = cfg.stages[index]
    params = {
        "mixture": str(doc.file),
        "mixture_sha256": hashlib.sha256(doc.file.read_bytes()).hexdigest(),
        "overrides": list(overrides or []),
        "stage": stage,
        "n": n,
        "seed": seed,
        "concentration": float(concentration),
        "schedule": schedule if spec.schedule else None,
        "budget": spec.budget,
        "input": None if input is None else str(Path(input).resolve()),
        "mix": mix,
        "proxy_budget": None if budget is None else float(budget),
    }
    out = _open_folder(Path(output), params, fresh)

    sets = sibling_sets(spec.groups)
    base = base_weights(sets)
    pool = None
    if input is not None and not mix:
        from mixtures.pool import load_pool

        # the pool depends on the groups' conditions and the estimators, not on the weights:
        # one scan of the curated table serves every variant
        pool = load_pool(input, spec, spec.estimators or cfg.estimators)
    variants: list[Variant] = []
    for i in range(n):
        weights = draw_variant(sets, variant_rng(seed, i), concentration)
        file = f"variant_{i:03d}.yaml"
        vcfg = _write_variant(out / file, data, index, spec, weights, schedule, params, i)
        vstage = vcfg.stages[index]
        variants.append(Variant(i, file, weights, stage_shares(vstage, weights)))
        if input is not None:
            proxy = _proxy_config(vcfg, index, budget)
            if mix:
                _mix_variant(variants[-1], proxy, stage, input, out)
            else:
                _plan_variant(variants[-1], proxy, stage, pool)
    result = SweepResult(
        folder=out,
        stage=stage,
        unit=spec.unit,
        params=params,
        base_weights=base,
        base_shares=stage_shares(spec, base, schedule=schedule == "keep"),
        variants=variants,
        leaves=leaf_paths(spec.groups),
        weight_columns=weight_paths(spec.groups),
    )
    _write_tables(result)
    atomic_write_json(out / "sweep.json", result.to_json(), indent=1)
    return result


def check_sweep(
    mixture: str | Path,
    stage: str,
    *,
    n: int,
    concentration: float = DEFAULT_CONCENTRATION,
    schedule: str = "keep",
    overrides: list[str] | None = None,
    input: str | Path | None = None,
    mix: bool = False,
    budget: float | None = None,
) -> tuple[dict[str, Any], ConfigDoc, MixtureConfig, int]:
    """Check a sweep's arguments and load its mixture, before any work: SweepError for an
    argument, ConfigError (naming the file) for the mixture or a stage it does not have.
    Returns the file's data, its document, the config and the stage's index."""
    _check_args(n, concentration, schedule, input, mix, budget)
    data, doc = load_document(mixture, overrides)
    cfg = validate_document(MixtureConfig, data, doc)
    names = [s.name for s in cfg.stages]
    if stage not in names:
        raise ConfigError(f"{doc.file}: no stage '{stage}' (stages: {', '.join(names)})")
    return data, doc, cfg, names.index(stage)


def _check_args(n: int, concentration: float, schedule: str, input: Any, mix: bool, budget: float | None) -> None:
    if n < 1:
        raise SweepError(f"--n must be at least 1 (got {n})")
    if not concentration > 0:
        raise SweepError(f"--concentration must be > 0 (got {concentration})")
    if schedule not in ("keep", "drop"):
        raise SweepError(f"--schedule must be keep or drop (got {schedule!r})")
    if mix and input is None:
        raise SweepError("--mix needs the curated table: --input RUN")
    if budget is not None and not budget > 0:
        raise SweepError(f"--budget must be > 0 (got {budget})")
    if budget is not None and input is None:
        raise SweepError("--budget is the proxy budget of --mix (or of the cap check): give --input RUN")


def _identity(params: dict[str, Any]) -> dict[str, Any]:
    """What decides the variant files: a folder holding other variants is refused."""
    keys = ("mixture_sha256", "overrides", "stage", "n", "seed", "concentration", "schedule")
    return {k: params[k] for k in keys}


def _open_folder(out: Path, params: dict[str, Any], fresh: bool) -> Path:
    out = out.resolve()
    if fresh and out.exists():
        for p in [out / "sweep.json", out / "weights.csv", out / "weights.parquet", *out.glob("variant_[0-9][0-9][0-9]*")]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    old_path = out / "sweep.json"
    if old_path.is_file():
        old = json.loads(old_path.read_text())
        if _identity({k: old.get(k) for k in _identity(params)}) != _identity(params):
            diff = sorted(k for k, v in _identity(params).items() if old.get(k) != v)
            raise SweepError(f"{out} holds another sweep (different {', '.join(diff)}); use --fresh or another --output")
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- variants


def _set_weights(specs: list, nodes: list[dict[str, Any]], weights: dict[str, float], prefix: str) -> None:
    """Write ``weights`` into the YAML data of a group tree (``nodes`` mirrors ``specs``). A group
    whose weight is unset next to set ones (weight 0 for the planner) is left unset."""
    all_unset = all(g.weight is None for g in specs if g.amount is None)
    for g, node in zip(specs, nodes, strict=True):
        path = prefix + g.name
        if path in weights and (g.weight is not None or all_unset):
            node["weight"] = weights[path]
        if g.groups:
            _set_weights(g.groups, node["groups"], weights, path + "/")


def _write_variant(
    path: Path, data: dict[str, Any], index: int, spec: StageMix, weights: dict[str, float], schedule: Schedule, params: dict[str, Any], i: int
) -> MixtureConfig:
    """The mixture file with the stage's weights replaced; loaded back to check it."""
    doc = copy.deepcopy(data)
    node = doc["stages"][index]
    _set_weights(spec.groups, node["groups"], weights, "")
    if schedule == "drop":
        node.pop("schedule", None)
    head = (
        f"# variant {i} of `curate sweep {Path(params['mixture']).name} --stage {spec.name} --n {params['n']} "
        f"--seed {params['seed']} --concentration {params['concentration']:g}"
        f"{' --schedule drop' if schedule == 'drop' and spec.schedule else ''}`\n"
        f"# stage '{spec.name}': weights drawn from a Dirichlet centred on the original's; the rest as in the original\n"
    )
    atomic_write_text(path, head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120))
    try:
        cfg = load_mixture(path)
    except ConfigError as e:  # a bug of ours, not of the user's file
        raise SweepError(f"variant {path.name} does not load: {e}") from e
    _check_loaded(cfg.stages[index], weights, path)
    return cfg


def _check_loaded(stage: StageMix, weights: dict[str, float], path: Path) -> None:
    got = base_weights(sibling_sets(stage.groups))
    bad = sorted(p for p in weights if abs(got.get(p, -1.0) - weights[p]) > 1e-12)
    if bad:
        raise SweepError(f"variant {path.name} reads back other weights for {bad}")


def _proxy_config(cfg: MixtureConfig, index: int, budget: float | None) -> MixtureConfig:
    """The variant as the proxy mixes it: at ``budget`` (absolute ``amount``s scaled with it),
    not strict (a cap is reported, not fatal)."""
    stage = cfg.stages[index]
    data = stage.model_dump(exclude_unset=True)
    data["strict"] = False
    if budget is not None:
        scale = budget / stage.budget
        data["budget"] = budget
        data["groups"] = _scale_amounts(data["groups"], scale)
    stages = [*cfg.stages[:index], StageMix.model_validate(data), *cfg.stages[index + 1 :]]
    return cfg.model_copy(update={"stages": stages})


def _scale_amounts(groups: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        g = dict(g)
        if g.get("amount") is not None:
            g["amount"] = g["amount"] * scale
        if g.get("groups"):
            g["groups"] = _scale_amounts(g["groups"], scale)
        out.append(g)
    return out


def _plan_variant(v: Variant, cfg: MixtureConfig, stage: str, pool: Any) -> None:
    """Planned shares and cap hits from the planner (no shards)."""
    from mixtures.planner import plan_stage
    from mixtures.shares import group_shares

    plan = plan_stage(cfg.stage(stage), pool, cfg.seed)
    v.planned_shares = group_shares(plan)
    v.capped = list(plan.shortfalls)


def _mix_variant(v: Variant, cfg: MixtureConfig, stage: str, input: str | Path, out: Path) -> None:
    from mixtures.mixer import mix_stage

    v.shards = v.name
    v.report = report = mix_stage(cfg, stage, input, out / v.name)
    v.planned_shares = {g: r.planned_share for g, r in report.groups.items()}
    v.capped = list(report.shortfalls)


# --------------------------------------------------------------------------- tables


def _columns(r: SweepResult) -> dict[str, tuple[pa.DataType, list[Any]]]:
    cols: dict[str, tuple[pa.DataType, list[Any]]] = {
        "variant": (pa.int64(), [v.index for v in r.variants]),
        "file": (pa.string(), [v.file for v in r.variants]),
    }
    for p in r.weight_columns:
        cols[f"weight:{p}"] = (pa.float64(), [v.weights[p] for v in r.variants])
    for leaf in r.leaves:
        cols[f"share:{leaf}"] = (pa.float64(), [v.shares[leaf] for v in r.variants])
    if r.caps_checked:
        for leaf in r.leaves:
            cols[f"planned:{leaf}"] = (pa.float64(), [(v.planned_shares or {}).get(leaf, 0.0) for v in r.variants])
        cols["capped"] = (pa.bool_(), [bool(v.capped) for v in r.variants])
        cols["capped_groups"] = (pa.string(), [";".join(s.group for s in v.capped or []) for v in r.variants])
    if r.variants and all(v.report is not None for v in r.variants):
        reports = [v.report for v in r.variants if v.report is not None]
        for leaf in r.leaves:
            cols[f"achieved:{leaf}"] = (pa.float64(), [rep.groups[leaf].achieved_share if leaf in rep.groups else 0.0 for rep in reports])
        cols["shards"] = (pa.int64(), [rep.shards for rep in reports])
        cols["max_shard_drift"] = (pa.float64(), [rep.max_shard_drift for rep in reports])
    return cols


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _write_tables(r: SweepResult) -> None:
    cols = _columns(r)
    table = pa.table({k: pa.array(vals, type=t) for k, (t, vals) in cols.items()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(r.folder / "weights.parquet", buf.getvalue())
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(cols)
    for row in zip(*(vals for _, vals in cols.values()), strict=True):
        w.writerow([_cell(x) for x in row])
    atomic_write_text(r.folder / "weights.csv", text.getvalue())


# --------------------------------------------------------------------------- print


def print_sweep(r: SweepResult, console: Console | None = None) -> None:
    """Every variant's leaf shares of the budget, its cap hits marked, and which variants hit one."""
    console = console or Console()
    checked = r.caps_checked
    t = Table(title=f"sweep of stage {r.stage}: leaf shares of the budget ({r.unit})", title_justify="left", show_edge=False)
    t.add_column("variant", no_wrap=True)
    for leaf in r.leaves:
        t.add_column(leaf.replace("/", "/\n"), justify="right", overflow="fold")
    if checked:
        t.add_column("hit a cap", overflow="fold")
    t.add_row("base", *(f"{r.base_shares[leaf]:.3f}" for leaf in r.leaves), *([""] if checked else []))
    for v in r.variants:
        hit = {sf.group for sf in v.capped or []}
        cells = [f"{v.shares[leaf]:.3f}" + ("[yellow]*[/yellow]" if leaf in hit else "") for leaf in r.leaves]
        if checked:
            cells.append(", ".join(sorted(hit)) or "-")
        t.add_row(f"{v.index:03d}", *cells)
    console.print(t)
    if not checked:
        console.print("caps not checked: give --input RUN (the curated table) to plan each variant")
        return
    capped = r.capped_variants
    console.print(f"{len(capped)} of {len(r.variants)} variants hit a cap" + (f": {', '.join(f'{i:03d}' for i in capped)}" if capped else ""))
    if capped:
        console.print(
            "[yellow]*[/yellow] target above what the group's sources give (max_repeat epochs) or no samples: planned lower, "
            "the rest to its siblings or dropped (`shortfall`); planned shares in weights.csv and sweep.json"
        )
