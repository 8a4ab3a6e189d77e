"""Megatron-Energon loading of a shard folder.

1. ``energon prepare`` (Energon's own command, run non-interactively in a child process, so its
   forked indexing workers never share a process with Ray) on every shard set: the pre-mixed
   folder, or each group folder in per-group mode. It writes ``.nv-meta/`` (index.sqlite,
   split.yaml, .info.json) and a crude ``dataset.yaml`` (``CrudeWebdataset``: samples come as
   dicts of decoded members, cooked by ``mixtures.energon_task.NmmTaskEncoder``). The sqlite
   index is never written by hand.
2. A metadataset, ``SHARDS/energon.yaml`` (MetadatasetV2). Per-group mode: a ``blend`` whose
   weight for a group is the number of samples in its shards. Energon draws samples with these
   probabilities, so a group's expected share of any unit is (samples x mean cost) / total =
   its achieved amount / total: the blend reproduces the mix in every unit, in expectation, and
   all groups run out together. ``SHARDS/energon_epochized.yaml`` is the same as a
   ``blend_epochized`` with one repetition per group: one pass gives exactly the stage's samples.
   Pre-mixed mode: one dataset reference (the order inside the shards already is the mix).

A static blend cannot follow a schedule (weights that change inside the stage): for a stage with
more than one phase the per-group blend reproduces the stage totals, not the per-phase mix; use
pre-mixed shards for that (the metadataset says so in a comment).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mixtures.report_model import MixReport, read_report

__all__ = ["energon_available", "export_energon", "prepare", "shard_sets", "write_metadataset"]

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_\-]+)-\d+\.tar$")


def energon_available() -> bool:
    try:
        import megatron.energon  # noqa: F401
    except ImportError:
        return False
    return True


def shard_sets(root: str | Path) -> list[tuple[Path, str]]:
    """(folder, split) of every folder that holds shards directly: the root (pre-mixed) or the
    group folders (per-group)."""
    root = Path(root)
    out = []
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "stats")
    for folder in folders:
        splits = {m["split"] for f in folder.glob("*.tar") if (m := _SHARD.match(f.name))}
        if len(splits) > 1:
            raise ValueError(f"{folder}: shards of several splits {sorted(splits)}; expected one split per folder")
        if splits:
            out.append((folder, splits.pop()))
    return out


def prepare(folders: list[tuple[Path, str]], *, num_workers: int = 1, timeout: float = 900) -> str:
    """Run ``energon prepare`` on every (folder, split); return its output. Raises RuntimeError
    with the output when it fails."""
    if not folders:
        return ""
    job = [{"path": str(f), "split": s, "num_workers": num_workers} for f, s in folders]
    proc = subprocess.run(
        [sys.executable, "-m", "mixtures.energon", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"energon prepare failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out


def _prepare_args(path: str, split: str, num_workers: int) -> list[str]:
    return [
        path,
        "--non-interactive",
        "--force-overwrite",
        "--no-progress",
        "--num-workers", str(num_workers),
        "--split-parts", f"{split}:{re.escape(split)}-[0-9]+[.]tar$",
        "--sample-type", "CrudeWebdataset",
    ]  # fmt: skip


def _child(argv: list[str]) -> int:
    """In the child process: Energon's own `prepare` command, once per folder."""
    from megatron.energon.tools.prepare import command

    for job in json.loads(argv[0]):
        print(f"== energon prepare {job['path']}", flush=True)
        command.main(args=_prepare_args(job["path"], job["split"], job["num_workers"]), prog_name="energon prepare", standalone_mode=False)
        if not (Path(job["path"]) / ".nv-meta" / "index.sqlite").is_file():
            print(f"energon prepare wrote no index for {job['path']}", file=sys.stderr)
            return 1
    return 0


def _yaml_dump(data: dict[str, Any], comments: list[str]) -> str:
    import yaml

    head = "".join(f"# {c}\n" for c in comments)
    return head + yaml.safe_dump(data, sort_keys=False)


def write_metadataset(root: str | Path, report: MixReport | None = None) -> list[Path]:
    """Write SHARDS/energon.yaml (and energon_epochized.yaml in per-group mode); return paths.
    ``report``: the mix report (default: the folder's report.json; without one the shards are
    taken as pre-mixed)."""
    root = Path(root)
    report = report if report is not None else read_report(root)
    sets = shard_sets(root)
    if not sets:
        raise FileNotFoundError(f"{root}: no <split>-NNNNNN.tar shards")
    split = sets[0][1]
    stage = report.stage if report else None
    written = []
    if report is None or report.mode == "premixed" or not report.blend:
        mds = {
            "__module__": "megatron.energon",
            "__class__": "MetadatasetV2",
            "splits": {split: {"path": ".", "subflavors": {"stage": stage}}},
        }
        path = root / "energon.yaml"
        path.write_text(_yaml_dump(mds, [f"Energon metadataset for stage {stage} (pre-mixed shards), written by nmm-curate."]))
        return [path]

    entries = []
    for b in report.blend:
        group = report.groups.get(b.group)
        samples = float(group.achieved.get("samples", 0.0)) if group else 0.0
        if samples <= 0 or not (root / b.path).is_dir():
            continue
        entries.append({"group": b.group, "path": b.path, "samples": samples})
    if not entries:
        raise ValueError(f"{root}: no group with samples in report['blend']")
    total = sum(e["samples"] for e in entries)
    unit = report.unit
    comments = [
        f"Energon metadataset for stage {stage} (per-group shards), written by nmm-curate.",
        "Blend weight of a group = samples in its shards: Energon draws samples with these probabilities, so every",
        f"group's expected share of {unit} (and of every other unit) is its achieved share in report.json.",
    ]
    if len(report.phases) > 1:
        comments.append("The stage has a schedule: a static blend reproduces the stage totals, not the per-phase mix (use pre-mixed shards).")
    blend = {
        "__module__": "megatron.energon",
        "__class__": "MetadatasetV2",
        "splits": {
            split: {
                "blend": [
                    {"weight": round(e["samples"] / total, 8), "path": e["path"], "subflavors": {"stage": stage, "group": e["group"]}}
                    for e in entries
                ]
            }
        },
    }
    path = root / "energon.yaml"
    path.write_text(_yaml_dump(blend, comments))
    written.append(path)
    epoch = {
        "__module__": "megatron.energon",
        "__class__": "MetadatasetV2",
        "splits": {
            split: {
                "blend_epochized": [
                    {"repetitions": 1, "path": e["path"], "subflavors": {"stage": stage, "group": e["group"]}} for e in entries
                ]
            }
        },
    }
    path = root / "energon_epochized.yaml"
    path.write_text(
        _yaml_dump(epoch, [f"Energon metadataset for stage {stage}: every group's shards exactly once per epoch, interleaved by Energon",
                           "(load with repeat=False for one pass over exactly the stage's samples)."])  # fmt: skip
    )
    written.append(path)
    return written


def export_energon(root: str | Path, *, num_workers: int = 1) -> dict[str, Any]:
    """Prepare every shard set with ``energon prepare`` and write the metadataset(s)."""
    root = Path(root)
    sets = shard_sets(root)
    log = prepare(sets, num_workers=num_workers)
    paths = write_metadataset(root)
    return {"prepared": [str(f) for f, _ in sets], "metadatasets": [str(p) for p in paths], "log": log}


if __name__ == "__main__":  # the child process of `prepare`
    sys.exit(_child(sys.argv[1:]))
