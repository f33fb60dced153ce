"""raw_qc: per-channel QC of the raw recording, written as IBL's ``_iblqc_`` datasets.

The recording is cut into windows of ``window_s`` (3 s, IBL's ``RMS_WIN_LENGTH_SECS``) from its
first sample; each work block is a run of whole windows and each window is computed on its own
(reading its context from the raw store), so the results do not depend on the block size and a
block holds one window of raw data at a time. ``finish`` reduces the blocks' small results and
writes, into the probe's folder of the derived asset (ephys channels only, sync dropped, in the
raw store's channel order; float32 like IBL's files, except the float64 time stamps):

=========================================  ======================  ============================
file                                       shape                   content
=========================================  ======================  ============================
_iblqc_ephysTimeRmsAP.rms.npy              (n_windows, n_chan)     AP RMS per window, µV
_iblqc_ephysTimeRmsAP.timestamps.npy       (n_windows,)            window centres, s
_iblqc_ephysChannels.rawSpikeRms.npy       (n_chan,)               median over windows of the
                                                                   above, µV
_iblqc_ephysChannels.rawLfpRms.npy         (n_chan,)               median over the spectral
                                                                   windows of the LF RMS, µV
_iblqc_ephysSpectralDensityAP.freqs.npy    (n_freqs,)              0 .. fs / 2, Hz (513)
_iblqc_ephysSpectralDensityAP.power.npy    (n_freqs, n_chan)       raw PSD, µV²/Hz
_iblqc_ephysSpectralDensityLF.freqs.npy    (n_freqs,)              0 .. LF rate / 2, Hz (513)
_iblqc_ephysSpectralDensityLF.power.npy    (n_freqs, n_chan)       LF PSD, µV²/Hz
=========================================  ======================  ============================

Definitions, and how they relate to IBL's (``ibllib.ephys.ephysqc``, ``ibldsp``):

- *AP RMS*: RMS over the window of the signal high-passed at ``ap_highpass_hz`` (Butterworth
  order 3, forward-backward; ``ibldsp.voltage.destripe``'s first stage and this project's AP
  high-pass), with 5 periods of context read on each side. ``rawSpikeRms`` is its median over
  all windows: IBL's ``_iblqc_ephysChannels.apRMS`` takes the median over 1 s snippets every
  300 s of the RMS of the raw snippet (row 0, no filter: NP1 streams are high-passed in
  hardware) and of the destriped snippet (row 1); the high-pass here makes the value meaningful
  for wide-band (NP2) streams too, and no spatial filter is applied (raw-data QC).
  ``ephysTimeRmsAP`` (IBL: written by the sorter, RMS per batch) is this RMS per window; the
  last window is shorter when the recording is not a whole number of windows.
- *Spectral windows*: ``spectral_windows`` windows spread evenly through the recording (every
  window long enough for one Welch segment at both rates is a candidate).
- *AP PSD*: Welch (Hann, ``welch_samples`` = 1024 per segment, half overlap, constant detrend,
  one-sided density) of the raw µV signal of each spectral window, averaged over them. IBL uses
  the same Welch settings on destriped snippets; raw data keep the sub-300 Hz content, line noise
  and the hardware filter's shape in view.
- *LF*: the low-pass half of the ``lfp`` task's band-pass (:mod:`neuropool.tasks.lfp`, 300 Hz,
  with its context) decimated to ``lf_rate``; each spectral window's mean is removed (IBL
  removes < 1 Hz per window of the ``.lf`` stream). ``rawLfpRms`` is the median over the spectral
  windows of its RMS; the LF PSD is Welch with the same settings at the LF rate (2.44 Hz
  resolution), averaged (IBL's ``ephysSpectralDensityLF`` sums its windows instead).

Units: µV and µV²/Hz (IBL's files are in V and V²/Hz: multiply by 1e-6 / 1e-12). On NP1 and 3A
probes the AP stream is high-passed at 300 Hz in hardware: where the session has the probe's
separate ``.lf`` stream (``decompress_lf``, optional input ``ephys.rawLf``), the LF values are
computed from it, over the same spectral windows in time; without it they describe the hardware
filter's residue, not the LFP, and the summary says so in ``warnings``.

Memory: per window, one int16 copy of the window with its context (3 s, 385 channels: 70 MB)
and float64 copies of ``CHANNEL_GROUP`` channels; the blocks return per-window vectors and
per-block PSD sums only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.signal
from pydantic import Field

from neuropool.errors import ConfigError, RawDataError
from neuropool.io import spec, timeseries, urls
from neuropool.tasks.base import RUN_ONLY, Params, Resources, Task, TaskContext
from neuropool.tasks.lfp import LfpDesign, LfpParams, design, hardware_highpassed
from neuropool.tasks.preprocessing.base import channel_major
from neuropool.tasks.preprocessing.highpass import butter_highpass_sos

__all__ = ["RawQC", "RawQCParams", "plan_windows", "window_metrics"]

#: Channels filtered together (bounds the float64 copies).
CHANNEL_GROUP = 64
#: Context of the AP high-pass, in periods of its cut-off (as :mod:`~neuropool.tasks.preprocessing.highpass`).
AP_MARGIN_PERIODS = 5.0

_FILES = spec.RAW_QC_DATASETS  # output dataset -> reduced array name


class RawQCParams(Params):
    """Parameters of :class:`RawQC`."""

    window_s: float = Field(3.0, gt=0, le=600, description="RMS window, s")
    windows_per_block: int = Field(10, ge=1, le=10_000, description="windows per work block")
    spectral_windows: int = Field(20, ge=1, le=10_000,
                                  description="windows spread through the recording for PSDs and LF RMS")
    welch_samples: int = Field(1024, ge=16, le=1 << 20, description="Welch segment length, samples")
    ap_highpass_hz: float = Field(300.0, gt=0, description="AP high-pass before the RMS, Hz")
    lf_lowpass_hz: float = Field(300.0, gt=0, description="LF low-pass (the lfp band's upper edge), Hz")
    lf_rate: float = Field(2500.0, gt=0, description="LF sampling rate, Hz")
    order: int = Field(3, ge=1, le=8, description="Butterworth order of both filters (per pass)")
    enabled: bool = Field(True, description="false leaves the node out of the standard graph",
                          json_schema_extra=RUN_ONLY)


def plan_windows(n_samples: int, window: int, min_length: int, n_spectral: int) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and the indices of the spectral windows.

    Parameters
    ----------
    n_samples : int
        Samples in the recording.
    window : int
        Samples per window; the last one may be shorter.
    min_length : int
        Shortest window that may be a spectral window.
    n_spectral : int
        Spectral windows wanted, spread evenly over the candidates.

    Returns
    -------
    starts : numpy.ndarray
        ``(n_windows,)`` first sample of each window.
    spectral : numpy.ndarray
        Sorted indices of the spectral windows (possibly empty).
    """
    starts = np.arange(0, n_samples, window, dtype=np.int64)
    lengths = np.minimum(starts + window, n_samples) - starts
    candidates = np.flatnonzero(lengths >= min_length)
    if not candidates.size:
        return starts, candidates
    pick = np.round(np.linspace(0, candidates.size - 1, min(n_spectral, candidates.size)))
    return starts, np.unique(candidates[pick.astype(np.int64)])


