"""lfp: raw store -> the LFP band (0.5-300 Hz, 2.5 kHz, float32 µV), beside the AP band.

The filter is the Butterworth band-pass of ``scipy.signal.butter(order, band, "bandpass")``
at the raw rate, applied forward and backward (zero phase), followed by keeping every
``factor``-th sample (``factor = round(fs / target_rate)``: 12 from 30 kHz). That is what
SpikeInterface computes with ``bandpass_filter(0.5, 300, filter_order=3, ftype="butter",
filter_mode="sos", direction="forward-backward")`` then ``decimate(12)`` on a whole recording.

Multi-rate. The 0.5 Hz edge rings for seconds (slowest pole time constant 0.64 s at order 3),
so a block needs seconds of context on each side; filtering that context at 30 kHz for every
block would multiply the work and the memory by the margin. The band-pass is therefore factored
exactly into its two halves: the ``order`` poles near 300 Hz with the zeros at Nyquist (the
*low-pass half*, run at the raw rate before decimating: its transients die within a few ms) and
the ``order`` poles near 0.5 Hz with the zeros at DC (the *high-pass half*, moved to the LFP rate
by the matched-z map ``p -> p ** factor`` and run after decimating, where a 10 s margin costs
25,000 rows instead of 300,000). Measured difference of the cascade's power response from the
single 30 kHz band-pass: 2.1e-8 at most (0.1-1250 Hz, default band and order); two separately
designed Butterworth filters would differ by 1e-3. Decimation commutes with the high-pass half
up to aliasing, which the low-pass half attenuates by 74 dB at the 1250 Hz output Nyquist
frequency and by more than 100 dB for what folds back into the band.

Order: 3 by default, as IBL's ``ibldsp.voltage.destripe_lfp`` (``butter(3, [0.5, 300],
"bandpass")``) and this project's AP high-pass. Each skirt falls at 18 dB/octave per pass,
36 dB/octave forward-backward; higher orders lengthen the 0.5 Hz ringing (longer margins) and
worsen the conditioning of poles that sit 1e-4 away from z = 1.

Blocks. Output blocks are whole chunks of the LFP store. A block computes the decimated
low-pass half over the block plus ``margin_s`` on each side (in pieces of ``PIECE_S``, each with
its own ``LOWPASS_PERIODS`` of context at the raw rate), runs the high-pass half over it and
keeps the block. At the recording's edges ``sosfiltfilt``'s own rule applies (odd extension,
steady-state initial conditions), as in a whole-recording computation; inside, the truncated
context leaves an error that decays with the margin. Measured on 24 channels of 60 s synthetic
wide-band data (1/f noise 40 µV, 8 Hz oscillation 30 µV, white noise 10 µV, ±500 µV offsets,
a random-walk drift; int16 at 2.34 µV/bit) cut into 1 s blocks, worst block-boundary error
relative to the output RMS (34 µV): margin 2 s 1.8e-1, 4 s 9.9e-3, 6 s 3.0e-4, 8 s 8.3e-6,
10 s 6.8e-7 (default, 5 periods of 0.5 Hz as SpikeInterface's automatic margin), 12 s 2.3e-7.
The low-pass half's context: 2 periods 1.5e-3, 4 periods 5.7e-6, 6 periods 2.1e-7, 10 periods
1.1e-7 (the float32 floor).

Cost and memory (one thread, 384 channels): about 0.4 s per second of recording for the
low-pass half, times ``(block + 2 margin) / block`` (1.67 for the default 30 s blocks: about
0.7 s per second). Per block: one float64 copy of ``n_channels x (block + 2 margin)`` at the LFP
rate (default 384 MB), the float32 output (115 MB), float64 copies of ``CHANNEL_GROUP`` channels
and one raw piece: about 0.8 GB, which :meth:`Lfp.resources` reports.

Neuropixels 1.0 (and 3A): the AP stream is high-passed at 300 Hz in hardware, so a 0.5-300 Hz
band derived from it holds only the filter's residue, not the LFP (which these probes record in
the separate ``.lf`` stream; IBL uses that one). Where the session has that stream (found beside
the AP one, or named in ``session.json``), ``decompress_lf`` stores it and this task reads it
instead of the AP stream (optional input ``ephys.rawLf``). Without it, ``on_np1: skip``
(default) writes an empty store
(0 samples, the channel coordinates, and a ``skipped`` attribute saying why) so that the graph
still completes; ``on_np1: fail`` makes the node fail with a ConfigError instead. The probe type
comes from the raw store's ``probe_type`` attribute (from the SpikeGLX ``.meta``); other probes
(NP2, Open Ephys, unknown) record wide-band and are filtered, and so is an NP1 ``.lf`` stream
(2.5 kHz: factor 1, the band-pass only).

No ADC phase-shift correction: the NP2/NP1 multiplexing delay (< 1 sample at 30 kHz, 33 µs)
is under 4 degrees of phase at 300 Hz, and the sample kept is the raw sample at ``factor * k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import scipy.signal
from pydantic import Field, field_validator

from neuropool.errors import ConfigError
from neuropool.io import timeseries
from neuropool.tasks.base import RUN_ONLY, Params, Resources, Task, TaskContext
from neuropool.tasks.preprocessing.base import channel_major

__all__ = [
    "HARDWARE_HIGHPASSED", "Lfp", "LfpDesign", "LfpParams",
    "decimation_factor", "design", "hardware_highpassed", "lfp_block", "lowpass_decimate",
]

#: Probe types whose AP stream is high-passed at 300 Hz in hardware (no LFP in it).
HARDWARE_HIGHPASSED = ("NP1", "3A")
#: Streams sampled at least this fast are AP streams (NP1's LF stream runs at 2.5 kHz).
AP_STREAM_MIN_RATE = 10_000.0
#: Context of the low-pass half, in periods of the band's upper edge (33 ms at 300 Hz): its
#: slowest pole decays with a 1.1 ms time constant, so the truncation error is below 1e-12.
LOWPASS_PERIODS = 10.0
#: Output seconds per piece of the low-pass half (bounds the raw rows held at once).
PIECE_S = 2.0
#: Channels filtered together (bounds the float64 copies).
CHANNEL_GROUP = 64
#: Smallest ``band[1] / band[0]``: the two halves of narrower bands are not separable (their
#: response error grows from 2e-8 at 600 to 4e-5 at 6, and odd orders split conjugate poles).
MIN_BAND_RATIO = 5.0
#: How far ``fs / target_rate`` may be from an integer, relatively.
FACTOR_TOLERANCE = 1e-3


def hardware_highpassed(probe_type: str, sampling_frequency: float) -> bool:
    """Whether a stream is an NP1/3A AP stream, high-passed at 300 Hz in hardware.

    Parameters
    ----------
    probe_type : str
        The raw store's ``probe_type`` attribute.
    sampling_frequency : float
        The stream's rate (an NP1 ``.lf`` stream at 2.5 kHz holds the LFP and is not one).

    Returns
    -------
    bool
    """
    return probe_type in HARDWARE_HIGHPASSED and sampling_frequency >= AP_STREAM_MIN_RATE


class LfpParams(Params):
    """Parameters of :class:`Lfp`."""

    band: tuple[float, float] = Field((0.5, 300.0), description="pass band, Hz")
    target_rate: float = Field(2500.0, gt=0, description="LFP sampling rate wanted, Hz")
    order: int = Field(3, ge=1, le=8, description="Butterworth order of the band-pass (per pass)")
    margin_s: float = Field(10.0, ge=0, le=60, description="context each side for the high-pass half, s")
    chunk_seconds: float = Field(10.0, gt=0, le=600, description="output zarr chunk length, s")
    chunks_per_block: int = Field(3, ge=1, le=1000, description="zarr chunks computed per work block")
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    on_np1: Literal["skip", "fail"] = Field(
        "skip", description="NP1/3A AP streams hold no LFP: write an empty store, or fail")
    enabled: bool = Field(True, description="false leaves the node out of the standard graph",
                          json_schema_extra=RUN_ONLY)

    @field_validator("band")
    @classmethod
    def _band_order(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ValueError(f"band must be [low, high] Hz with 0 < low < high, got {list(band)}")
        return band


def decimation_factor(sampling_frequency: float, target_rate: float, name: str = "lfp.target_rate") -> int:
    """The integer decimation from ``sampling_frequency`` to about ``target_rate``.

    Parameters
    ----------
    sampling_frequency : float
        Raw samples per second.
    target_rate : float
        Wanted LFP rate.
    name : str
        The parameter's name in error messages.

    Returns
    -------
    int
        ``round(sampling_frequency / target_rate)`` (12 for 30 kHz -> 2.5 kHz).

    Raises
    ------
    ConfigError
        When the ratio is not within 0.1 % of an integer >= 1.
    """
    ratio = sampling_frequency / target_rate
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > FACTOR_TOLERANCE * factor:
        near = sorted({max(1, math.floor(ratio)), max(1, math.ceil(ratio))})
        raise ConfigError(
            f"{name} {target_rate:g} Hz does not divide the sampling frequency "
            f"{sampling_frequency:g} Hz by an integer (ratio {ratio:.4f}); decimation keeps every "
            f"n-th sample, so set {name} to fs / n, e.g. "
            + " or ".join(f"{sampling_frequency / n:g}" for n in near))
    return int(factor)


@dataclass(frozen=True, eq=False)
class LfpDesign:
    """The two halves of the band-pass and where they run (see the module docstring).

    Attributes
    ----------
    sampling_frequency : float
        Raw samples per second.
    factor : int
        Decimation factor; the LFP rate is ``sampling_frequency / factor``.
    lowpass : numpy.ndarray
        Second-order sections of the low-pass half, at the raw rate.
    highpass : numpy.ndarray
        Second-order sections of the high-pass half, at the LFP rate.
    lowpass_margin : int
        Raw samples of context for the low-pass half.
    """

    sampling_frequency: float
    factor: int
    lowpass: np.ndarray
    highpass: np.ndarray
    lowpass_margin: int

    @property
    def rate(self) -> float:
        """LFP samples per second."""
        return self.sampling_frequency / self.factor

    def n_out(self, n_raw: int) -> int:
        """LFP samples of a recording of ``n_raw`` raw samples: ``ceil(n_raw / factor)``."""
        return -(-int(n_raw) // self.factor)


@lru_cache(maxsize=16)
def _halves(low: float, high: float, order: int, fs: float, factor: int) -> tuple[np.ndarray, np.ndarray]:
    z, p, k = scipy.signal.butter(order, [low, high], btype="bandpass", fs=fs, output="zpk")
    slow = np.argsort(np.abs(1.0 - p))  # the poles nearest z = 1 belong to the low edge
    p_high, p_low = p[slow[:order]], p[slow[order:]]
    z_high, z_low = z[z.real > 0], z[z.real < 0]  # zeros at DC / at Nyquist
    k_low = float(np.real(np.prod(1.0 - p_low) / np.prod(1.0 - z_low)))  # unit gain at DC
    lowpass = scipy.signal.zpk2sos(z_low, p_low, k_low)
    # the high-pass half at fs / factor: matched-z poles, gain matched at the band's centre
    p_moved = p_high ** factor
    centre = math.sqrt(low * high)

    def gain(zeros: np.ndarray, poles: np.ndarray, rate: float) -> float:
        w = np.exp(2j * np.pi * centre / rate)
        return float(np.abs(np.prod(w - zeros) / np.prod(w - poles)))

    k_high = (k / k_low) * gain(z_high, p_high, fs) / gain(z_high, p_moved, fs / factor)
    highpass = scipy.signal.zpk2sos(z_high, p_moved, k_high)
    return lowpass, highpass


def design(params: LfpParams, sampling_frequency: float, *, band_name: str = "lfp.band",
           rate_name: str = "lfp.target_rate") -> LfpDesign:
    """Check the parameters against the recording and design the two filter halves.

    Parameters
    ----------
    params : LfpParams
        Band, order, target rate.
    sampling_frequency : float
        Raw samples per second.
    band_name, rate_name : str
        The names of the band's upper edge and of the rate in error messages.

    Returns
    -------
    LfpDesign

    Raises
    ------
    ConfigError
        When the rate does not divide by an integer, the band's upper edge is above a quarter
        of the LFP rate (the low-pass half would no longer stop what folds back), or the band
        is narrower than ``MIN_BAND_RATIO``.
    """
    fs = float(sampling_frequency)
    factor = decimation_factor(fs, params.target_rate, rate_name)
    low, high = params.band
    out_rate = fs / factor
    if high > out_rate / 4:
        raise ConfigError(
            f"{band_name} upper edge {high:g} Hz is above a quarter of the LFP rate {out_rate:g} Hz: "
            f"what lies above the LFP Nyquist frequency ({out_rate / 2:g} Hz) would fold back "
            f"into the band; lower it to at most {out_rate / 4:g} Hz or raise {rate_name}")
    if high < MIN_BAND_RATIO * low:
        raise ConfigError(
            f"{band_name} [{low:g}, {high:g}] Hz is too narrow: the filter runs its low edge at the "
            f"LFP rate and its high edge at the raw rate, which needs an upper edge at least "
            f"{MIN_BAND_RATIO:g} times the lower one; widen the band")
    lowpass, highpass = _halves(float(low), float(high), int(params.order), fs, factor)
    margin = math.ceil(LOWPASS_PERIODS * fs / high)
    return LfpDesign(fs, factor, lowpass.copy(), highpass.copy(), margin)


def _filtfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Forward-backward filter of channel-major ``x`` along rows, scipy's default edge rule
    (padding shortened for tiny inputs)."""
    n = x.shape[1]
    if n < 2:
        return x
    n_taps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return scipy.signal.sosfiltfilt(sos, x, axis=1, padlen=min(3 * n_taps, n - 1))


