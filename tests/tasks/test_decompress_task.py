"""decompress and preprocess through the graph: sample-exact raw stores, coordinates, xarray,
the .bin and .cbin routes, block-size independence, and real Open Ephys data."""

from __future__ import annotations

from pathlib import Path

import mtscomp
import numpy as np
import pytest

from neuropool.io import timeseries
from neuropool.io.readers import open_raw

from .conftest import run_standard

RAW = "probe00/raw.zarr"
PRE = "probe00/preprocessed.zarr"
OPENEPHYS = "openephys-cortex-16ch"
OE_DAT = "Record Node 101/experiment1/recording1/continuous/File_Reader-100.example_data/continuous.dat"

SMALL_BLOCKS = {"decompress": {"chunk_seconds": 0.25, "chunks_per_block": 1},
                "preprocess": {"chunk_seconds": 0.25, "chunks_per_block": 1}}
BIG_BLOCKS = {"decompress": {"chunk_seconds": 0.5, "chunks_per_block": 3},
              "preprocess": {"chunk_seconds": 0.5, "chunks_per_block": 3}}


@pytest.fixture(scope="module")
def cbin_small(cbin_session, tmp_path_factory):
    """The .cbin session to ``preprocess`` in 0.25 s chunks, one chunk per block."""
    report = run_standard(cbin_session, tmp_path_factory.mktemp("out-small"), config=SMALL_BLOCKS)
    assert report.ok, {k: r.error for k, r in report.results.items()}
    return report


@pytest.fixture(scope="module")
def cbin_big(cbin_session, tmp_path_factory):
    """The same, in 0.5 s chunks, three chunks per block."""
    report = run_standard(cbin_session, tmp_path_factory.mktemp("out-big"), config=BIG_BLOCKS)
    assert report.ok, {k: r.error for k, r in report.results.items()}
    return report


@pytest.fixture(scope="module")
def bin_run(bin_session, tmp_path_factory):
    """The SpikeGLX .bin session, same chunking as :func:`cbin_small`."""
    report = run_standard(bin_session, tmp_path_factory.mktemp("out-bin"), config=SMALL_BLOCKS)
    assert report.ok, {k: r.error for k, r in report.results.items()}
    return report


def store(report, rel: str) -> timeseries.TimeseriesStore:
    return timeseries.TimeseriesStore(f"{report.asset.url}/{rel}")


def cbin_of(session: Path) -> Path:
    return next((session / "raw_ephys_data" / "probe00").glob("*.ap.cbin"))


# -- decompress ----------------------------------------------------------------------------------


def test_decompress_only_runs_decompress(cbin_session, tmp_path):
    report = run_standard(cbin_session, tmp_path, until="decompress")
    assert {k: r.state for k, r in report.results.items()} == {"decompress[probe00]": "done"}
    assert sorted(report.asset.commits()) == ["decompress[probe00]"]
    assert not (Path(report.asset.url) / PRE).exists()
    summary = report.results["decompress[probe00]"].summary
    assert summary["format"] == "mtscomp" and summary["checksum_verified"] is True
    assert (summary["n_samples"], summary["n_channels"], summary["n_sync_channels"]) == (18_000, 385, 1)


def test_raw_store_equals_mtscomp_and_original(cbin_small, cbin_session, np1_data):
    cbin = cbin_of(cbin_session)
    theirs = mtscomp.decompress(cbin, cbin.with_suffix(".ch"))
    try:
        expected = np.asarray(theirs[:])
    finally:
        theirs.close()
    ours = store(cbin_small, RAW).traces[:]
    assert ours.dtype == np.int16 and ours.shape == (18_000, 385)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(ours, np1_data)
    assert ours[7:11, -1].tolist() == [32767, -32768, 32767, -32768]  # int16 wrap-around survived


