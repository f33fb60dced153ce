"""ADC phase-shift correction: delay each channel by its sub-sample ADC lag.

Neuropixels multiplexes channels through shared ADCs, so channel ``c`` is sampled
``adc_shifts[c]`` sample periods after the first channel of its group. The fix (SpikeGLX's
``tshift``, IBL's ``fshift``, SpikeInterface's ``phase_shift``) is a fractional delay in the
frequency domain, ``y_c[n] = x_c[n - adc_shifts[c]]``: SpikeInterface computes
``irfft(rfft(x) * exp(-2j pi f s))`` on each chunk plus 40 ms margins, the margins tapered
with a raised cosine (Hann) ramp inside the recording and zero-padded at its edges.

Two methods, both applied in the frequency domain on a block padded to a fast FFT length
(``scipy.fft.next_fast_len``; an unpadded 33,400-sample FFT has the prime factor 167):

``"fir"`` (default)
    Linear convolution with a windowed sinc ``sinc(k - s) * w(k - s)``, ``|k| <= K`` where
    ``K`` is the margin (1,200 samples = 40 ms) and ``w`` a Kaiser window (beta 3) centred on
    the sinc's peak (an integer shift is an exact unit impulse). The kernel is finite, so every
    output sample depends on exactly ``[n - K, n + K]`` and the result does not depend on the
    block size (measured: 3e-6 of the RMS for the whole chain, float32 rounding). Its response
    differs from the exact delay ``exp(-2j pi f s)`` by at most 1e-4 below 10 kHz, 5e-4 below
    14 kHz and 2e-2 within 100 Hz of Nyquist (NP1 shifts, 30 kHz, 40 ms).
``"taper"``
    SpikeInterface's operator: exact circular delay of the block with the Hann-tapered margins.
    Because the exact kernel decays as ``1/n``, the result depends on where blocks are cut and on
    the FFT length, by ~``sigma_nyquist / sqrt(margin)`` (0.09 of the RMS at 40 ms on white
    noise, decreasing only as ``margin ** -0.5``: no margin reaches 1e-4 on white noise).

Recording edges (both methods): the signal is zero-padded by at least the margin, as
SpikeInterface's ``add_zeros=True`` does, and real samples are never tapered. The DC offset
therefore rings at the edges exactly as in SpikeInterface (up to 0.1 * DC / k at ``k`` samples
from the edge); the FIR stops the ringing at ``K``.

The transform runs in float64 (as SpikeInterface's does): raw Neuropixels DC offsets of
hundreds of µV would cost ~1e-5 of the RMS in float32 rounding. Kernel spectra are computed
once per distinct shift (NP1: 13 for 384 channels) and cached per FFT length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.fft

from neuropool.errors import ConfigError

from .base import ChannelInfo, Step, channel_major, margin_samples

__all__ = ["PhaseShift", "fractional_delay"]

DEFAULT_MARGIN_MS = 40.0
KAISER_BETA = 3.0  # window of the FIR kernel (see the module docstring)
_CACHE_MAX_VALUES = 2**21  # cache kernel spectra up to 32 MB each


@lru_cache(maxsize=32)
def _hann_ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp of ``n`` samples from 0 (included) towards 1 (excluded)."""
    ramp = np.sin(0.5 * np.pi * np.arange(n) / n) ** 2
    ramp.setflags(write=False)
    return ramp


def _sinc_spectra(shifts: tuple[float, ...], half_width: int, n_fft: int) -> np.ndarray:
    """rfft of the windowed sinc kernels ``sinc(k - s) * w(k - s)``, ``|k| <= half_width``,
    placed circularly on ``n_fft`` points: ``(len(shifts), n_fft // 2 + 1)`` complex128.

    ``w`` is a Kaiser window of half-length ``half_width + 1`` centred on the sinc's peak, so
    an integer shift gives an exact unit impulse."""
    k = np.arange(-half_width, half_width + 1)
    t = k[np.newaxis, :] - np.asarray(shifts, dtype=np.float64)[:, np.newaxis]
    inside = np.clip(1.0 - (t / (half_width + 1)) ** 2, 0.0, None)
    taps = np.sinc(t) * np.i0(KAISER_BETA * np.sqrt(inside)) / np.i0(KAISER_BETA)
    kernels = np.zeros((len(shifts), n_fft), dtype=np.float64)
    kernels[:, k % n_fft] = taps
    return scipy.fft.rfft(kernels, axis=1)


@lru_cache(maxsize=4)
def _sinc_spectra_cached(shifts: tuple[float, ...], half_width: int, n_fft: int) -> np.ndarray:
    spectra = _sinc_spectra(shifts, half_width, n_fft)
    spectra.setflags(write=False)
    return spectra