def lowpass_decimate(
    read: Any, first: int, stop: int, n_raw: int, gains_uv: np.ndarray, dsg: LfpDesign
) -> np.ndarray:
    """The low-pass half of the band at raw samples ``factor * k`` for ``k`` in ``[first, stop)``.

    Parameters
    ----------
    read : callable
        ``read(a, b)`` -> ``(b - a, n_channels)`` raw samples ``[a, b)`` of the ephys channels.
    first, stop : int
        Range of decimated indices.
    n_raw : int
        Samples in the raw recording.
    gains_uv : numpy.ndarray
        ``(n_channels,)`` µV per raw unit.
    dsg : LfpDesign
        The filter halves.

    Returns
    -------
    numpy.ndarray
        float64 µV, channel-major ``(n_channels, stop - first)``.
    """
    q, margin = dsg.factor, dsg.lowpass_margin
    gains = np.asarray(gains_uv, dtype=np.float64)
    out = np.empty((gains.size, stop - first))
    piece = max(1, round(PIECE_S * dsg.rate))
    for a in range(first, stop, piece):
        b = min(a + piece, stop)
        r0, r1 = max(0, q * a - margin), min(n_raw, q * (b - 1) + margin + 1)
        raw = read(r0, r1)
        for g in range(0, gains.size, CHANNEL_GROUP):
            group = slice(g, g + CHANNEL_GROUP)
            x = channel_major(raw[:, group], np.float64)
            x *= gains[group, None]
            y = _filtfilt(dsg.lowpass, x)
            out[group, a - first : b - first] = y[:, q * a - r0 :: q][:, : b - a]
    return out


