"""`curate`: run, validate and inspect curation pipelines.

Heavy imports (ray, media libraries) happen inside commands so `curate --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.report import wide_console

app = typer.Typer(help="nmm-curate: curate multimodal corpora on Ray and mix them into stage shards.", no_args_is_help=True)
console = wide_console()  # not a terminal (CI, logs, | tee): COLUMNS or 200 columns, not 80
err = wide_console(stderr=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config value: dotted.key=value (repeatable)")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _load(config: Path, overrides: list[str] | None, output: Path | None = None):
    from curate.config import ConfigError, load_pipeline

    try:
        return load_pipeline(config, overrides or [], output=output)
    except ConfigError as e:
        err.print(f"[red]config error[/red]\n{e}", markup=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="pipeline YAML")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output folder (resumes a run already there)")],
    set_: SetOpt = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start local Ray)")] = None,
    fresh: Annotated[bool, typer.Option(help="discard a previous run in --output and start over")] = False,
    progress: Annotated[bool, typer.Option(help="show Ray Data progress bars")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a curation pipeline: sources -> stages -> OUT/samples (by bucket) + OUT/summary.json."""
    _setup_logging(verbose)
    loaded = _load(config, set_, output)
    from curate.engine import Engine, RunError
    from curate.report import print_summary

    try:
        summary = Engine(loaded, output, address=address, fresh=fresh, progress=progress).run()
    except RunError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    print_summary(summary, console)
    console.print(f"wrote {output}/samples, {output}/summary.json in {summary['run']['elapsed_s']:.1f}s")
    if not summary["balanced"]:
        err.print(
            "[red]error:[/red] the ledger does not balance: the rows do not account for every planned input "
            "(units listed above; all of them in summary.json under plan.short)",
            highlight=False,
        )
        raise typer.Exit(3)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="pipeline YAML")],
    set_: SetOpt = None,
) -> None:
    """Check a config (keys, types, operator params, weights) without running it."""
    loaded = _load(config, set_)
    cfg = loaded.config
    console.print(f"[green]ok[/green] {config}: pipeline '{cfg.name}', {len(cfg.sources)} sources, {len(cfg.stages)} stages")
    for s in cfg.sources:
        console.print(f"  source {s.name}: {s.reader} <- {s.path}")
    for st in cfg.stages:
        console.print(f"  stage  {st.stage_name}: {st.op}")


def _type_name(ann) -> str:
    import types
    import typing

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


def _params_rows(model) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, f in model.model_fields.items():
        ann = _type_name(f.annotation)
        default = "required" if f.is_required() else repr(f.default if f.default_factory is None else f.default_factory())
        rows.append((f.alias or name, ann, default, f.description or ""))
    return rows


