"""The catalog of derived assets (neuropool.catalog): search, list, load, open, the incremental
index, errors, the ``ls`` command, and the same on a loopback S3 endpoint.

The assets are written here as the pipeline leaves them, through the same code: the asset and its
description by ``DerivedAsset.create``, zarr stores by ``neuropool.io.timeseries``, ALF files as
the export names them in the asset's ONE session tree (with the ONE cache tables), commit markers
by ``DerivedAsset.commit`` and ``processing.json`` by ``DerivedAsset.write_processing``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import neuropool
from neuropool.catalogs import Catalog, catalog, register_ls
from neuropool.errors import ConfigError, SourceNotFoundError
from neuropool.io import catalog_index, timeseries
from neuropool.io.catalog_index import INDEX_NAME
from neuropool.io.one import write_one_tables
from neuropool.io.store import DerivedAsset

#: Every node of the standard graph of one probe (what "tasks committed/total" counts).
STANDARD = ("decompress", "lfp", "preprocess", "raw_qc", "sort", "qc", "localize", "export", "nwb")
N_CHANNELS = 8
N_SAMPLES = 300

A = "mouse1_2024-01-01_001_processed_2024-01-02_10-00-00"
B = "mouse1_2024-01-05_001_processed_2024-01-06_10-00-00"
C = "mouse2_2024-02-01_002_sorted_2024-02-02_10-00-00"
D = "mouse3/2024-03-01/001_processed_2024-03-02_10-00-00"
#: The bucket the module's S3 endpoint serves.
S3_BUCKET = "catalog-test"


# -- writing assets as the pipeline does --------------------------------------------------------


def _store(url: str, data: np.ndarray) -> str:
    timeseries.create(
        url, n_samples=len(data), channel_ids=[f"AP{i}" for i in range(data.shape[1])], dtype=data.dtype,
        chunk_samples=100, coords={"x": np.zeros(data.shape[1]), "y": 20.0 * np.arange(data.shape[1]),
                                   "shank": np.zeros(data.shape[1], int), "gain_uv": np.ones(data.shape[1]),
                                   "adc_shift": np.zeros(data.shape[1]),
                                   "is_sync": np.zeros(data.shape[1], bool)},
        attrs={"sampling_frequency": 30000.0, "units": "uV"}, compression="none")
    timeseries.write_block(url, 0, data)
    timeseries.finalize(url)
    return url


def _alf(folder: Path, rng: np.random.Generator) -> list[str]:
    """The export's files (a subset of its datasets, with the same names and kinds)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_spikes, n_clusters = 50, 4
    samples = np.sort(rng.integers(0, 30000, n_spikes)).astype(np.int64)
    clusters = rng.integers(0, n_clusters, n_spikes).astype(np.int64)
    arrays = {
        "spikes.times.npy": samples / 30000.0, "spikes.samples.npy": samples,
        "spikes.clusters.npy": clusters, "spikes.templates.npy": clusters,
        "spikes.amps.npy": rng.uniform(50e-6, 200e-6, n_spikes), "spikes.depths.npy": rng.uniform(0, 3800, n_spikes),
        "clusters.channels.npy": np.arange(n_clusters, dtype=np.int64),
        "clusters.depths.npy": rng.uniform(0, 3800, n_clusters),
        "channels.localCoordinates.npy": np.c_[np.zeros(N_CHANNELS), 20.0 * np.arange(N_CHANNELS) + 20],
    }
    for name, arr in arrays.items():
        np.save(folder / name, arr)
    metrics = pd.DataFrame({"cluster_id": np.arange(n_clusters), "firing_rate": rng.uniform(1, 10, n_clusters),
                            "passes_qc": [True, False, True, True]})
    metrics.to_parquet(folder / "clusters.metrics.pqt")
    pd.DataFrame({"uuids": [f"u{i}" for i in range(n_clusters)]}).to_csv(folder / "clusters.uuids.csv", index=False)
    return sorted(p.name for p in folder.iterdir())