def lfp_block(
    read: Any, start: int, stop: int, n_raw: int, gains_uv: np.ndarray, dsg: LfpDesign,
    margin: int,
) -> np.ndarray:
    """LFP samples ``[start, stop)`` (at the LFP rate), computed with ``margin`` of context.

    Parameters
    ----------
    read : callable
        ``read(a, b)`` -> ``(b - a, n_channels)`` raw samples of the ephys channels.
    start, stop : int
        Range of LFP samples.
    n_raw : int
        Samples in the raw recording.
    gains_uv : numpy.ndarray
        ``(n_channels,)`` µV per raw unit.
    dsg : LfpDesign
        The filter halves.
    margin : int
        LFP samples of context on each side for the high-pass half (clipped to the recording).

    Returns
    -------
    numpy.ndarray
        float32 µV ``(stop - start, n_channels)``, C-contiguous.
    """
    n_out = dsg.n_out(n_raw)
    first, last = max(0, start - margin), min(n_out, stop + margin)
    low = lowpass_decimate(read, first, last, n_raw, gains_uv, dsg)
    out = np.empty((stop - start, low.shape[0]), dtype=np.float32)
    for g in range(0, low.shape[0], CHANNEL_GROUP):
        group = slice(g, g + CHANNEL_GROUP)
        out[:, group] = _filtfilt(dsg.highpass, low[group])[:, start - first : stop - first].T
    return out