@app.command()
def operators(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List registered readers and operators with their parameters and the scores they write."""
    from operators.base import GlobalOperator
    from operators.registry import OPERATORS, READERS, load_builtins

    load_builtins()
    entries = []
    for kind, reg in (("reader", READERS), ("operator", OPERATORS)):
        for name, cls in sorted(reg.items()):
            entries.append(
                {
                    "kind": kind,
                    "name": name,
                    "doc": (cls.__doc__ or "").strip().split("\n")[0],
                    "params": [dict(zip(("name", "type", "default", "description"), r, strict=True)) for r in _params_rows(cls.Params)],
                    "writes": dict(getattr(cls, "writes", {}) or {}),
                    "global": issubclass(cls, GlobalOperator),
                }
            )
    if as_json:
        console.print_json(json.dumps(entries))
        return
    for e in entries:
        t = Table(title=f"[bold]{e['kind']} {e['name']}[/bold]  {e['doc']}", title_justify="left", show_edge=False)
        for c in ("param", "type", "default", "description"):
            t.add_column(c)
        for p in e["params"]:
            t.add_row(p["name"], p["type"], p["default"], p["description"])
        for k, v in e["writes"].items():
            t.add_row(f"writes scores.{k}", "float", "", v)
        console.print(t)


@app.command()
def schema(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the JSON Schema files")] = Path("schemas/json"),
) -> None:
    """Export JSON Schemas: the pipeline config (for editors) and the sample record."""
    from curate.jsonschema import pipeline_json_schema
    from schemas.record import SAMPLE_SCHEMA

    output.mkdir(parents=True, exist_ok=True)
    (output / "pipeline.schema.json").write_text(json.dumps(pipeline_json_schema(), indent=2))
    fields = [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in SAMPLE_SCHEMA]
    (output / "sample.arrow.json").write_text(json.dumps(fields, indent=2))
    console.print(f"wrote {output}/pipeline.schema.json and {output}/sample.arrow.json")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="output folder: data/ and the run")] = Path("demo_out"),
    kind: Annotated[str, typer.Option(help="mixed (every modality), video (shots, clips, motion) or audio (loudness, VAD)")] = "mixed",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: local Ray)")] = None,
    progress: Annotated[bool, typer.Option(help="show Ray Data progress bars")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Make a small mixed corpus (with planted duplicates and corrupt files) and curate it."""
    _setup_logging(verbose)
    from curate.demo import KINDS, run_demo
    from curate.report import print_summary

    if kind not in KINDS:
        err.print(f"[red]error:[/red] --kind must be one of {', '.join(sorted(KINDS))}")
        raise typer.Exit(2)
    summary = run_demo(output, kind=kind, address=address, progress=progress)
    print_summary(summary, console)
    _, _, data, run_dir = KINDS[kind]
    console.print(f"demo corpus in {output}/{data}; curated table in {output}/{run_dir}/samples; summary {output}/{run_dir}/summary.json")
    if not summary["balanced"]:
        raise typer.Exit(3)


@app.command()
def mix(
    mixture: Annotated[Path, typer.Argument(help="mixture YAML (stages of a training run)")],
    stage: Annotated[str, typer.Option("--stage", "-s", help="stage to mix")],
    input: Annotated[Path, typer.Option("--input", "-i", help="curated table: a `curate run` output folder")],
    output: Annotated[Path, typer.Option("--output", "-o", help="shard folder (resumes a mix already there)")],
    set_: SetOpt = None,
    fresh: Annotated[bool, typer.Option(help="discard shards already in --output")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Mix one stage into WebDataset shards that follow its ratios; print target vs achieved."""
    _setup_logging(verbose)
    from curate.runtime import ray_session
    from mixtures.config import load_mixture
    from mixtures.mixer import MixError, mix_stage
    from mixtures.report import print_report
    from schemas.config import RayConfig
    from schemas.config_file import ConfigError

    try:
        cfg = load_mixture(mixture, set_ or [])
        cfg.stage(stage)
    except (ConfigError, KeyError) as e:
        err.print(f"[red]config error[/red]\n{e.args[0] if isinstance(e, KeyError) else e}", highlight=False)
        raise typer.Exit(2) from None
    try:
        with ray_session(RayConfig()):
            report = mix_stage(cfg, stage, input, output, fresh=fresh)
    except (MixError, FileNotFoundError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    print_report(report, console)
    console.print(f"wrote {report.shards} shards, {output}/report.json")


@app.command()
def sweep(
    mixture: Annotated[Path, typer.Argument(help="mixture YAML (stages of a training run)")],
    stage: Annotated[str, typer.Option("--stage", "-s", help="stage whose weights are drawn")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="number of variants")],
    seed: Annotated[int, typer.Option(help="seed of the draws (the same seed writes the same files)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="sweep folder: variant_NNN.yaml, weights.csv/.parquet, sweep.json")],
    concentration: Annotated[float, typer.Option(help="Dirichlet concentration: alpha = C * weights among siblings; higher = closer to the base")] = 10.0,
    schedule: Annotated[str, typer.Option(help="keep: the stage's schedule steps still override later phases; drop: variants without them")] = "keep",
    input: Annotated[Path | None, typer.Option("--input", "-i", help="curated table: plan each variant and report cap hits")] = None,
    mix_: Annotated[bool, typer.Option("--mix", help="also cut each variant into shards (DIR/variant_NNN/); needs --input")] = False,
    budget: Annotated[float | None, typer.Option(help="proxy budget for --mix and the cap check, in the stage's unit (default: the stage's)")] = None,
    set_: SetOpt = None,
    fresh: Annotated[bool, typer.Option(help="discard a sweep already in --output")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Mixture sweep: N variants of a stage's weights drawn from a Dirichlet centred on them (mixing laws, RegMix proxies)."""
    _setup_logging(verbose)
    from contextlib import nullcontext

    from curate.runtime import ray_session
    from mixtures.mixer import MixError
    from mixtures.sweep import SweepError, check_sweep, print_sweep, run_sweep
    from schemas.config import RayConfig
    from schemas.config_file import ConfigError

    args = dict(n=n, concentration=concentration, schedule=schedule, overrides=set_ or [], input=input, mix=mix_, budget=budget)
    try:
        check_sweep(mixture, stage, **args)
    except (ConfigError, SweepError) as e:
        err.print(f"[red]config error[/red]\n{e}", highlight=False)
        raise typer.Exit(2) from None
    try:
        with ray_session(RayConfig()) if mix_ else nullcontext():
            result = run_sweep(mixture, stage, output, seed=seed, fresh=fresh, **args)
    except (SweepError, MixError, FileNotFoundError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    print_sweep(result, console)
    console.print(f"wrote {len(result.variants)} variants, {output}/weights.csv, {output}/weights.parquet, {output}/sweep.json")


@app.command()
def stats(
    path: Annotated[Path, typer.Argument(help="a shard folder (`curate mix` output) or a curated table (`curate run` output)")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document instead of tables")] = False,
    sample_shards: Annotated[int, typer.Option(help="shards (or Parquet files) read for per-sample distributions and thumbnails")] = 8,
    thumbs: Annotated[int, typer.Option(help="thumbnails per group in the HTML report")] = 4,
    seed: Annotated[int, typer.Option(help="seed of the shard sample")] = 0,
    plots: Annotated[bool, typer.Option(help="write PNG plots and report.html")] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for plots and report.html (default PATH/stats)")] = None,
    max_rows: Annotated[int, typer.Option(help="shards listed in the per-shard table (the ones with most drift)")] = 30,
) -> None:
    """What the trainer will see against what was asked: per group, per shard, by layout/modality/source; plots and an HTML report."""
    from mixtures.stats import print_tables, run_stats

    try:
        doc = run_stats(path, sample_shards=sample_shards, seed=seed, thumbs=thumbs, plots=plots, output=output)
    except FileNotFoundError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
        return
    if doc["kind"] == "curated" and doc.get("summary"):
        from curate.report import print_summary

        print_summary(doc["summary"], console)
    print_tables(doc, console, max_rows=max_rows)
    if plots:
        console.print(f"wrote {len(doc['plots'])} plots and {doc['html']}")


@app.command()
def loaders(
    shards: Annotated[Path, typer.Argument(help="a shard folder (`curate mix` output)")],
    hf: Annotated[bool, typer.Option(help="write README.md: a Hugging Face dataset card with one config per shard set")] = True,
    energon: Annotated[bool | None, typer.Option(help="run `energon prepare` and write energon.yaml (default: when megatron-energon is installed)")] = None,
    num_workers: Annotated[int, typer.Option(help="energon prepare indexing workers")] = 1,
) -> None:
    """Loader configs next to the shards: a Hugging Face dataset card, Energon metadata (prepare + metadataset)."""
    from mixtures.energon import energon_available, export_energon
    from mixtures.hf import write_hf_card

    if not (shards / "report.json").is_file():
        err.print(f"[red]error:[/red] {shards}: no report.json (not a `curate mix` output)", highlight=False)
        raise typer.Exit(1)
    if hf:
        console.print(f"wrote {write_hf_card(shards)}  (load_dataset(\"{shards}\"[, GROUP]))")
    if energon is None:
        energon = energon_available()
        if not energon:
            console.print("megatron-energon is not installed (pip install 'nmm-curate[loaders]'): skipped Energon")
    if energon:
        if not energon_available():
            err.print("[red]error:[/red] megatron-energon is not installed (pip install 'nmm-curate[loaders]')")
            raise typer.Exit(1)
        try:
            out = export_energon(shards, num_workers=num_workers)
        except RuntimeError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(1) from None
        console.print(f"energon prepare: {len(out['prepared'])} datasets; wrote {', '.join(out['metadatasets'])}")
        console.print("load with megatron.energon.get_train_dataset(..., task_encoder=mixtures.energon_task.NmmTaskEncoder())")


@app.command("dedup-report")
def dedup_report(
    run_dir: Annotated[Path, typer.Argument(help="a finished run's output folder (the --output of `curate run`)")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file (default: RUN_DIR/dedup_report.html)")] = None,
    max_groups: Annotated[int, typer.Option(help="largest groups shown per dedup stage")] = 12,
    thumbnails: Annotated[bool, typer.Option(help="embed thumbnails (images, video frames, audio spectrograms)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the numbers as JSON")] = False,
) -> None:
    """Report what deduplication merged: group sizes, example groups with thumbnails, thresholds."""
    from curate.dedup_report import write_dedup_report

    if not (run_dir / "summary.json").exists():
        err.print(f"[red]error:[/red] {run_dir} holds no finished run (no summary.json)", highlight=False)
        raise typer.Exit(1)
    out_html = output or run_dir / "dedup_report.html"
    stats = write_dedup_report(run_dir, out_html, max_groups=max_groups, thumbnails=thumbnails)
    if as_json:
        console.print_json(json.dumps(stats))
        return
    t = Table(title="deduplication", title_justify="left", show_edge=False)
    for c in ("stage", "duplicates", "groups", "largest group", "thresholds"):
        t.add_column(c)
    for name, s in stats["operators"].items():
        largest = max((int(k) for k in s["group_sizes"]), default=0)
        t.add_row(name, str(s["duplicates"]), str(s["groups"]), str(largest), ", ".join(f"{k}={v}" for k, v in s["thresholds"].items()))
    console.print(t)
    console.print(f"wrote {out_html}")


@app.command()
def explain(
    run_dir: Annotated[Path, typer.Argument(help="a finished run's output folder (the --output of `curate run`)")],
    record_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="the sample's id (or a unique prefix of 4+ characters)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
    shards: Annotated[Path | None, typer.Option(help="a `curate mix` output: list the shards and epochs that carry the sample (scans the shards)")] = None,
    reason: Annotated[str | None, typer.Option(help="list rows of one reason instead: REASON or OPERATOR:REASON")] = None,
    limit: Annotated[int, typer.Option(min=1, help="rows listed with --reason")] = 20,
    reindex: Annotated[bool, typer.Option(help="(re)build the explain index of a finished run from its samples/ and rejected/")] = False,
) -> None:
    """Everything about one sample: source, lineage with scores, status and reason, the survivor and evidence of a duplicate, buckets and route rules, shards."""
    from curate import explain as ex

    if not (run_dir / "summary.json").exists():
        err.print(f"[red]error:[/red] {run_dir} holds no finished run (no summary.json)", highlight=False)
        raise typer.Exit(1)
    if reindex:
        built = ex.rebuild(run_dir)
        err.print(f"wrote {run_dir}/explain: {built['rows']} rows in {built['partitions']} partitions", highlight=False)
        if record_id is None and reason is None:
            return
    if record_id is None and reason is None:
        err.print("[red]error:[/red] give a sample ID or --reason REASON", highlight=False)
        raise typer.Exit(2)
    try:
        if reason is not None:
            rows = ex.examples(run_dir, reason, limit)
            if not rows:
                known = ", ".join(ex.known_reasons(run_dir)) or "none"
                err.print(f"[red]error:[/red] no row of {run_dir} has reason {reason!r}; reasons in this run: {known}", highlight=False)
                raise typer.Exit(1)
            if as_json:
                sys.stdout.write(json.dumps(rows, indent=1, default=str) + "\n")
            else:
                ex.render_examples(rows, reason, console)
            return
        assert record_id is not None
        doc = ex.explain(run_dir, record_id, shards=shards)
    except ex.IndexMissing:
        err.print(
            f"[red]error:[/red] {run_dir} has no explain index (a run finished before `curate explain` existed); "
            f"build it with: curate explain {run_dir} --reindex",
            highlight=False,
        )
        raise typer.Exit(1) from None
    except ex.AmbiguousId as e:
        err.print(f"[red]error:[/red] {len(e.candidates)}+ samples have ids starting with {record_id!r}:", highlight=False)
        for c in e.candidates:
            err.print(f"  {c['id']}  {c.get('locator')}", highlight=False)
        raise typer.Exit(1) from None
    except ex.UnknownId:
        err.print(f"[red]error:[/red] no sample with id {record_id!r} in {run_dir}", highlight=False)
        raise typer.Exit(1) from None
    except FileNotFoundError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
        return
    ex.render(doc, console)


def main() -> None:  # pragma: no cover
    app(prog_name="curate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