def _filtfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = x.shape[1]
    if n < 2:
        return x
    n_taps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return scipy.signal.sosfiltfilt(sos, x, axis=1, padlen=min(3 * n_taps, n - 1))


def _welch(x: np.ndarray, rate: float, nperseg: int) -> np.ndarray:
    """One-sided Welch density of channel-major ``x`` (Hann, half overlap, constant detrend)."""
    return scipy.signal.welch(x, fs=rate, window="hann", nperseg=nperseg, noverlap=nperseg // 2,
                              detrend="constant", scaling="density", axis=1)[1]


def window_metrics(
    read: Any, start: int, stop: int, n_raw: int, gains_uv: np.ndarray, params: RawQCParams,
    sampling_frequency: float, spectral: bool, *, ap: bool = True, lf: bool = True,
) -> dict[str, np.ndarray]:
    """The QC values of one window ``[start, stop)`` of raw samples.

    Parameters
    ----------
    read : callable
        ``read(a, b)`` -> ``(b - a, n_channels)`` raw samples of the ephys channels.
    start, stop : int
        The window.
    n_raw : int
        Samples in the recording.
    gains_uv : numpy.ndarray
        ``(n_channels,)`` µV per raw unit.
    params : RawQCParams
        Filters and Welch settings.
    sampling_frequency : float
        Raw samples per second.
    spectral : bool
        Also compute the PSDs and the LF RMS.
    ap, lf : bool
        Which bands to compute: ``ap=False`` leaves out ``ap_rms`` and ``ap_power`` (an LF stream),
        ``lf=False`` leaves out ``lf_rms`` and ``lf_power`` (taken from an LF stream instead).

    Returns
    -------
    dict
        ``ap_rms`` ``(n_channels,)``; with ``spectral`` also ``ap_power``, ``lf_power``
        ``(n_channels, n_freqs)`` and ``lf_rms`` ``(n_channels,)``, all float64.
    """
    fs = float(sampling_frequency)
    gains = np.asarray(gains_uv, dtype=np.float64)
    hp = butter_highpass_sos(params.ap_highpass_hz, params.order, fs)
    margin = math.ceil(AP_MARGIN_PERIODS * fs / params.ap_highpass_hz) if ap else 0
    design_lf = _lf_design(params, fs) if spectral and lf else None
    if design_lf is not None:
        margin = max(margin, design_lf.lowpass_margin)
        k0, k1 = -(-start // design_lf.factor), -(-stop // design_lf.factor)  # LF samples inside
    r0, r1 = max(0, start - margin), min(n_raw, stop + margin)
    raw = read(r0, r1)
    n_ch = gains.size
    n_freqs = params.welch_samples // 2 + 1
    out: dict[str, np.ndarray] = {}
    if ap:
        out["ap_rms"] = np.empty(n_ch)
        if spectral:
            out["ap_power"] = np.empty((n_ch, n_freqs))
    if design_lf is not None:
        out.update(lf_power=np.empty((n_ch, n_freqs)), lf_rms=np.empty(n_ch))
    for g in range(0, n_ch, CHANNEL_GROUP):
        group = slice(g, g + CHANNEL_GROUP)
        x = channel_major(raw[:, group], np.float64)
        x *= gains[group, None]
        if ap:
            high = _filtfilt(hp, x)[:, start - r0 : stop - r0]
            out["ap_rms"][group] = np.sqrt(np.einsum("ij,ij->i", high, high) / high.shape[1])
            if spectral:
                out["ap_power"][group] = _welch(x[:, start - r0 : stop - r0], fs, params.welch_samples)
        if design_lf is not None:
            step = design_lf.factor
            low = _filtfilt(design_lf.lowpass, x)[:, step * k0 - r0 : step * k1 - r0 : step]
            low = low - low.mean(axis=1, keepdims=True)
            out["lf_rms"][group] = np.sqrt(np.einsum("ij,ij->i", low, low) / low.shape[1])
            out["lf_power"][group] = _welch(low, design_lf.rate, params.welch_samples)
    return out


def _lf_design(params: RawQCParams, fs: float) -> LfpDesign:
    # the lfp band's low-pass half; the low edge (0.5 Hz at 300 Hz, as lfp) is not applied
    band = (params.lf_lowpass_hz / 600, params.lf_lowpass_hz)
    return design(LfpParams(band=band, target_rate=params.lf_rate, order=params.order), fs,
                  band_name="raw_qc.lf_lowpass_hz", rate_name="raw_qc.lf_rate")


class RawQC(Task):
    """AP and LF RMS, spectra and RMS over time of the raw recording, as IBL's QC datasets."""

    name = "raw_qc"
    version = "2"
    Params = RawQCParams
    inputs = ("ephys.raw",)
    optional_inputs = ("ephys.rawLf",)  # a separate LF stream (NP1, 3A): the LF values from it
    outputs = tuple(_FILES)
    default_resources = Resources(cpus=1)

    def _plan(self, raw: timeseries.TimeseriesStore) -> tuple[int, np.ndarray, np.ndarray]:
        fs = raw.sampling_frequency
        window = max(1, round(self.params.window_s * fs))
        factor = _lf_design(self.params, fs).factor
        starts, spectral = plan_windows(raw.n_samples, window, self.params.welch_samples * factor,
                                        self.params.spectral_windows)
        return window, starts, spectral

    def setup(self, ctx: TaskContext) -> list[Any]:
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        nyquist = raw.sampling_frequency / 2
        if not self.params.ap_highpass_hz < nyquist:
            raise ConfigError(f"raw_qc.ap_highpass_hz {self.params.ap_highpass_hz:g} Hz must be below "
                              f"the Nyquist frequency {nyquist:g} Hz of {ctx.inputs['ephys.raw']}")
        _lf_design(self.params, raw.sampling_frequency)  # ConfigError for an impossible LF rate
        _, starts, _ = self._plan(raw)
        step = self.params.windows_per_block
        return [(w, min(w + step, starts.size)) for w in range(0, starts.size, step)]

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        w0, w1 = block
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        gains = raw.coord("gain_uv")[keep]
        window, starts, spectral = self._plan(raw)
        n = raw.n_samples
        lf_stream = _LfStream.open(ctx, len(keep))
        result: dict[str, Any] = {"windows": [], "lf_rms": [], "ap_power": None, "lf_power": None,
                                  "n_spectral": 0}
        for w in range(w0, w1):
            start, stop = int(starts[w]), int(min(starts[w] + window, n))
            is_spectral = bool(np.isin(w, spectral))
            m = window_metrics(lambda a, b: raw.read(a, b, keep), start, stop, n, gains,
                               self.params, raw.sampling_frequency, is_spectral, lf=lf_stream is None)
            if is_spectral and lf_stream is not None:  # the LF values from the LF stream
                m.update(lf_stream.metrics(start / raw.sampling_frequency, stop / raw.sampling_frequency,
                                           self.params))
            result["windows"].append((w, start, stop, m["ap_rms"]))
            if is_spectral:
                result["lf_rms"].append((w, m["lf_rms"]))
                for key in ("ap_power", "lf_power"):
                    result[key] = m[key] if result[key] is None else result[key] + m[key]
                result["n_spectral"] += 1
        return result

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        fs = raw.sampling_frequency
        lf_stream = _LfStream.open(ctx, len(keep))
        lf = _lf_design(self.params, fs if lf_stream is None else lf_stream.store.sampling_frequency)
        arrays = reduce_results(results, len(keep), fs, lf.rate, self.params.welch_samples)
        for name, key in _FILES.items():
            urls.write_npy(ctx.outputs[name], arrays[key], ctx.storage_options)
        written = [urls.basename(ctx.outputs[name]) for name in _FILES]
        probe_type = str(raw.attrs.get("probe_type", ""))
        warnings = []
        if hardware_highpassed(probe_type, fs) and lf_stream is None:
            warnings.append(f"{probe_type} probe: the AP stream is high-passed at 300 Hz in hardware, "
                            "so rawLfpRms and ephysSpectralDensityLF describe the filter's residue, "
                            "not the LFP (recorded in the .lf stream)")
        spike = arrays["spike_rms"]
        return {
            "files": sorted(written),
            "n_windows": int(arrays["time_rms"].shape[0]),
            "n_spectral_windows": int(sum(r["n_spectral"] for r in results)),
            "n_channels": len(keep),
            "median_spike_rms_uv": round(float(np.nanmedian(spike)), 3) if spike.size else None,
            "median_lfp_rms_uv": (round(float(np.nanmedian(arrays["lfp_rms"])), 3)
                                  if np.isfinite(arrays["lfp_rms"]).any() else None),
            "warnings": warnings,
        }


class _LfStream:
    """A probe's separate LF stream (``ephys.rawLf``): LF RMS and spectrum of a stretch of time."""

    def __init__(self, store: timeseries.TimeseriesStore) -> None:
        self.store = store
        self.keep = np.flatnonzero(~store.coord("is_sync"))
        self.gains = store.coord("gain_uv")[self.keep]

    @classmethod
    def open(cls, ctx: TaskContext, n_channels: int) -> _LfStream | None:
        if "ephys.rawLf" not in ctx.inputs:
            return None
        stream = cls(timeseries.TimeseriesStore(ctx.inputs["ephys.rawLf"], ctx.storage_options))
        if stream.keep.size != n_channels:
            raise RawDataError(f"{stream.store.url}: the LF stream has {stream.keep.size} ephys channels, "
                               f"the AP stream {n_channels}: they must be the same probe's two streams")
        return stream

    def metrics(self, t0: float, t1: float, params: RawQCParams) -> dict[str, np.ndarray]:
        """``lf_rms`` and ``lf_power`` over ``[t0, t1)`` seconds of the LF stream."""
        fs, n = self.store.sampling_frequency, self.store.n_samples
        a, b = min(n, round(t0 * fs)), min(n, round(t1 * fs))
        if b - a < params.welch_samples:
            raise RawDataError(f"{self.store.url}: {b - a} LF samples over [{t0:g}, {t1:g}) s, fewer "
                               f"than raw_qc.welch_samples ({params.welch_samples}): is it shorter "
                               "than the AP stream?")
        return window_metrics(lambda i, j: self.store.read(i, j, self.keep), a, b, n, self.gains,
                              params, fs, True, ap=False)


def reduce_results(results: list[dict[str, Any]], n_channels: int, fs: float, lf_rate: float,
                   welch_samples: int) -> dict[str, np.ndarray]:
    """Assemble the blocks' results into the arrays written (see the module docstring).

    Parameters
    ----------
    results : list of dict
        What :meth:`RawQC.run_block` returned, in any order.
    n_channels : int
        Ephys channels.
    fs, lf_rate : float
        Raw and LF sampling rates.
    welch_samples : int
        Welch segment length.

    Returns
    -------
    dict
        Arrays by name: ``time_rms``, ``timestamps``, ``spike_rms``, ``lfp_rms``, ``ap_freqs``,
        ``ap_power``, ``lf_freqs``, ``lf_power``.
    """
    windows = sorted((w for r in results for w in r["windows"]), key=lambda w: w[0])
    time_rms = np.array([w[3] for w in windows], dtype=np.float64).reshape(len(windows), n_channels)
    centres = np.array([(w[1] + (w[2] - w[1] - 1) / 2) / fs for w in windows], dtype=np.float64)
    lf_rms = [v for r in results for _, v in r["lf_rms"]]
    n_spec = sum(r["n_spectral"] for r in results)
    n_freqs = welch_samples // 2 + 1
    power = {}
    for key in ("ap_power", "lf_power"):
        parts = [r[key] for r in results if r[key] is not None]
        total = np.sum(parts, axis=0) if parts else np.full((n_channels, n_freqs), np.nan)
        power[key] = (total / max(n_spec, 1)).T.astype(np.float32)
    nan = np.full(n_channels, np.nan)
    return {
        "time_rms": time_rms.astype(np.float32),
        "timestamps": centres,
        "spike_rms": (np.median(time_rms, axis=0) if len(windows) else nan).astype(np.float32),
        "lfp_rms": (np.median(np.array(lf_rms), axis=0) if lf_rms else nan).astype(np.float32),
        "ap_freqs": np.fft.rfftfreq(welch_samples, 1.0 / fs).astype(np.float32),
        "ap_power": power["ap_power"],
        "lf_freqs": np.fft.rfftfreq(welch_samples, 1.0 / lf_rate).astype(np.float32),
        "lf_power": power["lf_power"],
    }
