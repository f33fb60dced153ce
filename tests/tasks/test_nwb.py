"""The NWB export: a small sorted probe (generated ground truth, 32 sites, through the real qc and
localize tasks) written as NWB (HDF5 and NWB-Zarr) and read back with pynwb."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuropool.errors import ConfigError, MetadataError, MissingDependencyError, StoreError
from neuropool.io import timeseries
from neuropool.tasks.nwb import Nwb, session_start_time, unit_channels
from neuropool.tasks.qc import load_analyzer

from .units_data import ground_truth, run_task, write_store

SESSION = "mouse_2024-03-05_002"
TRAJECTORY = {"x": -1000.0, "y": -2000.0, "z": 0.0, "depth": 3000.0, "theta": 15.0, "phi": 180.0}


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    """A probe's committed inputs as the pipeline leaves them: raw store (metadata only),
    preprocessed store, sorting, qc and localize folders, and the session's ``session.json``."""
    root = tmp_path_factory.mktemp("nwb")
    recording, sorting = ground_truth(duration=6.0, units=5, channels=32, seed=3)
    pre = write_store(str(root / "preprocessed.zarr"), recording)
    if "main_channel_id" in sorting.get_property_keys():  # the generator's channel ids, renamed
        index = {str(c): i for i, c in enumerate(recording.channel_ids)}
        sorting.set_property("main_channel_id", np.array(
            [f"AP{index[str(c)]}" for c in sorting.get_property("main_channel_id")]))
    sorting.save(folder=str(root / "sorting" / "sorting"), format="numpy_folder")
    run_task("qc", {"n_jobs": 1}, {"ephys.preprocessed": pre, "ephys.sorting": str(root / "sorting")}, root)
    run_task("localize", {"trajectory": TRAJECTORY},
             {"ephys.preprocessed": pre, "units.metrics": str(root / "qc")}, root)
    raw = str(root / "raw.zarr")
    n = recording.get_num_channels()
    timeseries.create(raw, n_samples=10, channel_ids=[f"AP{i}" for i in range(n)], dtype="int16",
                      chunk_samples=10, coords={c: np.zeros(n) for c in ("x", "y", "shank", "gain_uv", "adc_shift")}
                      | {"is_sync": np.zeros(n, bool)},
                      attrs={"sampling_frequency": 30000.0, "probe_type": "NP1", "metadata": {
                          "fileCreateTime": "2024-03-05T14:30:00", "imDatPrb_pn": "PRB_1_4_0480_1",
                          "imDatPrb_sn": "18005116811"}})
    timeseries.finalize(raw)
    session = root / SESSION
    session.mkdir()
    (session / "session.json").write_text(json.dumps({
        "subject": {"subject_id": "mouse", "species": "Mus musculus", "sex": "F", "age": "P90D"},
        "experimenter": "Ada Lovelace", "lab": "neurolab", "probes": {"probe00": {"raw": "x.ap.cbin"}}}))
    return {"root": root, "sorting": sorting, "session": session,
            "inputs": {"units.metrics": str(root / "qc"), "units.locations": str(root / "localize"),
                       "ephys.raw": raw},
            "info": {"session": {"name": SESSION, "url": str(session)},
                     "probe": {"model": "Neuropixels 1.0"}}}


def write_nwb(probe: dict, folder: Path, params: dict | None = None, inputs: dict | None = None) -> dict:
    summary = run_task("nwb", params or {}, {**probe["inputs"], **(inputs or {})}, folder, probe["info"])
    json.dumps(summary)  # goes into processing.json
    return summary