def commit(asset: DerivedAsset, task: str, probe: str, rng: np.random.Generator) -> None:
    """Write the outputs of ``task[probe]`` and commit them, as the runner does."""
    summary: dict = {}
    if task == "decompress":
        outputs = {"ephys.raw": _store(asset.dataset_url("ephys.raw", probe),
                                       rng.integers(-100, 100, (N_SAMPLES, N_CHANNELS)).astype(np.int16))}
    elif task == "preprocess":
        outputs = {"ephys.preprocessed": _store(asset.dataset_url("ephys.preprocessed", probe),
                                                rng.normal(0, 10, (N_SAMPLES, N_CHANNELS)).astype(np.float32)),
                   "ephysChannels.labels": asset.dataset_url("ephysChannels.labels", probe)}
        np.save(outputs["ephysChannels.labels"], np.zeros(N_CHANNELS, dtype=np.int64))
    elif task == "raw_qc":
        outputs = {"ephysTimeRmsAP.rms": asset.dataset_url("ephysTimeRmsAP.rms", probe)}
        np.save(outputs["ephysTimeRmsAP.rms"], rng.uniform(5, 20, (1, N_CHANNELS)))
    elif task == "sort":
        outputs = {"ephys.sorting": asset.dataset_url("ephys.sorting", probe)}
        Path(outputs["ephys.sorting"]).mkdir(parents=True)
        (Path(outputs["ephys.sorting"]) / "spikes.npy").write_bytes(b"")
    elif task == "export":
        outputs = {"alf": asset.dataset_url("alf", probe)}
        summary = {"datasets": _alf(Path(outputs["alf"]), rng), "collection": f"alf/{probe}"}
    else:
        raise AssertionError(task)
    asset.commit(f"{task}[{probe}]", {"task": task, "version": "1", "outputs": outputs, "summary": summary,
                                      "start_date_time": datetime.now().isoformat(timespec="seconds")})


def write_processing(asset: DerivedAsset, probes: tuple[str, ...]) -> None:
    graph = {"nodes": [{"id": f"{t}[{p}]", "task": t, "probe": p} for p in probes for t in STANDARD],
             "edges": [], "sources": {},
             "session": {"name": asset.name, "probes": {p: {"raw": f"{p}/x.ap.cbin"} for p in probes}}}
    asset.write_processing(graph)


