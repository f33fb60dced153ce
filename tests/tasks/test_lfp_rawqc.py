"""The LFP band (``lfp``) and IBL's raw-data QC datasets (``raw_qc``): parity with SpikeInterface
and with direct numpy/scipy computations, block independence, bounded reads, the NP1 decision,
files and shapes, and their place in the standard graph.

Errors are ``max |ours - reference| / RMS(reference)`` ("worst") and
``RMS(ours - reference) / RMS(reference)`` ("rms"), as in ``test_preprocessing.py``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from neuropool.errors import ConfigError
from neuropool.graphs import load_config, standard_graph
from neuropool.io import spec, timeseries
from neuropool.io.session import Session
from neuropool.tasks import get_task
from neuropool.tasks.base import TaskContext
from neuropool.tasks.lfp import (
    LfpParams,
    decimation_factor,
    design,
    lfp_block,
)
from neuropool.tasks.rawqc import AP_MARGIN_PERIODS, RawQCParams, plan_windows

from .conftest import assert_asset_consistent, run_standard

FS = 30_000.0
GAIN = 2.34375  # µV per bit (NP1 gain 500; NP2's is 3.05)
LFP_SECONDS = 24.0
# Bounds asserted below, with the values measured on this file's data in the comments.
PARITY_INTERIOR_WORST = 2e-5  # 8 s or more from the edges: 3.0e-6 worst, 3.6e-7 rms
PARITY_ALL_RMS = 0.1  # whole recording, edges included: 6.1e-2 rms (1.6 worst, at an edge)
BLOCK_INDEPENDENCE = 3e-6  # 10 s margin: 4.4e-7 (lfp_block and task, rms 4e-8)


# -- data -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def wideband(n_channels: int, seconds: float = LFP_SECONDS, seed: int = 0) -> np.ndarray:
    """int16 wide-band (NP2-like) data plus a sync column: 1/f noise (40 µV), an 8 Hz
    oscillation (30 µV), white noise (10 µV), ±500 µV offsets and a random-walk drift."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    spectrum = np.fft.rfft(rng.normal(size=(n, n_channels)), axis=0)
    f = np.fft.rfftfreq(n, 1 / FS)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / np.sqrt(f)[:, None], n=n, axis=0)
    x *= 40 / x.std()
    t = np.arange(n) / FS
    x += 30 * np.sin(2 * np.pi * 8 * t[:, None] + rng.uniform(0, 6, n_channels))
    x += rng.uniform(-500, 500, n_channels) + np.cumsum(rng.normal(0, 0.05, (n, 1)), axis=0)
    x += rng.normal(0, 10, (n, n_channels))
    data = np.zeros((n, n_channels + 1), dtype=np.int16)
    data[:, :-1] = np.clip(np.round(x / GAIN), -32768, 32767)
    data[:, -1] = (np.arange(n) // 3000 % 2) * 64  # sync
    data.setflags(write=False)
    return data


def make_store(url: str, data: np.ndarray, *, probe_type: str = "NP2", gains=None,
               fs: float = FS) -> str:
    """A raw store like decompress writes: int16, the last column is the sync channel."""
    n, n_cols = data.shape
    gains = np.full(n_cols - 1, GAIN) if gains is None else np.asarray(gains, dtype=float)
    timeseries.create(
        url, n_samples=n, channel_ids=[f"AP{i}" for i in range(n_cols - 1)] + ["SY0"],
        dtype="int16", chunk_samples=int(fs),
        coords={"x": np.r_[np.arange(n_cols - 1) % 2 * 32.0, np.nan],
                "y": np.r_[np.arange(n_cols - 1) * 20.0, np.nan],
                "shank": np.zeros(n_cols, dtype=int), "gain_uv": np.r_[gains, 1.0],
                "adc_shift": np.zeros(n_cols), "is_sync": np.arange(n_cols) == n_cols - 1},
        attrs={"sampling_frequency": fs, "units": "adc", "probe_type": probe_type},
    )
    timeseries.write_block(url, 0, data)
    timeseries.finalize(url)
    return url


def run_task(name: str, params: dict, raw_url: str, folder: Path) -> tuple[dict, list, TaskContext]:
    """Run one task's setup, blocks and finish in this process; outputs go under ``folder``."""
    cls = get_task(name)
    task = cls(params)
    ctx = TaskContext(node=f"{name}[probe00]", probe="probe00", inputs={"ephys.raw": raw_url},
                      outputs={d: str(folder / spec.DATASET_PATHS[d]) for d in cls.outputs})
    blocks = task.setup(ctx)
    summary = task.finish(ctx, [task.run_block(ctx, b) for b in blocks])
    return summary, blocks, ctx


def errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    scale = np.sqrt(np.mean(ref.astype(np.float64) ** 2))
    diff = ours.astype(np.float64) - ref
    return float(np.abs(diff).max() / scale), float(np.sqrt(np.mean(diff**2)) / scale)


# -- lfp: design -----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [3, 5])
def test_band_pass_halves_multiply_to_the_butterworth_band_pass(order):
    """Low-pass half at 30 kHz times the high-pass half moved to 2.5 kHz = butter(bandpass).
    Largest difference of the power responses, 0.1-1250 Hz: 2.1e-8 (order 3), 4.6e-8 (order 5);
    two separately designed Butterworth filters differ by 1.0e-3. Low-pass half at the output
    Nyquist frequency: -74.7 dB (order 3), -124.6 dB (order 5)."""
    dsg = design(LfpParams(order=order), FS)
    f = np.logspace(-1, np.log10(1249.0), 500)
    band = scipy.signal.butter(order, [0.5, 300.0], btype="bandpass", fs=FS, output="sos")
    _, h_band = scipy.signal.sosfreqz(band, worN=f, fs=FS)
    _, h_low = scipy.signal.sosfreqz(dsg.lowpass, worN=f, fs=FS)
    _, h_high = scipy.signal.sosfreqz(dsg.highpass, worN=f, fs=dsg.rate)
    assert np.abs(np.abs(h_low * h_high) ** 2 - np.abs(h_band) ** 2).max() < 1e-6
    # the low-pass half alone stops what would fold back: -74 dB at the output Nyquist (order 3)
    _, at_nyquist = scipy.signal.sosfreqz(dsg.lowpass, worN=[dsg.rate / 2], fs=FS)
    assert 20 * np.log10(np.abs(at_nyquist[0]) ** 2) < (-70 if order == 3 else -120)


def test_decimation_factor_and_rate_checks():
    assert decimation_factor(30_000.0, 2500.0) == 12
    assert decimation_factor(30_000.3, 2500.0) == 12  # a calibrated SpikeGLX rate
    assert decimation_factor(40_000.0, 2500.0) == 16  # Open Ephys
    assert design(LfpParams(), 30_000.3).rate == pytest.approx(2500.025)
    with pytest.raises(ConfigError, match=r"lfp.target_rate 2500 Hz does not divide .* 28000 Hz.*2545.45 or 2333.33"):
        decimation_factor(28_000.0, 2500.0)
    with pytest.raises(ConfigError, match=r"lfp.band upper edge 700 Hz .* at most 625 Hz"):
        design(LfpParams(band=(0.5, 700.0)), FS)
    with pytest.raises(ConfigError, match=r"lfp.band \[100, 300\] Hz is too narrow"):
        design(LfpParams(band=(100.0, 300.0)), FS)
    with pytest.raises(ConfigError, match=r"lfp\.band"):
        get_task("lfp")({"band": [300.0, 0.5]})


# -- lfp: against SpikeInterface, block independence ------------------------------------------


def test_lfp_matches_spikeinterface():
    """SpikeInterface's ``bandpass_filter(0.5, 300, order 3, sos, forward-backward)`` then
    ``decimate(12)``, one ``get_traces`` over 24 s x 8 channels (output RMS 34 µV). Both run
    sosfiltfilt's edge rule at the recording's edges, but at different rates, so their 0.5 Hz
    start-up transients differ; worst / rms with the first and last S seconds left out:
    S = 0: 1.6 / 6.1e-2, 1 s: 1.6e-1 / 1.2e-2, 2 s: 6.3e-2 / 2.8e-3, 4 s: 3.6e-3 / 1.7e-4,
    6 s: 1.1e-4 / 8.8e-6, 8 s: 3.0e-6 / 3.6e-7 (float32 rounding and the 2e-8 response
    difference)."""
    spre = pytest.importorskip("spikeinterface.preprocessing")
    si = pytest.importorskip("spikeinterface.core")
    data = wideband(8)
    raw = np.array(data[:, :-1])
    rec = si.NumpyRecording([raw], FS)
    rec.set_channel_gains(GAIN)
    rec.set_channel_offsets(0.0)
    band = spre.bandpass_filter(rec, freq_min=0.5, freq_max=300.0, filter_order=3, ftype="butter",
                                filter_mode="sos", direction="forward-backward", dtype="float32",
                                ignore_low_freq_error=True)
    ref = spre.decimate(band, 12, antialias=False).get_traces(return_in_uV=True)
    dsg = design(LfpParams(), FS)
    n_out = dsg.n_out(len(raw))
    ours = lfp_block(lambda a, b: raw[a:b], 0, n_out, len(raw), np.full(8, GAIN), dsg, 0)
    assert ours.shape == ref.shape == (n_out, 8) and ours.dtype == np.float32
    edge = int(8 * dsg.rate)
    worst, rms = errors(ours[edge:-edge], ref[edge:-edge])
    assert worst < PARITY_INTERIOR_WORST and rms < PARITY_INTERIOR_WORST
    assert errors(ours, ref)[1] < PARITY_ALL_RMS


def test_lfp_block_independence_and_bounded_reads():
    """Irregular blocks (1 sample, 2,499, 7,777 ...) with the default 10 s margin against one
    block: worst 4.4e-7 x RMS; every read stays within one low-pass piece and its context."""
    data = wideband(4)
    raw = np.array(data[:, :-1])
    n = len(raw)
    dsg = design(LfpParams(), FS)
    n_out, margin = dsg.n_out(n), math.ceil(10.0 * dsg.rate)
    whole = lfp_block(lambda a, b: raw[a:b], 0, n_out, n, np.full(4, GAIN), dsg, margin)
    sizes: list[int] = []

    def read(a: int, b: int) -> np.ndarray:
        sizes.append(b - a)
        return raw[a:b]

    cuts = [0, 1, 2_500, 10_277, 30_000, 31_234, 47_000, n_out]
    blocks = [lfp_block(read, a, b, n, np.full(4, GAIN), dsg, margin) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    assert errors(np.concatenate(blocks), whole)[0] < BLOCK_INDEPENDENCE
    piece = round(2.0 * dsg.rate)  # PIECE_S
    assert max(sizes) <= dsg.factor * (piece - 1) + 2 * dsg.lowpass_margin + 1
    assert dsg.lowpass_margin == 1000  # 10 periods of 300 Hz


def test_lfp_task_store_is_the_same_whatever_the_blocks(tmp_path):
    """Through the task: 2 s chunks, 2 per block (6 blocks) against 10 s chunks, 3 per block
    (one block): worst 4.4e-7 x RMS."""
    raw_url = make_store(str(tmp_path / "raw.zarr"), wideband(4))
    small, blocks, ctx = run_task("lfp", {"chunk_seconds": 2, "chunks_per_block": 2}, raw_url, tmp_path / "a")
    big, one, _ = run_task("lfp", {}, raw_url, tmp_path / "b")
    assert len(blocks) == 6 and len(one) == 1
    a = timeseries.TimeseriesStore(ctx.outputs["ephys.lfp"]).traces[:]
    b = timeseries.TimeseriesStore(str(tmp_path / "b" / "lfp.zarr")).traces[:]
    assert errors(a, b)[0] < BLOCK_INDEPENDENCE
    assert small["rms_uv"] == pytest.approx(big["rms_uv"], rel=1e-6)


def test_lfp_store_length_time_axis_and_coordinates(tmp_path):
    """n_raw = 24 s + 7 samples -> ceil(n / 12) samples; LFP sample k is raw sample 12 k: a
    10 Hz sine comes out in phase and at full amplitude: largest error 0.45 µV of 400 (int16
    rounding at 2.34 µV/bit), where a one-sample shift would make it 10 µV."""
    n = int(LFP_SECONDS * FS) + 7
    t = np.arange(n) / FS
    data = np.zeros((n, 3), dtype=np.int16)
    data[:, 0] = np.round(400 * np.sin(2 * np.pi * 10 * t) / GAIN + 300)  # +700 µV offset
    data[:, 1] = np.round(-200 * np.cos(2 * np.pi * 25 * t) / GAIN)
    raw_url = make_store(str(tmp_path / "raw.zarr"), data)
    summary, _, ctx = run_task("lfp", {"chunk_seconds": 5}, raw_url, tmp_path)
    store = timeseries.TimeseriesStore(ctx.outputs["ephys.lfp"])
    n_out = -(-n // 12)
    assert store.traces.shape == (n_out, 2) and store.traces.dtype == np.float32
    assert store.traces.chunks == (12_500, 2)
    assert store.sampling_frequency == 2500.0 and store.attrs["decimation_factor"] == 12
    assert store.attrs["units"] == "uV" and store.attrs["probe_type"] == "NP2"
    assert store.channel_ids == ["AP0", "AP1"]  # the sync channel is dropped
    raw = timeseries.TimeseriesStore(raw_url)
    np.testing.assert_array_equal(store.positions, raw.positions[:2])
    np.testing.assert_array_equal(store.coord("gain_uv"), [1.0, 1.0])
    assert summary == {"n_samples": n_out, "n_channels": 2, "sampling_frequency": 2500.0,
                       "decimation_factor": 12, "rms_uv": summary["rms_uv"]}
    lfp = store.traces[:]
    times = np.arange(n_out) * 12 / FS
    inside = slice(int(8 * 2500), n_out - int(8 * 2500))
    expected = np.stack([400 * np.sin(2 * np.pi * 10 * times), -200 * np.cos(2 * np.pi * 25 * times)], axis=1)
    np.testing.assert_allclose(lfp[inside], expected[inside], atol=1.5)
    assert timeseries.open_dataset(ctx.outputs["ephys.lfp"]).sizes["time"] == n_out


def test_np1_writes_an_empty_store_or_fails(tmp_path):
    """NP1's AP stream is high-passed at 300 Hz in hardware: by default an empty store that says
    why; with ``on_np1: fail`` a ConfigError that says how to go on."""
    raw_url = make_store(str(tmp_path / "raw.zarr"), wideband(4)[:30_000], probe_type="NP1")
    summary, blocks, ctx = run_task("lfp", {}, raw_url, tmp_path / "skip")
    store = timeseries.TimeseriesStore(ctx.outputs["ephys.lfp"])
    assert blocks == [(0, 0)] and store.traces.shape == (0, 4)
    assert "300 Hz in hardware" in summary["skipped"] == store.attrs["skipped"]
    assert summary["n_samples"] == 0 and summary["rms_uv"] is None
    assert store.channel_ids == ["AP0", "AP1", "AP2", "AP3"]
    with pytest.raises(ConfigError, match=r"NP1 probe.*lfp.on_np1: skip.*lfp.enabled: false"):
        run_task("lfp", {"on_np1": "fail"}, raw_url, tmp_path / "fail")
    # a wide-band probe is filtered, and so is an NP1 .lf stream (2.5 kHz: band-pass only)
    np2 = make_store(str(tmp_path / "np2.zarr"), wideband(4)[:30_000], probe_type="NP2")
    assert run_task("lfp", {}, np2, tmp_path / "np2")[0]["n_samples"] == 2500
    lf = make_store(str(tmp_path / "lf.zarr"), wideband(4)[:30_000:12], probe_type="NP1", fs=2500.0)
    summary = run_task("lfp", {}, lf, tmp_path / "lf")[0]
    assert "skipped" not in summary and (summary["n_samples"], summary["decimation_factor"]) == (2500, 1)


def test_lfp_memory_estimate():
    """Default block (30 s + 2 x 10 s at 2.5 kHz, 384 channels): 0.79 GB, grows with the block."""
    from neuropool.tasks.lfp import Lfp

    assert 0.5 < Lfp().resources().memory_gb < 1.0
    assert Lfp({"chunks_per_block": 6}).resources().memory_gb > Lfp().resources().memory_gb


# -- raw_qc -------------------------------------------------------------------------------------

QC_SECONDS = 10.5  # 3 whole 3 s windows and a 1.5 s one
QC_GAIN = 0.5  # µV per bit: int16 rounding (0.14 µV rms) stays far below the values checked
F_AP = FS / 1024 * 34  # 996.1 Hz, on a Welch bin
F_LF = 2500.0 / 1024 * 8  # 19.5 Hz, on an LF Welch bin


@functools.lru_cache(maxsize=1)
def qc_data() -> np.ndarray:
    """Five channels with known content, and sync: 0 white noise 20 µV; 1 a 996 Hz sine of
    50 µV; 2 a 19.5 Hz sine of 200 µV plus 5 µV white noise; 3 a 400 µV offset plus 10 µV white
    noise; 4 channel 1 stored at half the gain."""
    rng = np.random.default_rng(7)
    n = int(QC_SECONDS * FS)
    t = np.arange(n) / FS
    x = np.zeros((n, 6))
    x[:, 0] = rng.normal(0, 20, n)
    x[:, 1] = 50 * np.sin(2 * np.pi * F_AP * t)
    x[:, 2] = 200 * np.sin(2 * np.pi * F_LF * t) + rng.normal(0, 5, n)
    x[:, 3] = 400 + rng.normal(0, 10, n)
    x[:, 4] = 2 * x[:, 1]  # stored at half the gain: the same µV
    x /= QC_GAIN
    x[:, 5] = np.arange(n) // 1500 % 2 * 64
    data = np.round(x).astype(np.int16)
    data.setflags(write=False)
    return data


QC_GAINS = [QC_GAIN, QC_GAIN, QC_GAIN, QC_GAIN, QC_GAIN / 2]


def load_qc(folder: Path) -> dict[str, np.ndarray]:
    return {p.name.removeprefix("_iblqc_").removesuffix(".npy"): np.load(p) for p in folder.glob("_iblqc_*.npy")}


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qc")
    raw_url = make_store(str(folder / "raw.zarr"), qc_data(), gains=QC_GAINS)
    summary, blocks, _ = run_task("raw_qc", {}, raw_url, folder / "probe00")
    return summary, blocks, load_qc(folder / "probe00"), raw_url


def test_raw_qc_files_and_shapes(qc_run):
    summary, blocks, qc, _ = qc_run
    shapes = {k: (v.shape, v.dtype) for k, v in qc.items()}
    assert shapes == {
        "ephysTimeRmsAP.rms": ((4, 5), np.float32), "ephysTimeRmsAP.timestamps": ((4,), np.float64),
        "ephysChannels.rawSpikeRms": ((5,), np.float32), "ephysChannels.rawLfpRms": ((5,), np.float32),
        "ephysSpectralDensityAP.freqs": ((513,), np.float32), "ephysSpectralDensityAP.power": ((513, 5), np.float32),
        "ephysSpectralDensityLF.freqs": ((513,), np.float32), "ephysSpectralDensityLF.power": ((513, 5), np.float32),
    }
    assert len(blocks) == 1 and summary["n_windows"] == 4 and summary["n_spectral_windows"] == 4
    assert summary["warnings"] == [] and len(summary["files"]) == 8
    # window centres: (first + (length - 1) / 2) / fs, the last window 1.5 s long
    np.testing.assert_allclose(qc["ephysTimeRmsAP.timestamps"], [(s + (m - 1) / 2) / FS for s, m in
                               [(0, 90_000), (90_000, 90_000), (180_000, 90_000), (270_000, 45_000)]])
    assert qc["ephysSpectralDensityAP.freqs"][-1] == 15_000 and qc["ephysSpectralDensityLF.freqs"][-1] == 1250


def test_raw_qc_against_numpy(qc_run):
    """Our windows, margins, channel groups and reductions against direct computations over the
    whole array: AP RMS (scipy high-pass of the whole recording, then per window) and Welch PSD
    of the raw µV per window; largest relative differences 5.2e-8 and 5.8e-8 (float32)."""
    _, _, qc, _ = qc_run
    x = qc_data()[:, :5] * np.array(QC_GAINS)
    sos = scipy.signal.butter(3, 300.0, btype="highpass", fs=FS, output="sos")
    hp = scipy.signal.sosfiltfilt(sos, x, axis=0)
    edges = [0, 90_000, 180_000, 270_000, len(x)]
    windows = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    rms = np.array([np.sqrt(np.mean(hp[w] ** 2, axis=0)) for w in windows])
    np.testing.assert_allclose(qc["ephysTimeRmsAP.rms"], rms, rtol=1e-5)
    np.testing.assert_allclose(qc["ephysChannels.rawSpikeRms"], np.median(rms, axis=0), rtol=1e-5)
    psd = np.mean([scipy.signal.welch(x[w], fs=FS, nperseg=1024, axis=0)[1] for w in windows], axis=0)
    np.testing.assert_allclose(qc["ephysSpectralDensityAP.power"], psd, rtol=1e-5, atol=1e-9)


def test_raw_qc_known_signals(qc_run):
    """RMS of known amplitudes, PSD peaks on the planted frequencies, Parseval."""
    _, _, qc, _ = qc_run
    spike, lfp = qc["ephysChannels.rawSpikeRms"], qc["ephysChannels.rawLfpRms"]
    # white noise keeps (15,000 - ~300) / 15,000 of its power above 300 Hz
    assert spike[0] == pytest.approx(20 * math.sqrt(1 - 300 / 15_000), rel=0.02)
    assert spike[1] == pytest.approx(50 / math.sqrt(2), rel=1e-3) == spike[4]
    assert spike[2] == pytest.approx(5, rel=0.03)  # the 19.5 Hz sine is removed (-130 dB)
    assert spike[3] == pytest.approx(10, rel=0.03)  # the offset is removed
    assert lfp[2] == pytest.approx(200 / math.sqrt(2), rel=1e-3)
    assert lfp[1] < 1e-3 * 50  # 996 Hz is above the LF band
    # white noise through the 300 Hz low-pass, forward and backward: its |H|^4 bandwidth
    f, h = scipy.signal.sosfreqz(scipy.signal.butter(3, 300.0, fs=FS, output="sos"), worN=1 << 16, fs=FS)
    bandwidth = np.trapezoid(np.abs(h) ** 4, f)  # 261 Hz
    assert lfp[3] == pytest.approx(10 * math.sqrt(bandwidth / 15_000), rel=0.03)
    ap, lf = qc["ephysSpectralDensityAP.power"], qc["ephysSpectralDensityLF.power"]
    assert np.argmax(ap[:, 1]) == 34 and np.argmax(lf[:, 2]) == 8
    df_ap = float(np.diff(qc["ephysSpectralDensityAP.freqs"][:2])[0])
    assert ap[:, 1].sum() * df_ap == pytest.approx(50**2 / 2, rel=0.01)  # Parseval, µV²
    assert ap[:, 0].sum() * df_ap == pytest.approx(20**2, rel=0.02)
    # constant detrend: the 400 µV offset leaves no DC peak (it would be ~3,600 µV²/Hz)
    assert ap[0, 3] < np.median(ap[1:, 3])
    df_lf = float(np.diff(qc["ephysSpectralDensityLF.freqs"][:2])[0])
    assert lf[:, 2].sum() * df_lf == pytest.approx(200**2 / 2, rel=0.01)


def test_raw_qc_block_size_independence_and_bounded_reads(qc_run, tmp_path, monkeypatch):
    """One window per block gives identical files; no read exceeds one window and its context,
    whatever the block size."""
    _, _, qc, raw_url = qc_run
    sizes: list[int] = []
    original = timeseries.TimeseriesStore.read

    def read(self, start, stop, channels=slice(None)):
        sizes.append(stop - start)
        return original(self, start, stop, channels)

    monkeypatch.setattr(timeseries.TimeseriesStore, "read", read)
    _, blocks, _ = run_task("raw_qc", {"windows_per_block": 1}, raw_url, tmp_path / "probe00")
    assert len(blocks) == 4
    again = load_qc(tmp_path / "probe00")
    assert sorted(again) == sorted(qc)
    for name in qc:
        np.testing.assert_array_equal(again[name], qc[name], err_msg=name)
    margin = max(math.ceil(AP_MARGIN_PERIODS * FS / 300), design(LfpParams(), FS).lowpass_margin)
    assert max(sizes) <= 90_000 + 2 * margin


def test_raw_qc_warns_that_np1_lf_values_are_the_hardware_filters_residue(tmp_path):
    data = qc_data()[:60_000]
    plain = make_store(str(tmp_path / "plain.zarr"), data, gains=QC_GAINS, probe_type="NP1")
    summary, _, _ = run_task("raw_qc", {}, plain, tmp_path / "probe00")
    assert "hardware" in summary["warnings"][0]  # NP1: the LF values are the filter's residue
    assert not (tmp_path / "probe00" / "_iblqc_ephysChannels.labels.npy").exists()  # preprocess's


def test_plan_windows_and_parameters(tmp_path):
    starts, spectral = plan_windows(100, 30, 20, 2)
    assert starts.tolist() == [0, 30, 60, 90] and spectral.tolist() == [0, 2]  # the 10-sample tail is no candidate
    assert plan_windows(10, 30, 20, 5)[1].size == 0
    assert plan_windows(1000, 10, 10, 5)[1].tolist() == [0, 25, 50, 74, 99]
    with pytest.raises(ConfigError, match="raw_qc.window_s"):
        get_task("raw_qc")({"window_s": 0})
    with pytest.raises(ConfigError, match=r"raw_qc.lf_rate 2400 Hz does not divide .* 30000 Hz"):
        run_task("raw_qc", {"lf_rate": 2400}, make_store(str(tmp_path / "r.zarr"), qc_data()[:3000]), tmp_path)
    assert RawQCParams().welch_samples == 1024


# -- the standard graph ---------------------------------------------------------------------------


def test_standard_graph_branches_lfp_and_raw_qc_off_decompress():
    session = Session("/data/s1", "s1", {"probe00": "/data/s1/probe00.ap.cbin"}, {})
    graph = standard_graph(session, load_config({}))
    assert list(graph.nodes) == [f"{t}[probe00]" for t in
                                 ("decompress", "preprocess", "sort", "qc", "localize", "export", "nwb", "lfp",
                                  "raw_qc")]
    for task in ("lfp", "raw_qc"):
        assert graph.upstream(f"{task}[probe00]") == ["decompress[probe00]"]
        assert graph.downstream(f"{task}[probe00]") == set()
    assert graph.subset(until="sort").task_names() == "decompress, preprocess, sort"
    lean = standard_graph(session, load_config({"lfp": {"enabled": False}, "raw_qc": {"enabled": False}}))
    assert len(lean.nodes) == 7
    # how a task runs (enabled) is not what it computes
    assert get_task("lfp")({"enabled": False}).params.fingerprint_fields() == get_task("lfp")().params.fingerprint_fields()


def test_through_the_graph_on_an_np1_session(cbin_session, tmp_path):
    report = run_standard(cbin_session, tmp_path, until="raw_qc")
    assert report.ok, {k: r.error for k, r in report.results.items()}
    report = run_standard(cbin_session, tmp_path, until="lfp")
    assert report.ok and report.results["decompress[probe00]"].state == "cached"
    assert "hardware" in report.results["lfp[probe00]"].summary["skipped"]
    assert sorted(assert_asset_consistent(report.asset)) == ["decompress[probe00]", "lfp[probe00]", "raw_qc[probe00]"]
    probe = Path(report.asset.url) / "probe00"
    qc = load_qc(probe)
    assert qc["ephysTimeRmsAP.rms"].shape == (1, 384) and qc["ephysSpectralDensityAP.power"].shape == (513, 384)
    # make_np1_data: 6 units of white noise at 2.34 µV/bit, most of it above 300 Hz
    assert np.median(qc["ephysChannels.rawSpikeRms"]) == pytest.approx(6 * 2.34375, rel=0.05)
