"""sort -> qc -> localize -> export on a generated recording with known units, in this process.

One module-scoped run (20 s, 32 channels, 8 true units, the default sorter) feeds every test here;
the sorter's failure paths run on a short noise recording.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuropool.errors import MissingDependencyError, SortingError
from neuropool.io import spec
from neuropool.tasks.qc import AIND_THRESHOLDS, IBL_COLUMNS, METRICS, load_analyzer
from tests.tasks.units_data import ground_truth, run_task, write_store

ASSET = "mouse_2024-01-01_001_processed_2026-01-02_03-04-05"
TRAJECTORY = {"x": -2000.0, "y": -1500.0, "z": 0.0, "depth": 3500.0, "theta": 15.0, "phi": 180.0}


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    """The probe folder of an asset after sort, qc, localize and export, and the true units."""
    root = tmp_path_factory.mktemp("units")
    asset = root / ASSET
    probe = asset / "probe00"
    recording, truth = ground_truth(duration=20.0, units=8, seed=0)
    pre = write_store(str(probe / "preprocessed.zarr"), recording)
    sort = run_task("sort", {"n_jobs": 2}, {"ephys.preprocessed": pre}, probe)
    qc = run_task("qc", {"n_jobs": 2}, {"ephys.preprocessed": pre, "ephys.sorting": str(probe / "sorting")}, probe)
    run_task("localize", {"trajectory": TRAJECTORY},
             {"ephys.preprocessed": pre, "units.metrics": str(probe / "qc")}, probe)
    alf, export = run_export(asset, probe / "qc", probe / "localize")
    return {"asset": asset, "probe": probe, "alf": alf, "truth": truth, "recording": recording,
            "summaries": {"sort": sort, "qc": qc, "export": export}}


def run_export(asset: Path, qc: Path, localize: Path) -> tuple[Path, dict]:
    """Run export (blocks and the client's finish) into ``asset``'s ONE session tree."""
    from neuropool.tasks import get_task
    from neuropool.tasks.base import TaskContext

    alf = asset / spec.one_session_path(asset.name) / "alf" / "probe00"
    task = get_task("export")({})
    ctx = TaskContext(node="export[probe00]", probe="probe00",
                      inputs={"units.metrics": str(qc), "units.locations": str(localize)},
                      outputs={"alf": str(alf)})
    return alf, task.finish(ctx, [task.run_block(ctx, None)])


# -- sort ---------------------------------------------------------------------------------------


def test_sort_finds_the_true_units_and_keeps_the_sorters_log(units):
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.core import load

    folder = units["probe"] / "sorting"
    sorting = load(str(folder / "sorting"))
    cmp = compare_sorter_to_ground_truth(units["truth"], sorting, exhaustive_gt=True)
    assert len(cmp.get_well_detected_units(well_detected_score=0.8)) >= 5  # of 8
    record = json.loads((folder / "sorter.json").read_text())
    assert record["sorter"] == "tridesclous2" and record["n_units"] == len(sorting.unit_ids)
    assert record["wall_s"] > 0 and record["peak_rss_gb"] > 0.05 and "error" not in record
    log = (folder / "sorter.log").read_text()
    assert "tridesclous2 found" in log and "tridesclous2" in (folder / "sorter_log.json").read_text()
    assert units["summaries"]["sort"]["n_units"] == len(sorting.unit_ids)


@pytest.fixture(scope="module")
def noise_store(tmp_path_factory):
    """3 s of noise on the same 32-site probe, as a preprocessed store."""
    from spikeinterface.generation import NoiseGeneratorRecording

    recording, _ = ground_truth(duration=3.0, units=1)
    noise = NoiseGeneratorRecording(num_channels=32, sampling_frequency=30000.0, durations=[3.0],
                                    noise_levels=10.0, dtype="float32", seed=1)
    noise.set_probe(recording.get_probe(), in_place=True)
    return write_store(str(tmp_path_factory.mktemp("noise") / "preprocessed.zarr"), noise)


def _failed_sort(params: dict, store: str, out: Path, during=None) -> SortingError:
    """Run sort expecting it to fail; ``during(out)`` runs beside it while it works."""
    helper = threading.Thread(target=during, args=(out,), daemon=True) if during else None
    if helper:
        helper.start()
    with pytest.raises(SortingError) as info:
        run_task("sort", {"n_jobs": 1, **params}, {"ephys.preprocessed": store}, out)
    if helper:
        helper.join(30)
    return info.value


def test_a_sorter_that_raises_fails_with_its_log_quoted_and_saved(noise_store, tmp_path):
    error = _failed_sort({"sorter": "spykingcircus2", "sorter_params": {"general": {"radius_um": "wide"}}},
                         noise_store, tmp_path)
    text = str(error)
    assert "spykingcircus2 failed on" in text and noise_store in text
    assert "exited with status 1" in text
    assert "TypeError: unsupported operand" in text  # the sorter's own error, quoted
    log = tmp_path / "sorting" / "sorter.log"
    assert str(log) in text and "TypeError: unsupported operand" in log.read_text()
    assert "error_trace" in (tmp_path / "sorting" / "sorter_log.json").read_text()  # SpikeInterface's log
    assert json.loads((tmp_path / "sorting" / "sorter.json").read_text())["error"].startswith("the sorter process")


def test_a_sorter_over_its_memory_limit_is_stopped_and_fails_its_node(noise_store, tmp_path):
    error = _failed_sort({"memory_limit_gb": 0.05}, noise_store, tmp_path)
    assert "out of memory" in str(error) and "over the limit of 0.05 GB" in str(error)
    assert (tmp_path / "sorting" / "sorter.log").exists()


def test_a_sorter_killed_from_outside_is_reported_as_killed(noise_store, tmp_path):
    """The system's out-of-memory killer sends SIGKILL: do the same to the sorter process."""
    import os
    import signal

    import psutil

    def kill_the_sorter(_: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for p in psutil.Process().children(recursive=True):
                if "neuropool.tasks.sorter_process" in " ".join(p.cmdline()):
                    time.sleep(1.0)  # let it start and write to its log
                    os.kill(p.pid, signal.SIGKILL)
                    return
            time.sleep(0.1)

    error = _failed_sort({}, noise_store, tmp_path, during=kill_the_sorter)
    assert "killed by signal SIGKILL" in str(error) and "out-of-memory killer" in str(error)
    assert not [p for p in psutil.Process().children(recursive=True)
                if "neuropool.tasks.sorter_process" in " ".join(p.cmdline())]


def test_a_sorter_that_is_not_installed_says_how_to_install_it(noise_store, tmp_path):
    from spikeinterface.sorters import installed_sorters

    if "mountainsort5" in installed_sorters():
        pytest.skip("mountainsort5 is installed here: this test needs a sorter that is not")
    with pytest.raises(MissingDependencyError, match="pip install mountainsort5"):
        run_task("sort", {"sorter": "mountainsort5"}, {"ephys.preprocessed": noise_store}, tmp_path)


def test_the_quoted_sorter_log_keeps_each_progress_bars_last_state(tmp_path):
    from neuropool.tasks.sort import _tail

    log = tmp_path / "sorter.log"
    log.write_bytes(b"start\nbar  1%\rbar 50%\rbar 100%\n\nTypeError: bad\n")
    assert _tail(log).splitlines() == ["    start", "    bar 100%", "    TypeError: bad"]
    assert _tail(tmp_path / "missing.log") == "    (no log was written)"


# -- qc -----------------------------------------------------------------------------------------


def test_qc_saves_a_zarr_analyzer_with_every_extension(units):
    qc = units["probe"] / "qc"
    assert (qc / "analyzer.zarr" / ".zattrs").exists() or (qc / "analyzer.zarr" / "zarr.json").exists()
    analyzer = load_analyzer(qc)
    for ext in ("random_spikes", "waveforms", "templates", "noise_levels", "spike_amplitudes",
                "spike_locations", "unit_locations", "template_metrics", "correlograms",
                "quality_metrics"):
        assert analyzer.has_extension(ext), ext
    ccg, bins = analyzer.get_extension("correlograms").get_data()
    assert ccg.shape[:2] == (len(analyzer.unit_ids),) * 2 and len(bins) == ccg.shape[2] + 1
    tm = pd.read_parquet(qc / "template_metrics.pqt")
    assert len(tm) == len(analyzer.unit_ids) and (tm["peak_to_trough_duration"] > 0).all()


def test_qc_metrics_hold_spikeinterfaces_set_ibls_criteria_and_the_thresholds(units):
    from spikeinterface.metrics.quality import ComputeQualityMetrics

    metrics = pd.read_parquet(units["probe"] / "qc" / "metrics.pqt")
    expected = set()
    for m in ComputeQualityMetrics.metric_list:
        if m.metric_name in METRICS:
            expected |= set(m.metric_columns)
    assert expected | set(IBL_COLUMNS) | {"unit_id", "passes_qc"} == set(metrics.columns)
    # AIND's thresholds by default, NaN failing
    aind = ((metrics["isi_violations_ratio"] < 0.5) & (metrics["presence_ratio"] > 0.8)
            & (metrics["amplitude_cutoff"] < 0.1)).to_numpy()
    assert set(AIND_THRESHOLDS) == {"isi_violations_ratio", "presence_ratio", "amplitude_cutoff"}
    np.testing.assert_array_equal(metrics["passes_qc"].to_numpy(), aind)
    # the IBL label is the mean of its three criteria
    thirds = metrics[["ibl_rp_pass", "ibl_noise_cutoff_pass", "ibl_amp_pass"]].sum(axis=1) / 3
    np.testing.assert_allclose(metrics["ibl_label"], thirds)
    np.testing.assert_array_equal(metrics["ibl_amp_pass"], metrics["ibl_amp_median_uv"] > 50)
    summary = units["summaries"]["qc"]
    assert sum(summary["units_by_ibl_label"].values()) == summary["n_units"] == len(metrics)
    assert summary["units_by_ibl_label"]["1"] == int((metrics["ibl_label"] == 1).sum())
    assert summary["n_passing"] == int(aind.sum())


def test_ibl_amplitudes_are_template_peak_to_trough(units):
    """Median IBL amplitude of a unit is close to its template's peak-to-trough on the peak channel."""
    from spikeinterface.core import get_template_extremum_channel

    analyzer = load_analyzer(units["probe"] / "qc")
    metrics = pd.read_parquet(units["probe"] / "qc" / "metrics.pqt")
    templates = analyzer.get_extension("templates").get_data()
    peak = get_template_extremum_channel(analyzer, outputs="index")
    ptp = np.array([np.ptp(templates[i, :, peak[u]]) for i, u in enumerate(analyzer.unit_ids)])
    np.testing.assert_allclose(metrics["ibl_amp_median_uv"], ptp, rtol=0.35)


def test_qc_thresholds_are_configurable_and_checked():
    from pydantic import ValidationError

    from neuropool.tasks.qc import QCParams

    p = QCParams(thresholds={"snr": {"gt": 5}, "ibl_label": {"ge": 1}}, ibl={"min_amplitude_uv": 80})
    assert p.ibl.min_amplitude_uv == 80 and str(p.thresholds["ibl_label"]) == ">= 1"
    with pytest.raises(ValidationError, match="unknown metric"):
        QCParams(thresholds={"snrr": {"gt": 5}})
    with pytest.raises(ValidationError, match="rp_confidence_pct"):
        QCParams(ibl={"rp_confidence_pct": 120})


# -- ALF / ONE ----------------------------------------------------------------------------------


def test_one_api_loads_the_export_in_local_mode(units):
    from one.api import One

    one = One(cache_dir=units["asset"], mode="local")
    eids = one.search()
    assert [str(e) for e in eids] == ["mouse/2024-01-01/001"]
    assert one.list_collections(eids[0]) == ["alf/probe00"]
    spikes = one.load_object(eids[0], "spikes", collection="alf/probe00")
    clusters = one.load_object(eids[0], "clusters", collection="alf/probe00")
    channels = one.load_object(eids[0], "channels", collection="alf/probe00")
    analyzer = load_analyzer(units["probe"] / "qc")
    vector = analyzer.sorting.to_spike_vector()
    np.testing.assert_array_equal(spikes.samples, vector["sample_index"])
    np.testing.assert_allclose(spikes.times, vector["sample_index"] / analyzer.sampling_frequency)
    np.testing.assert_array_equal(spikes.clusters, vector["unit_index"])
    assert set(spikes) >= {"times", "clusters", "amps", "depths", "samples", "templates"}
    assert len(clusters.metrics) == len(analyzer.unit_ids) == len(clusters.mlapdv)
    assert list(clusters.uuids.astype(str)) == [str(u) for u in analyzer.unit_ids]
    assert 20e-6 < np.median(spikes.amps) < 2e-3  # volts
    np.testing.assert_allclose(clusters.amps, [np.median(spikes.amps[spikes.clusters == i])
                                               for i in range(len(clusters.amps))])
    assert channels.localCoordinates.shape == (32, 2) and channels.mlapdv.shape == (32, 3)
    assert np.isfinite(channels.mlapdv).all() and "brainLocationIds_ccf_2017" not in channels
    templates = one.load_object(eids[0], "templates", collection="alf/probe00")
    assert templates.waveforms.shape[0] == len(analyzer.unit_ids)
    assert templates.waveformsChannels.shape == (len(analyzer.unit_ids), templates.waveforms.shape[2])
    np.testing.assert_array_equal(templates.waveformsChannels[:, 0], clusters.channels)  # the peak first
    assert units["summaries"]["export"]["regions"] == "left out: localize had no atlas"


def test_with_an_atlas_the_export_holds_brain_regions(units, tmp_path):
    from one.api import One

    from tests.tasks.test_atlas import synthetic_ids, write_nrrd

    volume = write_nrrd(tmp_path / "annotation.nrrd", synthetic_ids())
    probe = units["probe"]
    run_task("localize", {"trajectory": TRAJECTORY, "atlas": {"url": str(volume)}},
             {"ephys.preprocessed": str(probe / "preprocessed.zarr"), "units.metrics": str(probe / "qc")},
             tmp_path)
    asset = tmp_path / ASSET
    _, summary = run_export(asset, probe / "qc", tmp_path / "localize")
    assert "regions" not in summary
    one = One(cache_dir=asset, mode="local")
    eid = one.search()[0]
    channels = one.load_object(eid, "channels", collection="alf/probe00")
    clusters = one.load_object(eid, "clusters", collection="alf/probe00")
    located = pd.read_parquet(tmp_path / "localize" / "channels.pqt")
    np.testing.assert_array_equal(channels.brainLocationIds_ccf_2017, located["atlas_id"])
    units_located = pd.read_parquet(tmp_path / "localize" / "units.pqt")
    np.testing.assert_array_equal(clusters.brainLocationIds_ccf_2017, units_located["atlas_id"])
    assert list(clusters.brainLocationAcronyms_ccf_2017) == list(units_located["acronym"])
    assert (channels.brainLocationIds_ccf_2017 > 0).all()  # the sites are in the brain


def test_one_tables_follow_a_reexport(units, tmp_path):
    """Rebuilding the tables after another probe's export lists both probes' collections."""
    from one.api import One

    from neuropool.io.one import write_one_tables

    asset = tmp_path / ASSET
    shutil.copytree(units["asset"] / "mouse", asset / "mouse")
    shutil.copytree(units["alf"], asset / spec.one_session_path(ASSET) / "alf" / "probe01")
    summary = write_one_tables(str(asset))
    assert summary["sessions"] == ["mouse/2024-01-01/001"]
    one = One(cache_dir=asset, mode="local")
    assert sorted(one.list_collections(one.search()[0])) == ["alf/probe00", "alf/probe01"]


@pytest.mark.parametrize(("source", "expected"), [
    ("mouse_2024-01-01_001", "mouse/2024-01-01/001"),
    ("KS023_2019-12-10_2", "KS023/2019-12-10/002"),
    ("ecephys_123456_2024-05-01_10-00-00", "ecephys_123456_2024-05-01_10-00-00/2026-01-02/001"),
])
def test_one_session_path_from_the_asset_name(source, expected):
    assert spec.one_session_path(f"{source}_processed_2026-01-02_03-04-05") == expected


@pytest.mark.slow
def test_a_probe_whose_sorter_fails_leaves_the_other_probe_sorted_and_exported(units, tmp_path):
    """Two probes through sort -> qc -> localize -> export -> nwb; probe01's sorter runs out of
    memory: its node fails with the log kept in the asset, its downstream is skipped, and probe00
    goes on to the end."""
    from neuropool.cluster import InProcessPool
    from neuropool.graphs.graph import Graph, dataset_key
    from neuropool.graphs.runner import run_graph
    from neuropool.io.store import DerivedAsset

    pre = str(units["probe"] / "preprocessed.zarr")
    graph = Graph({dataset_key("ephys.preprocessed", p): pre for p in ("probe00", "probe01")})
    for probe, sort in (("probe00", {"n_jobs": 2}), ("probe01", {"memory_limit_gb": 0.05})):
        graph.add("sort", probe, sort)
        graph.add("qc", probe, {"n_jobs": 2})
        graph.add("localize", probe, {"trajectory": TRAJECTORY})
        for task in ("export", "nwb"):
            graph.add(task, probe)
    session = tmp_path / "mouse_2024-01-01_001"
    session.mkdir()
    asset = DerivedAsset.create(str(tmp_path / "out"), str(session))
    report = run_graph(graph, asset, InProcessPool(gpus=0))
    states = {k: r.state for k, r in report.results.items()}
    assert {k: v for k, v in states.items() if k.endswith("[probe00]")} == dict.fromkeys(
        ("sort[probe00]", "qc[probe00]", "localize[probe00]", "export[probe00]", "nwb[probe00]"), "done")
    assert states["sort[probe01]"] == "failed"
    assert all(states[f"{t}[probe01]"] == "skipped" for t in ("qc", "localize", "export", "nwb"))
    error = report.results["sort[probe01]"].error
    assert "SortingError" in error and "out of memory" in error and "sorter.log" in error
    assert (Path(asset.url) / "probe01" / "sorting" / "sorter.log").exists()  # kept, not committed
    assert "sort[probe01]" not in asset.commits()
    listed = [p["node"] for p in asset.read_processing()["processing_pipeline"]["data_processes"]]
    assert sorted(listed) == sorted(k for k in states if k.endswith("[probe00]"))
