"""Derived assets: naming, where they may go, commit markers, provenance."""

from __future__ import annotations

from datetime import datetime

import pytest

from neuropool.errors import ConfigError, StoreError
from neuropool.io import spec
from neuropool.io.store import DerivedAsset


def test_asset_names_follow_the_aind_convention():
    when = datetime(2026, 3, 4, 5, 6, 7)
    name = spec.asset_name("mouse1_2026-03-04_001", "processed", when)
    assert name == "mouse1_2026-03-04_001_processed_2026-03-04_05-06-07"
    assert spec.parse_asset_name(name) == {"source": "mouse1_2026-03-04_001", "label": "processed",
                                           "date": "2026-03-04", "time": "05-06-07"}
    assert spec.parse_asset_name("mouse1") is None
    with pytest.raises(ConfigError, match="label"):
        spec.asset_name("s", "bad label")
    assert spec.alf_filename("spikes", "times", "npy") == "spikes.times.npy"
    assert spec.dataset_path("ephys.raw", "probe01") == "probe01/raw.zarr"


@pytest.mark.parametrize("protocol", ["local", "memory"])
def test_create_find_commit(tmp_path, protocol):
    root = str(tmp_path / "derived") if protocol == "local" else f"memory://{tmp_path.name}/derived"
    source = "/data/raw/mouse1_2026-03-04_001"
    a = DerivedAsset.create(root, source, when=datetime(2026, 3, 4, 5, 6, 7))
    b = DerivedAsset.create(root, source, when=datetime(2026, 3, 5, 5, 6, 7))
    assert DerivedAsset.find_latest(root, source).url == b.url
    assert DerivedAsset.open_or_create(root, source).url == b.url
    assert DerivedAsset.find_latest(root, "/data/raw/other") is None
    desc = a.read_description()
    assert desc["source_data"] == ["mouse1_2026-03-04_001"] and desc["data_level"] == "derived"

    assert a.read_commit("sort[probe00]") is None
    a.commit("sort[probe00]", {"fingerprint": "abc", "start_date_time": "1"})
    assert a.read_commit("sort[probe00]")["fingerprint"] == "abc"
    assert set(a.commits()) == {"sort[probe00]"}
    doc = a.write_processing({"nodes": [], "edges": []})
    assert [p["node"] for p in doc["processing_pipeline"]["data_processes"]] == ["sort[probe00]"]
    a.uncommit("sort[probe00]")
    assert a.read_commit("sort[probe00]") is None and a.commits() == {}


def test_assets_never_go_inside_the_raw_session(tmp_path):
    raw = tmp_path / "mouse1"
    raw.mkdir()
    with pytest.raises(StoreError, match="inside the raw session"):
        DerivedAsset.create(str(raw), str(raw))
    with pytest.raises(StoreError, match="inside the raw session"):
        DerivedAsset.create(str(raw / "sub"), str(raw / "x.ap.cbin"))


def test_clear_refuses_paths_outside_the_asset(tmp_path):
    a = DerivedAsset.create(str(tmp_path / "d"), str(tmp_path / "raw"))
    with pytest.raises(StoreError, match="outside the asset"):
        a.clear(str(tmp_path / "raw"))
