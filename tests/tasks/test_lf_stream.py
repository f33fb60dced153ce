"""An NP1 probe's separate LF stream: found beside the AP stream, decompressed by ``decompress_lf``,
and read by ``lfp`` and ``raw_qc`` instead of the hardware-high-passed AP stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuropool.demo import LF_CONTENT, LF_RATE, make_demo_session
from neuropool.io.timeseries import TimeseriesStore

from .conftest import assert_asset_consistent, run_standard

DURATION = 4.0


def expected_lfp_rms() -> float:
    """RMS of the demo's LF content in the lfp band (0.5-300 Hz at 2.5 kHz): both oscillations,
    and the white noise's share of the band."""
    (_, a_theta), (_, a_delta) = LF_CONTENT["theta"], LF_CONTENT["delta"]
    noise = LF_CONTENT["noise_uv"] ** 2 * 300.0 / (LF_RATE / 2)
    return float(np.sqrt(a_theta**2 / 2 + a_delta**2 / 2 + noise))


@pytest.fixture(scope="module")
def lf_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lf")
    session = make_demo_session(root / "raw", duration=DURATION, n_units=3, seed=4, compress=False)
    report = run_standard(session, root / "out", until="lfp")
    report_qc = run_standard(session, root / "out", until="raw_qc", asset=report.asset)
    return session, report, report_qc


def test_the_demo_session_has_an_lf_stream(lf_run):
    session, _, _ = lf_run
    lf = sorted(p.name for p in (session / "raw_ephys_data" / "probe00").glob("*.lf.*"))
    assert lf == ["_spikeglx_ephysData_g0_t0.imec0.lf.bin", "_spikeglx_ephysData_g0_t0.imec0.lf.meta"]


def test_lfp_comes_from_the_lf_stream(lf_run):
    _, report, _ = lf_run
    assert report.ok, {k: r.error for k, r in report.results.items()}
    assert report.results["decompress_lf[probe00]"].state == "done"
    summary = report.results["lfp[probe00]"].summary
    assert "skipped" not in summary
    assert (summary["decimation_factor"], summary["n_samples"]) == (1, int(DURATION * LF_RATE))
    store = TimeseriesStore(report.asset.dataset_url("ephys.lfp", "probe00"))
    assert store.attrs["source"].endswith("raw_lf.zarr") and store.sampling_frequency == LF_RATE
    x = store.read(int(LF_RATE), store.n_samples - int(LF_RATE))  # away from the 0.5 Hz edges
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=0))
    assert np.median(rms) == pytest.approx(expected_lfp_rms(), rel=0.05)
    # theta's phase drifts with depth (half a cycle per 2 mm): 2 mm apart, theta is in opposition
    # (the common delta keeps the correlation above -1: (-80**2 + 40**2) / (80**2 + 40**2) = -0.6)
    y = store.coord("y")
    tip, mid = x[:, np.argmin(y)], x[:, np.argmin(np.abs(y - y.min() - 2000.0))]
    assert np.corrcoef(tip, mid)[0, 1] < -0.4


def test_raw_qc_lf_values_come_from_the_lf_stream(lf_run):
    _, _, report = lf_run
    assert report.ok, {k: r.error for k, r in report.results.items()}
    summary = report.results["raw_qc[probe00]"].summary
    assert summary["warnings"] == []  # no "high-passed in hardware" caveat: the LF is real
    lfp_rms = np.load(Path(report.asset.url) / "probe00" / "_iblqc_ephysChannels.rawLfpRms.npy")
    # the LF half (below 300 Hz, each window's mean removed): the oscillations and ~1/4 of the noise
    assert np.median(lfp_rms) == pytest.approx(expected_lfp_rms(), rel=0.05)
    freqs = np.load(Path(report.asset.url) / "probe00" / "_iblqc_ephysSpectralDensityLF.freqs.npy")
    power = np.load(Path(report.asset.url) / "probe00" / "_iblqc_ephysSpectralDensityLF.power.npy")
    assert freqs[-1] == pytest.approx(LF_RATE / 2) and power.shape == (freqs.size, 384)
    peak = freqs[np.argmax(np.median(power, axis=1))]
    assert abs(peak - LF_CONTENT["theta"][0]) < 2 * (freqs[1] - freqs[0])  # theta dominates
    commits = assert_asset_consistent(report.asset)
    assert {"decompress_lf[probe00]", "lfp[probe00]", "raw_qc[probe00]"} <= set(commits)