@pytest.fixture(scope="module")
def hdf5(probe, tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("hdf5")
    summary = write_nwb(probe, folder)
    return summary, folder / "nwb" / summary["file"]


def table(nwb, name: str) -> pd.DataFrame:
    return getattr(nwb, name).to_dataframe(index=True)


def test_the_file_holds_the_sorting_with_its_metrics_and_locations(probe, hdf5):
    import pynwb

    summary, path = hdf5
    root, sorting = probe["root"], probe["sorting"]
    metrics = pd.read_parquet(root / "qc" / "metrics.pqt")
    located = pd.read_parquet(root / "localize" / "units.pqt")
    channels = pd.read_parquet(root / "localize" / "channels.pqt")
    analyzer = load_analyzer(root / "qc", "qc")
    assert path.name == f"{SESSION}_probe00.nwb" and path.is_file()
    assert (summary["n_units"], summary["n_electrodes"]) == (len(metrics), len(channels)) == (5, 32)
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units = nwb.units
        assert list(units.id[:]) == list(range(5))
        assert list(units["unit_name"][:]) == list(metrics["unit_id"])
        fs = sorting.sampling_frequency
        for i, unit_id in enumerate(sorting.unit_ids):
            np.testing.assert_array_equal(units.get_unit_spike_times(i),
                                          sorting.get_unit_spike_train(unit_id) / fs)
        assert units.resolution == pytest.approx(1 / fs)
        for column in metrics.columns.drop("unit_id"):
            np.testing.assert_array_equal(units[column][:], metrics[column].to_numpy(), err_msg=column)
        assert units["passes_qc"].description.startswith("True when every QC threshold holds: ")
        for ours, theirs in (("rel_x", "x"), ("rel_y", "y"), ("rel_z", "z"), ("ml", "ml"), ("ap", "ap"), ("dv", "dv")):
            np.testing.assert_array_equal(units[ours][:], located[theirs].to_numpy(), err_msg=ours)
        assert not np.isnan(units["dv"][:]).any()  # through the trajectory

        electrodes = table(nwb, "electrodes")
        assert list(electrodes["channel_name"]) == list(channels["channel"])
        for ours, theirs in (("rel_x", "x"), ("rel_y", "y"), ("ml", "ml"), ("ap", "ap"), ("dv", "dv")):
            np.testing.assert_array_equal(electrodes[ours], channels[theirs], err_msg=ours)
        assert set(electrodes["location"]) == {"unknown"}  # no atlas
        assert set(electrodes["group_name"]) == {"probe00"}
        group = nwb.electrode_groups["probe00"]
        assert group.device is nwb.devices["probe00"] and group.location == "unknown"
        assert nwb.devices["probe00"].serial_number == "18005116811"
        assert nwb.devices["probe00"].model.manufacturer == "IMEC"

        # waveforms: the same K channels per unit, from the unit's sparsity, around its peak
        mean = units["waveform_mean"].data[:]
        k = summary["channels_per_unit"]
        templates = analyzer.get_extension("templates").get_templates(operator="average")
        assert mean.shape == (5, templates.shape[1], k) and mean.dtype == np.float32
        assert units.waveform_unit == "volts" and units.waveform_rate == fs
        assert units.waveform_time_before_peak_in_ms == pytest.approx(1.0)
        assert units["waveform_sd"].data.shape == mean.shape
        mask = analyzer.sparsity.mask if analyzer.sparsity is not None else np.ones((5, 32), bool)
        assert k == mask.sum(axis=1).min()
        for i in range(5):
            rows = units["electrodes"][i].index.to_numpy()
            assert len(rows) == k and np.all(np.diff(rows) > 0) and mask[i, rows].all()
            assert units["peak_channel"][i] in rows
            np.testing.assert_allclose(mean[i], templates[i][:, rows] * 1e-6, rtol=1e-6)

        assert nwb.session_start_time == datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
        assert summary["session_start_time_source"].startswith("SpikeGLX fileCreateTime")
        assert "SpikeGLX fileCreateTime" in nwb.notes
        assert nwb.session_id == SESSION and nwb.experimenter == ("Ada Lovelace",) and nwb.lab == "neurolab"
        assert (nwb.subject.subject_id, nwb.subject.species, nwb.subject.age) == ("mouse", "Mus musculus", "P90D")


def test_brain_regions_from_an_atlas_name_the_electrodes_and_units(probe, tmp_path):
    import pynwb

    loc = tmp_path / "localize"
    shutil.copytree(probe["root"] / "localize", loc)
    for name in ("channels.pqt", "units.pqt"):
        t = pd.read_parquet(loc / name)
        deep = t["y"].to_numpy() < 100
        t["atlas_id"] = np.where(deep, 382, 0)  # CA1, void
        t["acronym"] = np.where(deep, "CA1", "void")
        t.to_parquet(loc / name)
    summary = write_nwb(probe, tmp_path, inputs={"units.locations": str(loc)})
    channels, units = pd.read_parquet(loc / "channels.pqt"), pd.read_parquet(loc / "units.pqt")
    with pynwb.NWBHDF5IO(str(tmp_path / "nwb" / summary["file"]), "r") as io:
        nwb = io.read()
        electrodes = table(nwb, "electrodes")
        assert list(electrodes["location"]) == list(channels["acronym"])
        np.testing.assert_array_equal(electrodes["atlas_id"], channels["atlas_id"])
        assert list(nwb.units["location"][:]) == list(units["acronym"])
        np.testing.assert_array_equal(nwb.units["atlas_id"][:], units["atlas_id"])
        assert "CA1" in nwb.electrode_groups["probe00"].location


def test_nwb_zarr_reads_back_the_same(probe, hdf5, tmp_path):
    hdmf_zarr = pytest.importorskip("hdmf_zarr", reason="hdmf-zarr is not installed (neuropool[nwb-zarr])")
    import pynwb

    summary = write_nwb(probe, tmp_path, {"format": "zarr"})
    path = tmp_path / "nwb" / summary["file"]
    assert path.name == f"{SESSION}_probe00.nwb.zarr" and path.is_dir()
    with hdmf_zarr.NWBZarrIO(str(path), mode="r") as io, pynwb.NWBHDF5IO(str(hdf5[1]), "r") as ref:
        nwb, h5 = io.read(), ref.read()
        assert len(nwb.units) == len(h5.units) == 5 and len(nwb.electrodes) == 32
        for i in range(5):
            np.testing.assert_array_equal(nwb.units.get_unit_spike_times(i), h5.units.get_unit_spike_times(i))
        np.testing.assert_array_equal(nwb.units["waveform_mean"].data[:], h5.units["waveform_mean"].data[:])
        assert nwb.units.colnames == h5.units.colnames
        pd.testing.assert_frame_equal(table(nwb, "electrodes").drop(columns="group"),
                                      table(h5, "electrodes").drop(columns="group"))


def test_without_waveforms_units_keep_their_electrodes(probe, tmp_path):
    import pynwb

    summary = write_nwb(probe, tmp_path, {"waveforms": False})
    with pynwb.NWBHDF5IO(str(tmp_path / "nwb" / summary["file"]), "r") as io:
        units = io.read().units
        assert "waveform_mean" not in units.colnames and "waveform_sd" not in units.colnames
        assert len(units["electrodes"][0]) == summary["channels_per_unit"] > 0


def test_bad_parameters_and_inputs_are_named(probe, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"nwb\.format"):
        Nwb({"format": "xml"})
    with pytest.raises(ConfigError, match=r"nwb\.timezone.*Mars/Olympus"):
        Nwb({"timezone": "Mars/Olympus"})
    with pytest.raises(ConfigError, match=r"nwb\.compression"):
        Nwb({"compression": "gzip"})

    monkeypatch.setitem(sys.modules, "hdmf_zarr", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install neuropool\[nwb-zarr\]"):
        write_nwb(probe, tmp_path / "zarr", {"format": "zarr"})
    monkeypatch.undo()

    qc = tmp_path / "qc"
    shutil.copytree(probe["root"] / "qc", qc)
    metrics = pd.read_parquet(qc / "metrics.pqt")
    metrics.iloc[1:].to_parquet(qc / "metrics.pqt")
    with pytest.raises(StoreError, match=r"qc/metrics\.pqt: its units are not the sorting's"):
        write_nwb(probe, tmp_path / "a", inputs={"units.metrics": str(qc)})
    for folder in qc.glob("analyzer*"):
        shutil.rmtree(folder)
    with pytest.raises(StoreError, match=r"qc: no SortingAnalyzer in the qc folder"):
        write_nwb(probe, tmp_path / "b", inputs={"units.metrics": str(qc)})
    (probe["session"].parent / "broken").mkdir()
    (probe["session"].parent / "broken" / "session.json").write_text('{"session_start_time": "soon"}')
    info = {"session": {"name": SESSION, "url": str(probe["session"].parent / "broken")}}
    with pytest.raises(MetadataError, match=r"broken/session\.json: session_start_time: 'soon' is not an ISO 8601"):
        run_task("nwb", {}, probe["inputs"], tmp_path / "c", info)


def test_a_qc_folder_without_an_analyzer_is_refused_naming_it(probe, tmp_path):
    (tmp_path / "qc").mkdir()
    with pytest.raises(StoreError, match=r"old-qc: no SortingAnalyzer in the qc folder \(expected analyzer.zarr"):
        load_analyzer(tmp_path / "qc", "old-qc")


def test_session_start_time_sources():
    meta_time = {"metadata": {"fileCreateTime": "2024-03-05T14:30:00"}}
    when, source = session_start_time({"session_start_time": "2024-03-05T09:00:00+01:00"}, meta_time, SESSION, "UTC")
    assert when == datetime(2024, 3, 5, 8, tzinfo=UTC) and source == "session.json session_start_time"
    when, source = session_start_time({}, meta_time, SESSION, "Europe/London")
    assert when.utcoffset() == timedelta(0) and when.hour == 14 and "fileCreateTime" in source
    when, _ = session_start_time({}, meta_time, SESSION, "America/New_York")
    assert when.utcoffset() == timedelta(hours=-5)
    when, source = session_start_time({"date": "2024-03-06"}, {}, SESSION, "UTC")
    assert when == datetime(2024, 3, 6, tzinfo=UTC) and "date" in source
    when, source = session_start_time({}, {"metadata": {"fileCreateTime": "garbled"}}, SESSION, "UTC")
    assert when == datetime(2024, 3, 5, tzinfo=UTC) and "session name" in source
    when, source = session_start_time({}, {}, "no-date-here", "UTC")
    assert when == datetime(1970, 1, 1, tzinfo=UTC) and "placeholder" in source


def test_unit_channels_are_the_nearest_sparse_channels():
    class Sparsity:
        mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]], bool)

    class Analyzer:
        unit_ids, channel_ids, sparsity = [0, 1], list(range(6)), Sparsity()

        @staticmethod
        def get_channel_locations():
            return np.column_stack([np.zeros(6), 20.0 * np.arange(6)])

    chosen, k = unit_channels(Analyzer(), np.array([0, 4]), np.arange(6))
    assert k == 3
    assert [list(c) for c in chosen] == [[0, 1, 2], [2, 3, 4]]


def test_the_standard_graph_writes_nwb_after_export():
    from neuropool.graphs import load_config, standard_graph
    from neuropool.io.session import Session

    session = Session("/data/s1", "s1", {"probe00": "/data/s1/probe00.ap.cbin"}, {})
    graph = standard_graph(session, load_config({"nwb": {"format": "zarr", "waveforms": False}}))
    order = list(graph.nodes)
    assert order.index("nwb[probe00]") == order.index("export[probe00]") + 1
    node = graph.nodes["nwb[probe00]"]
    assert node.inputs == {"units.metrics": "probe00/units.metrics", "units.locations": "probe00/units.locations",
                           "ephys.raw": "probe00/ephys.raw"}  # the raw store's metadata: the start time
    assert node.params == {"format": "zarr", "waveforms": False}
    assert graph.subset(until="nwb").task_names() == "decompress, preprocess, sort, qc, localize, nwb"
