"""The standard graph on the real Open Ephys recording (16 channels, 40 kHz, barrel cortex)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from neuropool.io.timeseries import TimeseriesStore
from tests.tasks.conftest import run_standard

OE = "openephys-cortex-16ch"


def stereotrode_probe(path) -> None:
    """A probeinterface JSON: 8 stereotrodes 150 µm apart, wired to channels 0..15 in order."""
    from probeinterface import Probe, ProbeGroup, write_probeinterface

    pos = np.array([[0.0 + 20 * (i % 2), 150.0 * (i // 2)] for i in range(16)])
    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=pos, shapes="circle", shape_params={"radius": 6})
    probe.set_device_channel_indices(np.arange(16))
    group = ProbeGroup()
    group.add_probe(probe)
    write_probeinterface(path, group)


@pytest.fixture
def oe_session(shared_data, tmp_path):
    session = tmp_path / "cortex-session"
    shutil.copytree(shared_data / OE, session)
    return session


def test_without_a_probe_layout_sorting_says_what_is_missing(oe_session, tmp_path):
    report = run_standard(oe_session, tmp_path / "out", until="sort")
    assert report.results["preprocess[probe00]"].state == "done"
    err = report.results["sort[probe00]"].error
    assert "no contact positions" in err and "probe_file" in err and "preprocessed.zarr" in err


@pytest.mark.slow
def test_with_a_probe_file_the_whole_graph_runs(oe_session, tmp_path):
    stereotrode_probe(oe_session / "stereotrodes.json")
    rel = "Record Node 101/experiment1/recording1"
    (oe_session / "session.json").write_text(json.dumps(
        {"probes": {"probe00": {"raw": rel, "probe_file": "stereotrodes.json"}}}))
    report = run_standard(oe_session, tmp_path / "out", until="export")
    assert report.ok, {k: r.error for k, r in report.failed().items()}
    raw = TimeseriesStore(report.asset.dataset_url("ephys.raw", "probe00"))
    np.testing.assert_allclose(raw.coord("y")[:4], [0, 0, 150, 150])
    assert report.results["sort[probe00]"].summary["n_units"] >= 1
    assert report.results["localize[probe00]"].summary["trajectory"] is None
    assert "NaN" in report.results["localize[probe00]"].summary["note"]


def test_a_bad_probe_file_is_named(oe_session, tmp_path):
    (oe_session / "bad.json").write_text("{}")
    rel = "Record Node 101/experiment1/recording1"
    (oe_session / "session.json").write_text(json.dumps(
        {"probes": {"probe00": {"raw": rel, "probe_file": "bad.json"}}}))
    report = run_standard(oe_session, tmp_path / "out", until="decompress")
    err = report.results["decompress[probe00]"].error
    assert "bad.json" in err and "probeinterface" in err
