"""Pipeline configuration: the YAML mirrors the defaults; invalid values name their field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from neuropool.errors import ConfigError
from neuropool.graphs.config import PipelineConfig, load_config

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "pipeline" / "default.yaml"


def test_default_yaml_holds_every_parameter_with_its_default():
    from_file = yaml.safe_load(DEFAULT_YAML.read_text())
    defaults = PipelineConfig()
    assert load_config(DEFAULT_YAML) == defaults
    # every parameter is spelled out, not just left to its default
    assert set(from_file) == set(PipelineConfig.model_fields)
    for section, value in defaults:
        if isinstance(value, BaseModel):
            assert set(from_file[section]) == set(type(value).model_fields), section


def test_partial_config_keeps_other_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sort:\n  sorter: spykingcircus2\npreprocess:\n  highpass_freq: 400\n")
    cfg = load_config(f)
    assert cfg.sort.sorter == "spykingcircus2" and cfg.preprocess.highpass_freq == 400
    assert cfg.qc == PipelineConfig().qc
    assert cfg.task_params("preprocess") == {"highpass_freq": 400.0}


@pytest.mark.parametrize("text, field", [
    ("preprocess:\n  highpass_freq: -1\n", "preprocess.highpass_freq"),
    ("preprocess:\n  operator: mean\n", "preprocess.operator"),
    ("sort:\n  sorter: nosuchsorter\n", "sort"),
    ("qc:\n  thresholds:\n    nosuchmetric: {lt: 1}\n", "qc"),
    ("qc:\n  thresholds:\n    snr: {}\n", "qc.thresholds.snr"),
    ("decompress:\n  chunk_seconds: 0\n", "decompress.chunk_seconds"),
    ("typo_section: 1\n", "typo_section"),
    ("retries: many\n", "retries"),
])
def test_invalid_values_name_the_file_and_field(tmp_path, text, field):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(f) in str(e.value) and field in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "x.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "x.yaml")