def test_raw_store_coordinates_match_the_reader(cbin_small, cbin_session):
    info = open_raw(str(cbin_of(cbin_session))).info
    raw = store(cbin_small, RAW)
    assert raw.channel_ids == list(info.channel_ids)
    assert raw.channel_ids[-1] == "SY0" and raw.channel_ids[0] == "AP0"
    np.testing.assert_array_equal(raw.positions, info.positions)  # NaN for the sync column
    np.testing.assert_array_equal(raw.coord("gain_uv"), info.gains_uv)
    np.testing.assert_array_equal(raw.coord("adc_shift"), info.adc_shifts)
    np.testing.assert_array_equal(raw.coord("is_sync"), info.is_sync)
    np.testing.assert_array_equal(raw.coord("shank"), info.shank_ids)
    # the reader's facts are not trivial, so the comparisons above can fail
    assert np.isnan(raw.positions[-1]).all() and np.isfinite(raw.positions[:-1]).all()
    assert raw.coord("is_sync").tolist() == [False] * 384 + [True]
    # NP1: 12 channels per ADC, converted over 13 cycles (12 AP + 1 LF); 0.6 V / 512 / gain 500
    np.testing.assert_allclose(np.unique(raw.coord("adc_shift")), np.arange(12) / 13)
    np.testing.assert_allclose(raw.coord("gain_uv"), [2.34375] * 384 + [1.0])
    assert raw.sampling_frequency == info.sampling_frequency == 30_000.0
    attrs = raw.attrs
    assert attrs["n_samples"] == info.n_samples == 18_000
    assert (attrs["units"], attrs["format"], attrs["probe_type"]) == ("adc", "mtscomp", "NP1")
    assert attrs["source"] == str(cbin_of(cbin_session))
    assert attrs["metadata"]["imDatPrb_pn"] == "PRB_1_4_0480_1"


def test_raw_store_opens_with_xarray(cbin_small):
    url = f"{cbin_small.asset.url}/{RAW}"
    ds = timeseries.open_dataset(url)
    raw = timeseries.TimeseriesStore(url)
    assert ds["traces"].dims == ("time", "channel")
    assert dict(ds.sizes) == {"time": 18_000, "channel": 385}
    assert ds["traces"].chunks == ((7500, 7500, 3000), (385,))  # lazy, one dask chunk per zarr chunk
    assert [str(c) for c in ds["channel"].values] == raw.channel_ids
    assert ds.attrs["sampling_frequency"] == 30_000.0 and ds.attrs["n_samples"] == 18_000
    for name in timeseries.CHANNEL_COORDS:
        assert ds[name].dims == ("channel",), name


def test_xarray_sees_the_stored_values(cbin_small, np1_data):
    """int16 samples (0 included, not masked as a fill value), and per-channel coordinates with
    their own dtypes and values (shank 0, x 0, adc_shift 0, is_sync False are real values)."""
    url = f"{cbin_small.asset.url}/{RAW}"
    ds = timeseries.open_dataset(url)
    raw = timeseries.TimeseriesStore(url)
    assert ds["traces"].dtype == np.int16
    np.testing.assert_array_equal(ds["traces"].isel(time=slice(7000, 8000)).values, np1_data[7000:8000])
    np.testing.assert_array_equal(ds["traces"].sel(channel="SY0").values, np1_data[:, -1])  # half zeros
    for name, kind in timeseries.CHANNEL_COORDS.items():
        assert ds[name].dtype == np.dtype(kind), name
        np.testing.assert_array_equal(ds[name].values, raw.coord(name), err_msg=name)  # 0 stays 0


def test_spikeglx_bin_route_gives_the_identical_store(bin_run, cbin_small):
    a, b = store(bin_run, RAW), store(cbin_small, RAW)
    assert bin_run.results["decompress[probe00]"].summary["format"] == "spikeglx"
    assert bin_run.results["decompress[probe00]"].summary["checksum_verified"] is True
    assert a.traces.chunks == b.traces.chunks and a.traces.dtype == b.traces.dtype
    np.testing.assert_array_equal(a.traces[:], b.traces[:])
    assert a.channel_ids == b.channel_ids
    for name in timeseries.CHANNEL_COORDS:
        np.testing.assert_array_equal(a.coord(name), b.coord(name), err_msg=name)
    differ = {k for k in a.attrs.keys() | b.attrs.keys() if a.attrs.get(k) != b.attrs.get(k)}
    assert differ == {"format", "source"}
    # and what comes out of preprocessing is the same too
    np.testing.assert_array_equal(store(bin_run, PRE).traces[:], store(cbin_small, PRE).traces[:])


# -- preprocess ----------------------------------------------------------------------------------