def _delay_spectra(shifts: np.ndarray, n_fft: int, half_width: int | None) -> np.ndarray:
    """Frequency responses ``(len(shifts), n_fft // 2 + 1)``: the exact circular delay
    ``exp(-2j pi f s)`` when ``half_width`` is None, else the windowed-sinc FIR."""
    if half_width is None:
        omega = (2.0 * np.pi / n_fft) * np.arange(n_fft // 2 + 1, dtype=np.float64)
        return np.exp(-1j * np.outer(shifts, omega))
    key = (tuple(float(v) for v in shifts), int(half_width), int(n_fft))
    if len(shifts) * (n_fft // 2 + 1) <= _CACHE_MAX_VALUES:  # NP1: 13 shifts, ~4 MB per entry
        return _sinc_spectra_cached(*key)
    return _sinc_spectra(*key)


def fractional_delay(
    x: np.ndarray,
    shifts: np.ndarray,
    n_fft: int | None = None,
    half_width: int | None = None,
) -> np.ndarray:
    """Delay each row of the channel-major ``x`` by ``shifts`` samples, in the frequency domain.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n_channels, n_samples)`` float64 signal (channel-major: the FFT runs along rows).
    shifts : numpy.ndarray
        ``(n_channels,)`` delays in samples (positive delays: ``y[n] = x[n - s]``).
    n_fft : int, optional
        FFT length (>= n_samples); ``x`` is zero-padded to it. Default: a fast length.
    half_width : int, optional
        None: exact circular delay ``exp(-2j pi f s)`` on ``n_fft`` points (SpikeInterface's
        operator). An int ``K``: linear convolution with the Kaiser-windowed ``sinc(k - s)``,
        ``|k| <= K``, exact on the output samples that are at least ``K`` from a circular wrap.

    Returns
    -------
    numpy.ndarray
        float64, same shape as ``x``.
    """
    n = x.shape[1]
    if n_fft is None:
        n_fft = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(x, n=n_fft, axis=1)
    unique, index = np.unique(np.asarray(shifts, dtype=np.float64), return_inverse=True)
    response = _delay_spectra(unique, n_fft, half_width)
    for row, which in zip(spectrum, index.reshape(-1), strict=True):
        row *= response[which]  # in place, row by row: no (channels x frequencies) temporary
    return scipy.fft.irfft(spectrum, n=n_fft, axis=1, overwrite_x=True)[:, :n]


@dataclass(frozen=True)
class PhaseShift(Step):
    """Correct the ADC multiplexing delay of every channel (``info.adc_shifts``).

    Parameters
    ----------
    margin_ms : float, optional
        Context on each side of a block, in ms (default 40 ms, as SpikeInterface); with
        ``method="fir"`` it is also the half-width of the sinc kernel.
    method : {"fir", "taper"}
        ``"fir"``: truncated-sinc FIR applied by FFT; output independent of the block size to
        float rounding. ``"taper"``: SpikeInterface's exact circular delay of a Hann-tapered
        block; reproduces a SpikeInterface run cut at the same block boundaries, but blocks
        disagree near Nyquist (see the module docstring).
    """

    margin_ms: float | None = None
    method: Literal["fir", "taper"] = "fir"

    def margin(self, sampling_frequency: float) -> int:
        """Samples of context needed on each side (see the module docstring).

        Parameters
        ----------
        sampling_frequency : float
            Samples per second.

        Returns
        -------
        int
        """
        ms = DEFAULT_MARGIN_MS if self.margin_ms is None else self.margin_ms
        return margin_samples(ms, sampling_frequency)

    def check(self, info: ChannelInfo) -> None:
        """Reject a margin shorter than one sample and unknown methods.

        Parameters
        ----------
        info : ChannelInfo
            The recording's channels.
        """
        if self.method not in ("fir", "taper"):
            raise ConfigError(f"phase_shift_method must be 'fir' or 'taper', got {self.method!r}")
        if self.margin(info.sampling_frequency) < 1:
            raise ConfigError(
                f"margin_ms={self.margin_ms!r} is shorter than one sample at "
                f"{info.sampling_frequency:g} Hz; the phase shift needs context"
            )

    def frequency_response(self, n_fft: int, info: ChannelInfo) -> tuple[np.ndarray, np.ndarray] | None:
        """The windowed-sinc kernels' spectra on ``n_fft`` points (``method="fir"`` only: the
        tapered method depends on the block and is no fixed filter).

        Parameters
        ----------
        n_fft : int
            FFT length.
        info : ChannelInfo
            Provides ``adc_shifts`` and the sampling frequency.

        Returns
        -------
        (rows, index) or None
            One row per distinct ADC shift, and each channel's row.
        """
        if self.method != "fir":
            return None
        self.check(info)
        unique, index = np.unique(info.adc_shifts, return_inverse=True)
        rows = _delay_spectra(unique, n_fft, self.margin(info.sampling_frequency))
        return rows, index.reshape(-1)

    def apply(
        self,
        block: np.ndarray,
        info: ChannelInfo,
        *,
        at_start: bool = False,
        at_end: bool = False,
    ) -> np.ndarray:
        """Delay every channel of ``block`` by its ADC shift.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_samples, n_channels)`` float32 µV, context rows included.
        info : ChannelInfo
            Provides ``adc_shifts`` and ``sampling_frequency``.
        at_start, at_end : bool
            Whether the block begins / ends at the recording's edge (zero padding there,
            instead of tapering or discarding the context).

        Returns
        -------
        numpy.ndarray
            float32, same shape as ``block`` (a transposed view of a channel-major array).
        """
        self.check(info)
        shifts = info.adc_shifts
        if not np.any(shifts):
            return np.asarray(block, dtype=np.float32)
        n = block.shape[0]
        m = self.margin(info.sampling_frequency)
        # A recording edge is zero-padded by at least `m` samples: the padding is appended at
        # the end, which the circular FFT sees on both sides of the data.
        pad = m * (int(at_start) + int(at_end))
        n_fft = scipy.fft.next_fast_len(max(n + pad, 2 * m + 1), real=True)
        x = channel_major(block, np.float64, n_samples=n_fft)
        if self.method == "taper":
            k = min(m, n)
            if not at_start:
                x[:, :k] *= _hann_ramp(m)[:k]
            if not at_end:
                x[:, n - k : n] *= _hann_ramp(m)[:k][::-1]
        half_width = m if self.method == "fir" else None
        y = fractional_delay(x, shifts, n_fft, half_width)
        return y[:, :n].astype(np.float32).T