def lfp_source(ctx: TaskContext) -> str:
    """The store that holds a probe's LFP: its separate LF stream if it has one, else its raw one."""
    return ctx.inputs.get("ephys.rawLf") or ctx.inputs["ephys.raw"]


class Lfp(Task):
    """Band-pass (0.5-300 Hz) and decimate (to 2.5 kHz) the ephys channels of the raw store."""

    name = "lfp"
    version = "2"
    Params = LfpParams
    inputs = ("ephys.raw",)
    optional_inputs = ("ephys.rawLf",)  # a separate LF stream (NP1, 3A): read instead
    outputs = ("ephys.lfp",)
    default_resources = Resources(cpus=1)

    def resources(self) -> Resources:
        """One core; memory estimated for 384 channels (see the module docstring)."""
        p = self.params
        rows = (p.chunk_seconds * p.chunks_per_block + 2 * p.margin_s) * p.target_rate
        out_rows = p.chunk_seconds * p.chunks_per_block * p.target_rate
        gb = (rows * 384 * 8 * 1.5 + out_rows * 384 * 4) / 1e9 + 0.1
        return Resources(cpus=1, memory_gb=round(gb, 2))

    def setup(self, ctx: TaskContext) -> list[Any]:
        raw = timeseries.TimeseriesStore(lfp_source(ctx), ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        dsg = design(self.params, raw.sampling_frequency)
        probe_type = str(raw.attrs.get("probe_type", ""))
        skipped = ""
        if hardware_highpassed(probe_type, raw.sampling_frequency):
            reason = (f"{probe_type} probe: its AP stream is high-passed at 300 Hz in hardware and "
                      "holds no LFP (the LFP is in the separate .lf stream)")
            if self.params.on_np1 == "fail":
                raise ConfigError(f"{ctx.node}: {reason}; set lfp.on_np1: skip to write an empty "
                                  "store instead, or lfp.enabled: false to leave the task out")
            skipped = reason
        n_out = 0 if skipped else dsg.n_out(raw.n_samples)
        chunk = max(1, round(self.params.chunk_seconds * dsg.rate))
        timeseries.create(
            ctx.outputs["ephys.lfp"],
            n_samples=n_out,
            channel_ids=[raw.channel_ids[i] for i in keep],
            dtype="float32",
            chunk_samples=chunk,
            coords={
                "x": raw.coord("x")[keep], "y": raw.coord("y")[keep], "shank": raw.coord("shank")[keep],
                "gain_uv": np.ones(len(keep)), "adc_shift": np.zeros(len(keep)),
                "is_sync": np.zeros(len(keep), dtype=bool),
            },
            attrs={
                "sampling_frequency": dsg.rate,
                "units": "uV",
                "source": lfp_source(ctx).split("@")[-1],
                "probe_type": probe_type,
                "decimation_factor": dsg.factor,
                "source_sampling_frequency": dsg.sampling_frequency,
                "time_origin": "sample k is raw sample decimation_factor * k",
                "lfp": self.params.model_dump(mode="json", exclude={"enabled"}),
                **({"skipped": skipped} if skipped else {}),
            },
            compression=self.params.compression,
            storage_options=ctx.storage_options,
        )
        if skipped:
            return [(0, 0)]
        return timeseries.block_ranges(n_out, chunk, self.params.chunks_per_block)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        start, stop = block
        if stop <= start:
            return {"samples": 0, "sum_sq": 0.0}
        raw = timeseries.TimeseriesStore(lfp_source(ctx), ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        dsg = design(self.params, raw.sampling_frequency)
        margin = math.ceil(self.params.margin_s * dsg.rate)
        out = lfp_block(lambda a, b: raw.read(a, b, keep), start, stop, raw.n_samples,
                        raw.coord("gain_uv")[keep], dsg, margin)
        timeseries.write_block(ctx.outputs["ephys.lfp"], start, out, ctx.storage_options)
        return {"samples": int(out.shape[0]), "sum_sq": float(np.einsum("ij,ij->", out, out, dtype=np.float64))}

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        timeseries.finalize(ctx.outputs["ephys.lfp"], ctx.storage_options)
        store = timeseries.TimeseriesStore(ctx.outputs["ephys.lfp"], ctx.storage_options)
        written = sum(r["samples"] for r in results)
        if written != store.n_samples:
            raise RuntimeError(f"{ctx.node}: wrote {written} LFP samples, expected {store.n_samples}")
        n = store.n_samples * len(store.channel_ids)
        summary: dict[str, Any] = {
            "n_samples": store.n_samples,
            "n_channels": len(store.channel_ids),
            "sampling_frequency": store.sampling_frequency,
            "decimation_factor": int(store.attrs["decimation_factor"]),
            "rms_uv": round(float(np.sqrt(sum(r["sum_sq"] for r in results) / n)), 3) if n else None,
        }
        if "skipped" in store.attrs:
            summary["skipped"] = store.attrs["skipped"]
        return summary
