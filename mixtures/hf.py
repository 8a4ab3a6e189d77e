"""Hugging Face `datasets` loading of a shard folder: a dataset card (SHARDS/README.md) whose
YAML declares one config per shard set with a fixed set of fields.

Why it is needed: `load_dataset("webdataset", data_files=...)` infers the features from the
first five samples of the first tar and refuses them when their member sets differ ("the files
in the archive don't share the same prefix or the same types"); and a later sample with a member
the first five lacked, or a record JSON with other keys, breaks the Arrow cast. Our shards mix
layouts (a sample has ``jpg``, ``png``, ``mp4``, ``wav``, ``img0.jpg``/``img1.jpg``... or no media)
and the record JSON holds only the fields a row has.

The way out (the issue's "pack variable parts into one field"): the card declares, per config,

- ``json`` as a ``Json`` feature: the whole variable record in one field (stored as JSON text);
- ``txt`` as a string;
- every media member suffix found in the config's shards as its own column (images as
  ``Image``, video and audio as raw ``binary`` so that nothing needs torchcodec to load; cast
  them with ``ds.cast_column("mp4", datasets.Video())`` when it is there), absent = None.

Since the features are given, the builder skips inference and fills absent members with None:
``load_dataset(SHARDS)`` (pre-mixed) or ``load_dataset(SHARDS, "<group>")`` (per-group: one
config per group folder) works with no code. Member suffixes come from the shard stats'
``by_member`` counts when the mixer writes them, otherwise from the tar headers (no data read).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

from mixtures.report_model import read_report
from schemas.files import atomic_write_text

__all__ = ["card_configs", "member_suffixes", "write_hf_card"]

#: members declared as an HF ``Image`` feature: what PIL decodes (not schemas.media_types.IMAGE_EXTS,
#: which also holds SVG and other formats PIL cannot read)
_IMAGE = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}
_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_\-]+)-\d+\.tar$")


def member_suffixes(tar: Path) -> Counter[str]:
    """Member suffixes (``jpg``, ``img0.jpg``, ``json``...) of one shard and how many samples have
    each: from ``<shard>.stats.json`` ``by_member`` if present, else from the tar headers."""
    stats = tar.with_name(tar.name[: -len(".tar")] + ".stats.json")
    if stats.is_file():
        by_member = json.loads(stats.read_text()).get("by_member")
        if by_member:
            return Counter(by_member)
    out: Counter[str] = Counter()
    with tarfile.open(tar) as tf:
        for m in tf:
            if m.isfile():
                out[m.name.rsplit("/", 1)[-1].partition(".")[2]] += 1
    return out


def _feature(suffix: str) -> str:
    ext = suffix.rsplit(".", 1)[-1].lower()
    if ext == "json":
        return "json"
    if ext in ("txt", "text"):
        return "string"
    if ext in _IMAGE:
        return "image"
    return "binary"


def _features(suffixes: set[str]) -> list[dict[str, str]]:
    # HF's webdataset builder yields the members, then __key__ and __url__
    return [{"name": s, "dtype": _feature(s)} for s in sorted(suffixes)] + [
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
    ]


def _shard_sets(root: Path) -> list[tuple[str, str, list[Path]]]:
    """(config name, folder relative to root, tars) for the root and every group folder."""
    sets = []
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "stats")
    for folder in folders:
        tars = sorted(f for f in folder.glob("*.tar") if _SHARD.match(f.name))
        if tars:
            rel = "" if folder == root else folder.name
            sets.append((rel or "default", rel, tars))
    return sets


def card_configs(root: str | Path) -> list[dict[str, Any]]:
    """The ``configs`` / ``dataset_info`` entries of the card, one per shard set."""
    root = Path(root)
    out = []
    for name, rel, tars in _shard_sets(root):
        suffixes: set[str] = set()
        samples = 0
        splits: set[str] = set()
        for t in tars:
            counts = member_suffixes(t)
            suffixes |= set(counts)
            samples += counts.get("json", 0)
            splits.add(_SHARD.match(t.name)["split"])
        prefix = f"{rel}/" if rel else ""
        out.append(
            {
                "config_name": name,
                "folder": rel,
                "data_files": [{"split": s, "path": f"{prefix}{s}-*.tar"} for s in sorted(splits)],
                "features": _features(suffixes),
                "samples": samples,
                "shards": len(tars),
            }
        )
    return out


def write_hf_card(root: str | Path) -> Path:
    """Write SHARDS/README.md (dataset card with configs and features); return its path."""
    import yaml

    root = Path(root)
    configs = card_configs(root)
    if not configs:
        raise FileNotFoundError(f"{root}: no <split>-NNNNNN.tar shards")
    report = read_report(root)
    meta = {
        "configs": [{"config_name": c["config_name"], "data_files": c["data_files"]} for c in configs],
        "dataset_info": [{"config_name": c["config_name"], "features": c["features"]} for c in configs],
    }
    per_group = len(configs) > 1 or configs[0]["folder"] != ""
    total = sum(c["samples"] for c in configs) or 1
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        f"# {report.mixture if report else 'nmm-curate'} / stage {report.stage if report else '?'}",
        "",
        "WebDataset shards written by `curate mix` (nmm-curate). Each sample: `json` (the sample record with",
        "`group`, `stage`, `repeat` and its `cost` in every unit), `txt` (the primary text) and one column per",
        "media member; a member a sample does not have is None. Video and audio are raw bytes",
        "(`ds.cast_column(\"mp4\", datasets.Video())` decodes them where torchcodec is installed).",
        "",
        "```python",
        "from datasets import load_dataset",
    ]
    split = configs[0]["data_files"][0]["split"]
    if not per_group:
        lines += [f'ds = load_dataset("{root}", split="{split}")', "```"]
    else:
        lines += [
            f'ds = load_dataset("{root}", "{configs[0]["config_name"]}", split="{split}")  # one group',
            "# the stage mix, drawn at load time (probabilities = each group's share of samples):",
            "from datasets import interleave_datasets",
            "names, probs = " + json.dumps([c["config_name"] for c in configs]) + ", "
            + json.dumps([round(c["samples"] / total, 6) for c in configs]),
            f'mixed = interleave_datasets([load_dataset("{root}", n, split="{split}") for n in names], probabilities=probs,',
            '                             stopping_strategy="all_exhausted")',
            "```",
        ]  # fmt: skip
    lines += ["", "| config | shards | samples |", "| --- | ---: | ---: |"]
    lines += [f"| {c['config_name']} | {c['shards']} | {c['samples']} |" for c in configs]
    path = root / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
