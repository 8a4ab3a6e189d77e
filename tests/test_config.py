"""Config loading: every error names the file, the key, the line and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.config import ConfigError, apply_overrides, load_pipeline

GOOD = """\
name: t
sources:
  - name: photos
    reader: scratch_folder
    path: data
stages:
  - op: filter
    params:
      rules:
        - {field: min_side, min: 64}
  - op: route
    params:
      rules:
        - name: cap
          when: {layout: image-text}
          tasks: [captioning]
          buckets: [understanding]
"""


@pytest.fixture(autouse=True)
def _scratch_reader():
    # a tiny registered reader so these tests do not depend on the ingest package
    from operators.base import Reader
    from operators.registry import READERS, register_reader

    if "scratch_folder" not in READERS:

        @register_reader
        class ScratchFolder(Reader):
            name = "scratch_folder"

            def plan(self):
                return iter(())

            def read(self, payload):
                return iter(())

    yield
    READERS.pop("scratch_folder", None)  # leave the registry as the package defines it (schema tests)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipe.yaml"
    p.write_text(text)
    return p


def test_good_config_resolves_paths_relative_to_the_file(tmp_path):
    loaded = load_pipeline(write(tmp_path, GOOD))
    assert loaded.config.sources[0].path == str(tmp_path / "data")
    assert [s.stage_name for s in loaded.config.stages] == ["filter", "route"]
    assert loaded.stage_params[0].rules[0].min == 64


def test_unknown_operator_names_key_line_and_suggestion(tmp_path):
    p = write(tmp_path, GOOD.replace("op: filter", "op: filtr"))
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    msg = str(e.value)
    assert f"{p}:7: stages[0].op: unknown operator 'filtr'; did you mean 'filter'?" in msg


def test_bad_param_type_names_nested_key(tmp_path):
    p = write(tmp_path, GOOD.replace("min: 64", "min: lots"))
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    assert f"{p}:10: stages[0].params.rules[0].min:" in str(e.value)
    assert "'lots'" in str(e.value)


def test_unknown_key_is_an_error(tmp_path):
    p = write(tmp_path, GOOD.replace("    path: data\n", "    path: data\n    pth: typo\n"))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.pth: unknown key"):
        load_pipeline(p)


def test_unknown_bucket_and_task(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\[1\]\.params\.rules\[0\]\.buckets\[0\]"):
        load_pipeline(write(tmp_path, GOOD.replace("[understanding]", "[understandin]")))
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['captionin'\]"):
        load_pipeline(write(tmp_path, GOOD.replace("[captioning]", "[captionin]")))


def test_invalid_yaml_reports_line(tmp_path):
    p = write(tmp_path, "name: t\nsources: [\n")
    with pytest.raises(ConfigError, match=rf"{p}:\d+: not valid YAML"):
        load_pipeline(p)


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sources: required key is missing"):
        load_pipeline(write(tmp_path, "name: t\n"))


def test_rule_without_bounds_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="needs at least one of min, max, in"):
        load_pipeline(write(tmp_path, GOOD.replace("{field: min_side, min: 64}", "{field: min_side}")))


def test_set_overrides_by_name_and_index(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, GOOD)
    loaded = load_pipeline(
        p,
        ["sources.photos.path=elsewhere", "stages.filter.params.rules.0.min=128", "stages.1.name=router"],
    )
    # a path given on the command line is relative to the current folder
    assert loaded.config.sources[0].path == str(tmp_path / "elsewhere")
    assert loaded.stage_params[0].rules[0].min == 128
    assert loaded.config.stages[1].stage_name == "router"


def test_set_error_names_the_override(tmp_path):
    p = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"no item 'nope'"):
        load_pipeline(p, ["sources.nope.path=x"])
    with pytest.raises(ConfigError, match=r"\(value from --set\): stages\[0\]\.params\.rules\[0\]\.min"):
        load_pipeline(p, ["stages.filter.params.rules.0.min=abc"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["novalue"])


def test_duplicate_stage_names_rejected(tmp_path):
    text = GOOD.replace("  - op: route", "  - op: filter\n    params: {rules: [{field: x, min: 1}]}\n  - op: route")
    with pytest.raises(ConfigError, match="stage names must be unique"):
        load_pipeline(write(tmp_path, text))
