"""Every stage preset validates against the mixture schema, names its source and unit, and encodes
the published ratios."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from mixtures.config import GroupSpec, load_mixture

PRESETS = sorted((Path(__file__).resolve().parents[1] / "mixtures" / "presets").glob("*.yaml"))


def _shares(groups: list[GroupSpec], share: float = 1.0, prefix: str = "") -> dict[str, float]:
    total = sum(g.weight or 0.0 for g in groups)
    out = {}
    for g in groups:
        s = share * (g.weight or 0.0) / total
        out.update(_shares(g.groups, s, f"{prefix}{g.name}/") if g.groups else {f"{prefix}{g.name}": s})
    return out


def _stage_shares(name: str) -> dict[str, dict[str, float]]:
    cfg = load_mixture(Path(PRESETS[0]).parent / name)
    return {s.name: _shares(s.groups) for s in cfg.stages}


def test_there_are_presets():
    assert {p.stem for p in PRESETS} >= {"bagel", "janus_pro", "emu3_5", "transfusion", "moshi", "ming_omni"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_names_its_source(path: Path):
    cfg = load_mixture(path)
    assert cfg.stages
    comments = "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
    assert re.search(r"arXiv \d{4}\.\d{4,5}", comments), "source (arXiv id) in a comment"
    assert re.search(r"\bunit\b", comments, re.I), "the published unit in a comment"
    assert "not verified" in comments or "confirmed" in comments, "say what was checked"
    for stage in cfg.stages:
        assert math.isclose(sum(_shares(stage.groups).values()), 1.0)


def _close(got: dict[str, float], want: dict[str, float]) -> None:
    total = sum(want.values())
    assert got.keys() == {k for k, v in want.items() if v > 0}
    for k, v in got.items():
        assert math.isclose(v, want[k] / total, abs_tol=1e-9), (k, v, want[k] / total)


def test_bagel_table3_sampling_ratios():
    s = _stage_shares("bagel.yaml")
    cols = ("text", "t2i", "i2t", "interleaved_und", "video_interleaved", "web_interleaved")
    for stage, row in {
        "alignment": (0, 0, 1, 0, 0, 0),
        "pretraining": (0.05, 0.6, 0.1, 0.1, 0.1, 0.05),
        "continued": (0.05, 0.4, 0.1, 0.15, 0.15, 0.15),
        "sft": (0.05, 0.3, 0.05, 0.2, 0.2, 0.2),
    }.items():
        _close(s[stage], dict(zip(cols, row, strict=True)))
    assert {st.unit for st in load_mixture(Path(PRESETS[0]).parent / "bagel.yaml").stages} == {"samples"}


def test_janus_pro_data_ratios():
    s = _stage_shares("janus_pro.yaml")
    cols = ("understanding", "text", "generation")
    for stage, row in {"stage1": (1, 0, 3), "stage2": (2, 3, 5), "stage3": (5, 1, 4)}.items():
        _close(s[stage], dict(zip(cols, row, strict=True)))


def test_emu3_5_table2_mixture():
    s = _stage_shares("emu3_5.yaml")
    cols = ("text", "image_text", "video_text", "any_to_image", "video_interleaved")
    _close(s["stage1"], dict(zip(cols, (0.2, 0.2, 0.05, 0, 0.55), strict=True)))
    _close(s["stage2"], dict(zip(cols, (0.18, 0.16, 0.08, 0.03, 0.55), strict=True)))


def test_transfusion_moshi_ming_units_and_ratios():
    t = load_mixture(Path(PRESETS[0]).parent / "transfusion.yaml")
    assert t.stages[0].unit == "tokens" and _shares(t.stages[0].groups) == {"text": 0.5, "image_caption": 0.5}
    assert "80%" in (Path(PRESETS[0]).parent / "transfusion.yaml").read_text()  # the rule we do not apply is stated
    m = _stage_shares("moshi.yaml")
    assert math.isclose(m["pretraining"]["text"], 0.5) and math.isclose(m["posttraining"]["text"], 0.1)
    ming = load_mixture(Path(PRESETS[0]).parent / "ming_omni.yaml")
    assert [s.unit for s in ming.stages] == ["samples", "hours"]
