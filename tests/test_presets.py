"""Every stage preset validates against the mixture schema, and every number in it is accounted for
in mixtures/presets/citations.json: either a published value kept there once, with its source,
locator and quote, or a template value marked illustrative. The published numbers are read from the
data file, never retyped here."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

from mixtures.config import GroupSpec, load_mixture
from mixtures.preset_sources import (
    CITATIONS,
    PRESETS_DIR,
    check_citations,
    check_preset,
    load_citations,
    numeric_leaves,
)

PRESETS = sorted(PRESETS_DIR.glob("*.yaml"))
CITED = load_citations()


def _shares(groups: list[GroupSpec], share: float = 1.0, prefix: str = "") -> dict[str, float]:
    total = sum(g.weight or 0.0 for g in groups)
    out = {}
    for g in groups:
        s = share * (g.weight or 0.0) / total
        out.update(_shares(g.groups, s, f"{prefix}{g.name}/") if g.groups else {f"{prefix}{g.name}": s})
    return out


def test_there_are_presets_and_each_has_an_entry():
    assert {p.stem for p in PRESETS} >= {"bagel", "janus_pro", "emu3_5", "transfusion", "moshi", "ming_omni"}
    assert set(CITED["presets"]) == {p.name for p in PRESETS}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_names_its_source(path: Path):
    cfg = load_mixture(path)
    assert cfg.stages
    comments = "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
    source = CITED["sources"][CITED["presets"][path.name]["source"]]
    assert re.search(rf"arXiv {re.escape(source['arxiv'])}", comments), "the paper's arXiv id in a comment"
    assert "citations.json" in comments, "the comment points at where each number comes from"
    assert re.search(r"\bunit\b", comments, re.I), "the published unit in a comment"
    for stage in cfg.stages:
        assert math.isclose(sum(_shares(stage.groups).values()), 1.0)


def test_citations_are_well_formed():
    assert check_citations(CITED) == []
    used = set()
    for spec in CITED["presets"].values():
        used |= set(spec.get("cited", {}).values()) | set(spec.get("omitted_zero", {}).values())
        assert spec["source"] in CITED["sources"]
    assert used == set(CITED["numbers"]), "every cited number is used by a preset, and only those"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_number_is_cited_or_illustrative(path: Path):
    assert check_preset(path, CITED) == []


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_stage_shares_follow_the_cited_numbers(path: Path):
    """What the mixer plans from (each leaf's share of its stage) is the cited ratio, normalised."""
    spec = CITED["presets"][path.name]
    numbers = CITED["numbers"]
    cfg = load_mixture(path)
    for stage in cfg.stages:
        weights = {
            p.split(".")[3]: numbers[k]["value"]
            for p, k in spec.get("cited", {}).items()
            if re.fullmatch(rf"stages\.{stage.name}\.groups\.[^.]+\.weight", p)
        }
        if not weights:
            continue
        zeros = {p.split(".")[3] for p in spec.get("omitted_zero", {}) if p.startswith(f"stages.{stage.name}.groups.")}
        shares = _shares(stage.groups)
        assert set(shares) == set(weights) and not zeros & set(shares)
        total = sum(weights.values())
        for g, w in weights.items():
            assert math.isclose(shares[g], w / total, abs_tol=1e-12), (stage.name, g)


def test_a_changed_or_new_number_is_caught(tmp_path: Path):
    bad = tmp_path / "bagel.yaml"
    shutil.copy(PRESETS_DIR / "bagel.yaml", bad)
    text = bad.read_text()
    assert "weight: 0.6," in text
    bad.write_text(
        text.replace("weight: 0.6,", "weight: 0.61,").replace(
            "    max_repeat: 4\n", "    max_repeat: 4\n    temperature: 2.0\n", 1
        )
    )
    problems = check_preset(bad, CITED)
    assert any(
        "stages.pretraining.groups.t2i.weight = 0.61" in p and "bagel.table3.pretraining.t2i" in p for p in problems
    )
    assert any("stages.pretraining.temperature = 2 is neither cited nor marked illustrative" in p for p in problems)


def test_a_group_given_for_a_cited_zero_is_caught(tmp_path: Path):
    bad = tmp_path / "emu3_5.yaml"
    text = (PRESETS_DIR / "emu3_5.yaml").read_text()
    anchor = "      - {name: video_text, weight: 0.05,"
    assert text.count(anchor) == 1
    extra = "      - {name: any_to_image, weight: 0.01, buckets: [generation], tasks: [text_to_image]}\n"
    bad.write_text(text.replace(anchor, extra + anchor))
    assert any("stages.stage1.groups.any_to_image.weight" in p for p in check_preset(bad, CITED))


def test_numbers_yaml_reads_as_strings_still_count():
    leaves = numeric_leaves(
        {
            "stages": [{"name": "s", "budget": "1.0e9", "groups": [{"name": "g", "weight": 1, "text_first": True}]}],
            "seed": 0,
        }
    )
    assert leaves == {"stages.s.budget": 1e9, "stages.s.groups.g.weight": 1.0, "seed": 0.0}


def test_the_data_file_ships_next_to_the_presets():
    assert CITATIONS.parent == PRESETS_DIR and CITATIONS.suffix == ".json"