def make_asset(root: Path, asset_id: str, done: dict[str, tuple[str, ...]], seed: int = 0) -> DerivedAsset:
    """An asset at ``root/asset_id`` with ``done[probe]``'s tasks committed (and the ONE tables
    where something was exported)."""
    folder = root / asset_id
    parts = catalog_index.spec.parse_asset_name(folder.name)
    when = datetime.strptime(f"{parts['date']} {parts['time']}", "%Y-%m-%d %H-%M-%S")
    asset = DerivedAsset.create(str(folder.parent), f"/lab/raw/{parts['source']}", label=parts["label"], when=when)
    assert asset.url == str(folder)
    rng = np.random.default_rng(seed)
    for probe, tasks in done.items():
        for task in tasks:
            commit(asset, task, probe, rng)
    write_processing(asset, tuple(done))
    if any("export" in t for t in done.values()):
        write_one_tables(asset.url)
    return asset


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A root of four assets (do not modify: copy it with ``root``)."""
    root = tmp_path_factory.mktemp("derived")
    make_asset(root, A, {"probe00": ("decompress", "preprocess", "export")}, seed=1)
    make_asset(root, B, {"probe00": ("decompress", "preprocess", "export"),
                         "probe01": ("decompress", "preprocess")}, seed=2)
    make_asset(root, C, {"probe00": ("decompress",)}, seed=3)
    make_asset(root, D, {"probe00": ("decompress", "sort")}, seed=4)
    (root / "mouse1_2024-01-01_001" / "raw_ephys_data" / "probe00").mkdir(parents=True)  # a raw session
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy of the four assets, without an index yet."""
    dest = tmp_path / "derived"
    shutil.copytree(pristine, dest, ignore=shutil.ignore_patterns(INDEX_NAME))
    return dest


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every sidecar URL the catalog reads from now on."""
    seen: list[str] = []
    original = catalog_index.read_json

    def counting(url, storage_options=None):
        seen.append(url)
        return original(url, storage_options)

    monkeypatch.setattr(catalog_index, "read_json", counting)
    return seen


# -- finding ------------------------------------------------------------------------------------


def test_search_by_subject_dates_datasets_label_and_probe(root):
    cat = catalog(str(root))
    assert sorted(cat.assets) == sorted([A, B, C, D])
    assert cat.search() == [A, B, C, D]  # by subject, then date
    assert cat.search(subject="mouse1") == [A, B]
    assert cat.search(subject="mouse3") == [D]  # from the <subject>/<date>/ folders above "001"
    assert cat.assets[D].date == "2024-03-01" and cat.assets[A].date == "2024-01-01"
    assert cat.search(date_range=("2024-01-01", "2024-01-05")) == [A, B]  # inclusive at both ends
    assert cat.search(date_range=("2024-01-02", None)) == [B, C, D]
    assert cat.search(date_range="2024-02-01") == [C]
    assert cat.search(date_range=(datetime(2024, 1, 2).date(), "2024-02-01")) == [B, C]
    assert cat.search(datasets=["spikes.times", "preprocessed"]) == [A, B]
    assert cat.search(datasets="spikes.times.npy") == [A, B]
    assert cat.search(datasets=["ephys.preprocessed", "clusters.metrics"]) == [A, B]
    assert cat.search(datasets=["raw"]) == [A, B, C, D]
    assert cat.search(datasets=["ephys.sorting"]) == [D]
    assert cat.search(datasets=["spikes.times"], probe="probe01") == []  # probe01 of B is not exported
    assert cat.search(datasets=["preprocessed"], probe="probe01") == [B]
    assert cat.search(probe="probe01") == [B]
    assert cat.search(label="sorted") == [C]
    assert cat.search(label="processed", subject="mouse2") == []
    with pytest.raises(ConfigError, match="2024-13-01"):
        cat.search(date_range=("2024-13-01", None))
    with pytest.raises(ConfigError, match="starts after it ends"):
        cat.search(date_range=("2024-02-01", "2024-01-01"))
    table = cat.to_frame().set_index("id")
    assert table.loc[B, "probes"] == ["probe00", "probe01"]
    assert (table.loc[B, "committed"], table.loc[B, "tasks"]) == (5, 2 * len(STANDARD))
    assert table.loc[C, "label"] == "sorted" and table.loc[C, "subject"] == "mouse2"


def test_list_gives_alf_names_per_probe_and_the_stores(root):
    cat = catalog(str(root))
    names = cat.list(A)
    assert "probe00/spikes.times" in names and "probe00/clusters.metrics" in names
    assert "probe00/clusters.uuids" in names and "probe00/_iblqc_ephysChannels.labels" in names
    assert {"probe00/raw", "probe00/preprocessed"} <= set(names)
    assert not any(n.endswith((".npy", ".pqt", ".zarr")) for n in names)
    assert set(cat.list(B, probe="probe01")) == {"raw", "preprocessed", "_iblqc_ephysChannels.labels"}
    assert "spikes.times" in cat.list(B, probe="probe00")
    assert cat.list(C) == ["probe00/raw"]
    # the folder name alone, or the full URL, names an asset too
    assert cat.list("001_processed_2024-03-02_10-00-00") == cat.list(str(root / D)) == ["probe00/ephys.sorting", "probe00/raw"]
    assert cat.url(D, "ephys.sorting") == f"{root}/{D}/probe00/sorting"


# -- loading ------------------------------------------------------------------------------------


def test_load_and_load_object_give_what_one_gives(root):
    from one.alf.io import load_object as one_load_object
    from one.api import One

    cat = catalog(str(root))
    alf = root / A / "mouse1" / "2024-01-01" / "001" / "alf" / "probe00"
    times = cat.load(A, "spikes.times")  # one probe: no need to say which
    np.testing.assert_array_equal(times, np.load(alf / "spikes.times.npy"))
    np.testing.assert_array_equal(cat.load(A, "spikes.times.npy", probe="probe00"), times)
    np.testing.assert_array_equal(cat.load(A, "probe00/spikes.times"), times)
    pd.testing.assert_frame_equal(cat.load(A, "clusters.metrics"), pd.read_parquet(alf / "clusters.metrics.pqt"))
    assert list(cat.load(A, "clusters.uuids")["uuids"]) == ["u0", "u1", "u2", "u3"]
    assert cat.load(A, "ephysChannels.labels").shape == (N_CHANNELS,)  # by the pipeline's name too

    spikes = cat.load_object(A, "spikes")
    theirs = one_load_object(alf, "spikes")
    assert set(spikes) == set(theirs) == {"times", "samples", "clusters", "templates", "amps", "depths"}
    for key in theirs:
        np.testing.assert_array_equal(spikes[key], theirs[key])
    np.testing.assert_array_equal(spikes.times, times)  # an AlfBunch: attribute access
    one = One(cache_dir=str(root / A), mode="local")  # the asset is also a valid ONE cache
    eid = one.search()[0]
    np.testing.assert_array_equal(one.load_object(eid, "spikes", collection="alf/probe00")["amps"], spikes.amps)
    qc = cat.load_object(A, "_iblqc_ephysChannels")
    assert set(qc) == {"labels"} and set(cat.load_object(A, "ephysChannels")) == {"labels"}

    np.testing.assert_array_equal(cat.load(B, "spikes.times", probe="probe00"),
                                  np.load(next((root / B).rglob("alf/probe00/spikes.times.npy"))))
    with pytest.raises(ConfigError, match=r"2 probes \(probe00, probe01\).*probe="):
        cat.load(B, "spikes.times")
    with pytest.raises(ConfigError, match="2 probes"):
        cat.load_object(B, "spikes")


def test_open_gives_the_zarr_store_as_xarray(root):
    import xarray as xr

    cat = catalog(str(root))
    ds = cat.open(A, "preprocessed")
    assert isinstance(ds, xr.Dataset) and ds["traces"].dims == ("time", "channel")
    expected = timeseries.TimeseriesStore(str(root / A / "probe00" / "preprocessed.zarr"))
    np.testing.assert_array_equal(ds["traces"].values, expected.read(0, N_SAMPLES))
    assert cat.open(B, "ephys.raw", probe="probe01")["traces"].dtype == np.int16
    with pytest.raises(ConfigError, match=r"not a zarr store.*stores in probe00: preprocessed, raw"):
        cat.open(A, "spikes.times")
    with pytest.raises(ConfigError, match=r"zarr store: open it with catalog.open"):
        cat.load(A, "preprocessed")


# -- errors -------------------------------------------------------------------------------------


def test_errors_name_the_thing_and_the_fix(root, tmp_path):
    cat = catalog(str(root))
    with pytest.raises(SourceNotFoundError, match=rf"no derived asset .*did you mean '{A}'"):
        cat.list(A.replace("mouse1", "mouse7"))
    with pytest.raises(SourceNotFoundError) as e:
        cat.load(A, "spikes.time")
    assert "did you mean 'spikes.times'" in str(e.value) and "clusters.metrics" in str(e.value)
    with pytest.raises(SourceNotFoundError, match=r"no committed dataset 'spikes.times' in probe01 \(it is in probe00\)"):
        cat.load(B, "spikes.times", probe="probe01")
    with pytest.raises(SourceNotFoundError, match=r"no probe 'probe02'; its probes: probe00, probe01"):
        cat.list(B, probe="probe02")
    with pytest.raises(SourceNotFoundError, match=r"no ALF object 'clusterz'.*did you mean 'clusters'"):
        cat.load_object(A, "clusterz")
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceNotFoundError, match=rf"{missing}: no such folder"):
        catalog(str(missing))
    assert isinstance(SourceNotFoundError("x"), FileNotFoundError)  # what callers may catch
    # a committed file that was removed after indexing: named, with what to do
    (root / A / "mouse1" / "2024-01-01" / "001" / "alf" / "probe00" / "spikes.amps.npy").unlink()
    with pytest.raises(SourceNotFoundError, match=r"spikes.amps.npy: committed but missing"):
        cat.load(A, "spikes.amps")


def test_a_missing_or_corrupt_sidecar_skips_that_asset_only(root):
    (root / A / "processing.json").write_text('{"schema_version": "1", "processing_pi')
    (root / B / "data_description.json").unlink()
    with pytest.warns(UserWarning) as caught:
        cat = catalog(str(root))
    messages = [str(w.message) for w in caught]
    assert any(f"{root / A / 'processing.json'}: unreadable" in m and "not valid JSON" in m for m in messages)
    assert any(f"{root / B / 'data_description.json'}: missing" in m for m in messages)
    assert sorted(cat.assets) == [C, D] and set(cat.last_refresh.skipped) == {A, B}
    # a marker that processing.json does not list is read, and a corrupt one names itself
    marker = root / C / "_commits" / "sort__probe00.json"
    marker.write_text("not json")
    with pytest.warns(UserWarning) as caught:
        cat = catalog(str(root))
    assert any(f"{marker}: unreadable" in str(w.message) for w in caught)
    assert sorted(cat.assets) == [D] and caught[0].filename == __file__  # points at the caller
    # repaired: indexed again
    marker.unlink()
    write_processing(DerivedAsset(str(root / A)), ("probe00",))
    with pytest.warns(UserWarning, match="data_description.json: missing") as caught:
        cat = catalog(str(root))  # B still lacks its description
    assert len(caught) == 1
    assert sorted(cat.assets) == [A, C, D] and sorted(cat.last_refresh.read) == [A, C]


# -- the incremental index ----------------------------------------------------------------------


def test_refresh_rereads_only_changed_assets(root, reads):
    first = catalog(str(root))
    assert (root / INDEX_NAME).is_file() and first.last_refresh.written
    assert len(reads) >= 8  # description + processing of four assets
    index = pd.read_parquet(root / INDEX_NAME)
    assert sorted(index["id"]) == sorted([A, B, C, D])

    reads.clear()
    again = catalog(str(root))
    assert reads == [] and sorted(again.last_refresh.kept) == sorted([A, B, C, D])
    assert not again.last_refresh.written  # nothing changed: the index is not rewritten
    assert again.search(datasets=["spikes.times"]) == [A, B]
    np.testing.assert_array_equal(again.load(A, "spikes.times"), first.load(A, "spikes.times"))

    # B: a node committed, processing.json not yet rewritten (a run killed in between); C: gone;
    # E: new
    commit(DerivedAsset(str(root / B)), "raw_qc", "probe01", np.random.default_rng(9))
    shutil.rmtree(root / C)
    e = "mouse4_2024-04-01_001_processed_2024-04-02_10-00-00"
    make_asset(root, e, {"probe00": ("decompress",)})
    reads.clear()
    cat = catalog(str(root))
    touched = {Path(u).relative_to(root).parts[0] for u in reads}
    assert touched == {B, e}, reads
    assert f"{root / B}/_commits/raw_qc__probe01.json" in reads  # the markers are the truth
    assert sorted(cat.last_refresh.read) == sorted([B, e])
    assert cat.last_refresh.dropped == [C] and C not in cat.assets
    assert "_iblqc_ephysTimeRmsAP.rms" in cat.list(B, probe="probe01")
    assert cat.search(subject="mouse4") == [e]
    assert sorted(pd.read_parquet(root / INDEX_NAME)["id"]) == sorted([A, B, D, e])

    # a rewritten sidecar (processing.json now lists the new commit): B is read again, alone
    write_processing(DerivedAsset(str(root / B)), ("probe00", "probe01"))
    reads.clear()
    cat = catalog(str(root))
    assert {Path(u).relative_to(root).parts[0] for u in reads} == {B}
    assert cat.assets[B].committed == sorted([*cat.assets[B].committed])
    assert len(cat.assets[B].committed) == 6


def test_a_corrupt_index_is_rebuilt(root):
    (root / INDEX_NAME).write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(UserWarning, match=r"not a catalog index.*rebuilding"):
        cat = catalog(str(root))
    assert len(cat) == 4 and len(pd.read_parquet(root / INDEX_NAME)) == 4


def test_an_unwritable_root_keeps_the_index_in_memory(root, reads, monkeypatch):
    def refuse(fs, path, data):
        raise PermissionError(f"[Errno 13] Permission denied: '{path}'")

    monkeypatch.setattr(catalog_index.urls, "write_whole", refuse)  # as root, chmod would not stop it
    monkeypatch.setattr(catalog_index, "_MEMORY", {})
    with pytest.warns(UserWarning, match=rf"{INDEX_NAME}: cannot write the catalog index.*keeping it in memory"):
        cat = catalog(str(root))
    assert not (root / INDEX_NAME).exists() and cat.search(subject="mouse1") == [A, B]
    reads.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing changed, nothing to write, nothing to warn
        again = catalog(str(root))
    assert reads == [] and len(again) == 4


# -- the package function and the command line ------------------------------------------------


def test_neuropool_catalog_is_the_package_function(root):
    """``neuropool.catalog(ROOT)`` (the package's lazy function) stays callable after the module
    that implements it, :mod:`neuropool.catalogs`, is imported."""
    import subprocess
    import sys

    code = (f"import neuropool; root = {str(root)!r}\n"
            "a = neuropool.catalog(root)\n"
            "import neuropool.catalogs as m\n"
            "print(len(a), len(neuropool.catalog(root)), len(m.catalog(root)), type(a).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["4", "4", "4", "Catalog"], out.stderr
    assert isinstance(neuropool.catalog(str(root)), Catalog)
    assert "catalog" in neuropool.__all__


def _ls(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="neuropool")
    register_ls(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ls", *argv])
    return args.func(args)


def test_ls_prints_assets_datasets_and_what_to_do_when_nothing_matches(root, capsys):
    assert _ls(str(root)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "subject", "date", "probes", "tasks", "label"]
    row = next(line for line in lines if line.startswith(B))
    assert row.split()[1:] == ["mouse1", "2024-01-05", "probe00,probe01", "5/18", "processed"]
    assert "4 of 4 asset(s)" in out

    assert _ls(str(root), "--subject", "mouse1", "--from", "2024-01-02", "--dataset", "spikes.times") == 0
    out = capsys.readouterr().out
    assert B in out and A not in out and "1 of 4" in out

    assert _ls(str(root), "--label", "sorted", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [C] and rows[0]["committed"] == 1 and rows[0]["url"] == f"{root}/{C}"

    assert _ls(str(root), "--subject", "mouse9") == 0
    out = capsys.readouterr().out
    assert "No asset matches subject mouse9" in out and "mouse1, mouse2, mouse3" in out

    assert _ls(str(root), B, "--probe", "probe01") == 0
    out = capsys.readouterr().out
    assert "preprocessed" in out and "probe01/preprocessed.zarr" in out and "spikes.times" not in out
    assert _ls(str(root), A, "--json") == 0
    listed = {r["dataset"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["spikes.times"]["kind"] == "alf" and listed["preprocessed"]["kind"] == "store"
    with pytest.raises(SourceNotFoundError, match="did you mean"):
        _ls(str(root), A[:-1])

    empty = root.parent / "empty"
    empty.mkdir()
    assert _ls(str(empty)) == 0
    assert "No derived assets under" in capsys.readouterr().out


# -- S3 -----------------------------------------------------------------------------------------


def test_the_catalog_on_s3(s3, root, reads):
    fs, options = s3
    fs.put(str(root) + "/", f"{S3_BUCKET}/derived/", recursive=True)
    url = f"s3://{S3_BUCKET}/derived"
    cat = catalog(url, storage_options=options)
    assert sorted(cat.assets) == sorted([A, B, C, D]) and fs.exists(f"{S3_BUCKET}/derived/{INDEX_NAME}")
    assert cat.search(subject="mouse1", datasets=["spikes.times"]) == [A, B]
    here = catalog(str(root))
    np.testing.assert_array_equal(cat.load(A, "spikes.times"), here.load(A, "spikes.times"))
    pd.testing.assert_frame_equal(cat.load(A, "clusters.metrics"), here.load(A, "clusters.metrics"))
    np.testing.assert_array_equal(cat.load_object(B, "spikes", probe="probe00").clusters,
                                  here.load_object(B, "spikes", probe="probe00").clusters)
    np.testing.assert_array_equal(cat.open(A, "preprocessed")["traces"].values,
                                  here.open(A, "preprocessed")["traces"].values)
    assert cat.url(A, "spikes.times").startswith(f"{url}/{A}/mouse1/2024-01-01/001/alf/probe00/")

    reads.clear()
    again = catalog(url, storage_options=options)
    assert reads == [] and sorted(again.last_refresh.kept) == sorted([A, B, C, D])  # by ETag
    fs.rm(f"{S3_BUCKET}/derived/{C}", recursive=True)
    fs.pipe(f"{S3_BUCKET}/derived/{A}/processing.json", (root / A / "processing.json").read_bytes() + b"\n")
    reads.clear()
    cat = catalog(url, storage_options=options)
    assert C not in cat.assets and cat.last_refresh.read == [A]
    assert {u.split(f"{url}/", 1)[1].split("/")[0] for u in reads} == {A}
    with pytest.raises(SourceNotFoundError, match=f"s3://{S3_BUCKET}-missing/derived: no such folder"):
        catalog(f"s3://{S3_BUCKET}-missing/derived", storage_options=options)