def test_preprocessed_store_drops_sync_and_is_float32(cbin_small):
    raw, pre = store(cbin_small, RAW), store(cbin_small, PRE)
    assert pre.traces.dtype == np.float32 and pre.traces.shape == (18_000, 384)
    assert pre.channel_ids == [f"AP{i}" for i in range(384)] and "SY0" not in pre.channel_ids
    assert not pre.coord("is_sync").any()
    np.testing.assert_array_equal(pre.positions, raw.positions[:384])
    np.testing.assert_array_equal(pre.coord("shank"), raw.coord("shank")[:384])
    np.testing.assert_array_equal(pre.coord("gain_uv"), np.ones(384))
    assert pre.attrs["units"] == "uV" and pre.sampling_frequency == 30_000.0
    ds = timeseries.open_dataset(f"{cbin_small.asset.url}/{PRE}")
    assert ds["traces"].dims == ("time", "channel") and ds["traces"].dtype == np.float32
    traces = pre.traces[:]
    assert np.isfinite(traces).all()
    # the 7 Hz common drift (40 ADC units ~ 94 µV) is gone; the noise (6 units ~ 14 µV) is not
    rms = float(np.sqrt(np.mean(traces.astype(np.float64) ** 2)))
    assert 9 < rms < 19
    assert rms == pytest.approx(cbin_small.results["preprocess[probe00]"].summary["rms_uv"], abs=1e-2)
    assert np.abs(traces.mean(axis=0)).max() < 5


def test_block_sizes_really_differ(cbin_small, cbin_big):
    assert cbin_small.blocks == {"decompress[probe00]": 4, "preprocess[probe00]": 3}  # 3 + checksum
    assert cbin_big.blocks == {"decompress[probe00]": 2, "preprocess[probe00]": 1}
    assert store(cbin_small, RAW).traces.chunks == (7500, 385)
    assert store(cbin_big, RAW).traces.chunks == (15000, 385)
    assert store(cbin_big, PRE).traces.chunks == (15000, 384)


def test_decompress_is_block_size_independent(cbin_small, cbin_big):
    np.testing.assert_array_equal(store(cbin_small, RAW).traces[:], store(cbin_big, RAW).traces[:])


def test_preprocess_is_block_size_independent(cbin_small, cbin_big):
    small, big = store(cbin_small, PRE).traces[:], store(cbin_big, PRE).traces[:]
    rms = float(np.sqrt(np.mean(big.astype(np.float64) ** 2)))
    error = float(np.max(np.abs(small.astype(np.float64) - big)))
    assert error <= 1e-4 * rms, f"max difference {error:.3g} µV for an RMS of {rms:.3g} µV"


# -- real Open Ephys data ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def openephys_run(shared_data, tmp_path_factory):
    report = run_standard(shared_data / OPENEPHYS, tmp_path_factory.mktemp("out-oe"))
    assert report.ok, {k: r.error for k, r in report.results.items()}
    return report


def test_openephys_raw_store_equals_continuous_dat(openephys_run, shared_data):
    expected = np.memmap(shared_data / OPENEPHYS / OE_DAT, dtype="<i2", mode="r").reshape(-1, 16)
    raw = store(openephys_run, RAW)
    assert raw.traces.shape == (131_362, 16) and raw.traces.dtype == np.int16
    np.testing.assert_array_equal(raw.traces[:], expected)
    assert raw.channel_ids == [f"CH{i}" for i in range(1, 17)]
    assert raw.attrs["format"] == "openephys" and raw.sampling_frequency == 40_000.0
    np.testing.assert_allclose(raw.coord("gain_uv"), 0.05, rtol=1e-7)
    assert not raw.coord("is_sync").any() and np.isnan(raw.positions).all()
    ds = timeseries.open_dataset(f"{openephys_run.asset.url}/{RAW}")
    assert ds["traces"].dims == ("time", "channel") and ds.sizes["time"] == 131_362


def test_openephys_decompress_does_not_claim_a_checksum(openephys_run):
    """Open Ephys records no checksum: the provenance must not say one was verified."""
    summary = openephys_run.results["decompress[probe00]"].summary
    assert summary["checksum_verified"] is False


def test_openephys_preprocessed(openephys_run, shared_data):
    assert openephys_run.asset.read_description()["source_data"] == [OPENEPHYS]
    pre = store(openephys_run, PRE)
    assert pre.traces.dtype == np.float32 and pre.traces.shape == (131_362, 16)
    assert pre.channel_ids == [f"CH{i}" for i in range(1, 17)]
    traces = pre.traces[:]
    assert np.isfinite(traces).all()
    # after the high-pass and common median reference each channel is centred, and not empty
    assert np.abs(np.median(traces, axis=0)).max() < 2.0
    assert (traces.std(axis=0) > 1.0).all()
    summary = openephys_run.results["preprocess[probe00]"].summary
    assert summary["steps"] == ["PhaseShift", "HighPass", "InterpolateBadChannels", "CommonReference"]
    print(summary["bad_channels"], pre.attrs["bad_channels"])
