"""Cluster profiles and named pipeline configs: found by name, errors that list what exists."""

from __future__ import annotations

import pytest
import yaml

from neuropool.cluster.profiles import connect_to, load_profile
from neuropool.errors import ConfigError
from neuropool.graphs.config import config_by_name


def test_profiles_are_found_by_name_or_path_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROPOOL_CLUSTER_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no configs/cluster/ here: only the profiles written below
    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"address": None, "n_workers": 1, "gpus": 0}))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"address": "tcp://x:1", "n_workers": 2}))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"adress": "tcp://x:1"}))
    assert load_profile("small").n_workers == 1
    assert load_profile(str(tmp_path / "small.yaml")).gpus == 0
    with pytest.raises(ConfigError, match=r"cluster 'nope' is neither an address.*profiles found: bad, small, typo"):
        load_profile("nope")
    with pytest.raises(ConfigError, match=r"typo\.yaml: invalid cluster profile: adress: Extra inputs"):
        load_profile("typo")
    with pytest.raises(ConfigError, match="cannot set them"):
        load_profile("bad").pool_kwargs()
    with connect_to("small") as pool:  # a real LocalCluster of one worker
        assert [w.get("GPU", 0) for w in pool.worker_resources()] == [0]
    with connect_to("") as pool:
        assert pool.kind == "dask"


def test_named_pipeline_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROPOOL_CONFIG_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump({"sort": {"sorter": "spykingcircus2"}}))
    assert config_by_name("fast").sort.sorter == "spykingcircus2"
    assert config_by_name("default") == config_by_name(None)
    with pytest.raises(ConfigError, match=r"config 'slow': no such file.*named configs: default, fast"):
        config_by_name("slow")
