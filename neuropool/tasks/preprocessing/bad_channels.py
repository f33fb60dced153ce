"""IBL bad-channel detection: dead, noisy and outside-the-brain channels.

The algorithm of the International Brain Laboratory (``ibldsp.voltage.detect_bad_channels``,
also SpikeInterface's ``detect_bad_channels(method="coherence+psd")``). For one segment of
data, with the channels of a shank ordered by depth (bottom first), four features per channel:

``xcor_hf``
    Similarity with the median trace ``m`` (median across channels of the mean-removed data,
    itself mean-removed): ``r_c = <x_c, m> / <m, m>``, about 1 for a channel that carries the
    probe's common signal. The trend along the probe (median filter over ``n_neighbors`` = 11
    channels, edges extended with the end values) is subtracted, so good channels sit near 0.
``xcor_lf``
    The same similarity computed on the data high-passed at 300 Hz (Butterworth, order 3,
    forward-backward), then only its trend is kept, minus 1: about 0 inside the brain, about -1
    where a stretch of channels no longer shares the signal of the rest.
``psd_hf``
    Mean Welch power spectral density (Hann windows of 256 samples, half overlap) above 0.8 of
    the Nyquist frequency, in µV²/Hz.
``rms_raw``
    RMS of the mean-removed segment, µV (for display; not used for labels).

Labels, IBL's codes and priorities (a later rule overwrites an earlier one): outside
(``OUTSIDE = 3``) for the contiguous block of channels at the top of the shank with
``xcor_lf < -0.75``, then dead (``DEAD = 1``) where ``xcor_hf < -0.5``, then noisy
(``NOISY = 2``) where ``psd_hf > 0.02 µV²/Hz`` or ``xcor_hf > 1``.

Deliberate differences from SpikeInterface, which reimplements the method: SpikeInterface
computes the coherence once, on high-passed data, takes the trend with a median filter that
shrinks at the ends of the probe instead of extending the end values, uses 10 ms Welch windows
and gives outside the highest priority (outside > noisy > dead). This module follows IBL on
every point; on clear-cut channels the labels agree (see ``tests/tasks/test_bad_channels.py``).

What data the detection sees
----------------------------
IBL runs the detection on raw AP-band samples (``detect_bad_channels_cbin``: 10 segments of
0.33 s spread over the file, no filtering, no phase shift); SpikeInterface high-passes the
recording at 300 Hz when it is not already filtered, and the AIND pipeline detects on the
phase-shifted, high-passed recording. :func:`detect_bad_channels` high-passes each segment
(``highpass_freq``, default 300 Hz, Butterworth order 3 forward-backward, with the high-pass
step's 5-period context read on each side) and does not correct the phase shift:

* the high-pass removes the LFP and drift of wide-band recordings (Neuropixels 2.0, Open
  Ephys), hundreds of µV coherent across the probe that would otherwise dominate the median
  trace and ``xcor_hf``; on NP1 AP-band data, high-passed at 300 Hz by the probe itself, it
  changes little. ``psd_hf`` (above 12 kHz) and ``xcor_lf`` (computed on high-passed data
  anyway) are unaffected. ``highpass_freq=None`` reproduces IBL's raw-data input exactly.
* the phase shift delays each channel by less than one sample (33 µs at 30 kHz). A delay does
  not change the power spectrum, and the zero-lag similarity with the median trace, whose
  energy lies mostly below a few kHz, hardly moves: measured on the synthetic data of the tests
  with NP1 ADC shifts, phase-shifting first changes ``xcor_hf`` by at most 0.011 and
  ``xcor_lf`` by 0.008 (the thresholds sit 0.5 and 0.25 away from good channels) and
  ``psd_hf`` by 0.7 %, and no label. Skipping it saves a 40 ms context read and an FFT per
  segment, and keeps the input IBL's.

Segments
--------
:func:`segment_starts` spreads ``n_segments`` segments evenly over the recording, each centred
in one of ``n_segments`` equal parts (never the very first or last samples, which often hold
the probe's settling transient), deterministically. Defaults: 10 segments of 1 s. Ten segments
as in IBL; 1 s instead of IBL's 0.33 s gives each segment 233 Welch windows (``psd_hf`` of
white noise scatters by 1.9 % between channels, against 3.2 % for 0.33 s) and 30,000 samples
for the similarities, so that a vote is rarely split by chance. Cost, 384 channels on one busy
core: 1.4 s per segment including the high-pass, 14 s per recording, once (preprocessing
itself takes about 0.75 s per second of recording). The labels are a majority vote over the
segments (ties go to the lower code, good first, as ``scipy.stats.mode`` breaks them in IBL and
SpikeInterface).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.fft
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neuropool.errors import ConfigError, RawDataError

from .base import DEAD, GOOD, NOISY, OUTSIDE, ChannelInfo, channel_major
from .chain import Chain, ReadFn
from .highpass import HighPass, butter_highpass_sos

__all__ = [
    "FEATURE_NAMES",
    "BadChannelParams",
    "channel_features",
    "depth_order",
    "detect_bad_channels",
    "label_channels",
    "segment_length",
    "segment_starts",
]

#: Keys of the feature dictionaries, in IBL's names.
FEATURE_NAMES = ("xcor_hf", "xcor_lf", "psd_hf", "rms_raw")
#: Welch window length in samples (scipy's default, which IBL uses).
WELCH_NPERSEG = 256
#: Cut-off (Hz) and order of the high-pass applied inside the features before ``xcor_lf``.
COHERENCE_HIGHPASS_HZ = 300.0
COHERENCE_HIGHPASS_ORDER = 3
#: Order of the high-pass applied to each segment before the features (``highpass_freq``).
SEGMENT_HIGHPASS_ORDER = 3


class BadChannelParams(BaseModel):
    """Parameters of :func:`detect_bad_channels` (field names are its keyword arguments).

    Attributes
    ----------
    n_segments : int
        Segments analysed, spread evenly over the recording (>= 1); labels are their majority
        vote.
    segment_seconds : float
        Length of each segment in seconds (> 0); clipped to the recording's length.
    highpass_freq : float or None
        High-pass cut-off in Hz applied to each segment before the features (Butterworth,
        order 3, forward-backward); None analyses the raw samples, as IBL does.
    dead_threshold : float
        Channels with ``xcor_hf`` below this (< 0) are dead.
    noisy_coherence_threshold : float
        Channels with ``xcor_hf`` above this (> 0) are noisy.
    psd_hf_threshold : float
        Channels whose mean PSD above 0.8 Nyquist exceeds this (µV²/Hz, > 0) are noisy.
    outside_threshold : float
        The contiguous block of channels at the top of a shank with ``xcor_lf`` below this
        (< 0) is outside the brain.
    n_neighbors : int
        Channels in the median filter that gives the coherence trend (odd, >= 3).

    The sign constraints keep the thresholds ordered around the values of good channels:
    ``dead_threshold < 0 < noisy_coherence_threshold`` (``xcor_hf`` of good channels is about
    0) and ``outside_threshold < 0`` (``xcor_lf`` of channels in the brain is about 0).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_segments: int = Field(default=10, ge=1, le=10_000)
    segment_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    highpass_freq: float | None = Field(default=300.0, gt=0, allow_inf_nan=False)
    dead_threshold: float = Field(default=-0.5, lt=0, allow_inf_nan=False)
    noisy_coherence_threshold: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    psd_hf_threshold: float = Field(default=0.02, gt=0, allow_inf_nan=False)
    outside_threshold: float = Field(default=-0.75, lt=0, allow_inf_nan=False)
    n_neighbors: int = Field(default=11, ge=3, le=1001)

    @field_validator("n_neighbors")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd (a centred median filter), got {value}; use {value + 1}")
        return value


# -- features of one segment ------------------------------------------------------------------


def _median_filter(values: np.ndarray, size: int) -> np.ndarray:
    """Centred running median over ``size`` values, the ends extended with the end values
    (IBL's ``detrend``); NaN in a window gives NaN."""
    half = size // 2
    padded = np.pad(values, half, mode="edge")
    return np.median(sliding_window_view(padded, size), axis=1)


def _median_over_channels(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=0)`` (bit-identical for finite data), about twice as fast for 384
    rows: one partition around the upper middle row, the lower middle one being the maximum of
    the lower half."""
    n = x.shape[0]
    half = n // 2
    part = np.partition(x, half, axis=0)
    if n % 2:
        return part[half]
    return (part[:half].max(axis=0) + part[half]) / 2.0


def _similarity(x: np.ndarray) -> np.ndarray:
    """``<x_c, m> / <m, m>`` for each row of ``x`` (channels x samples), ``m`` the median row,
    mean-removed; NaN for every channel when ``m`` is flat."""
    ref = _median_over_channels(x) if np.isfinite(x).all() else np.median(x, axis=0)
    ref -= ref.mean()
    energy = float(ref @ ref)
    if not energy > 0:
        return np.full(x.shape[0], np.nan)
    return (x @ ref) / energy  # ref sums to 0, so the rows' own means do not matter


def _psd_high(x: np.ndarray, fs: float, fraction: float, rows: int = 32) -> np.ndarray:
    """Mean Welch PSD of each row above ``fraction`` of Nyquist (density, one-sided).

    The same estimate as ``scipy.signal.welch(x, fs, nperseg=256)`` (periodic Hann windows of
    ``min(256, n)`` samples, half overlap, each window's mean removed, the mean periodogram)
    restricted to the bins needed, 3x faster: only those bins are detrended and squared, a
    few rows at a time to bound the memory.
    """
    n_rows, n = x.shape
    nperseg = min(WELCH_NPERSEG, n)
    step = nperseg - nperseg // 2
    window = scipy.signal.get_window("hann", nperseg)
    freqs = scipy.fft.rfftfreq(nperseg, 1.0 / fs)
    bins = np.flatnonzero(freqs > fraction * fs / 2.0)
    if bins.size == 0:
        return np.full(n_rows, np.nan)
    one_sided = np.where((bins == 0) | (2 * bins == nperseg), 1.0, 2.0)
    scale = one_sided / (fs * float(window @ window))
    window_spectrum = scipy.fft.rfft(window)[bins]  # removing a window's mean c subtracts c * this
    out = np.empty(n_rows)
    for r in range(0, n_rows, rows):
        frames = sliding_window_view(x[r : r + rows], nperseg, axis=1)[:, ::step]
        spectrum = scipy.fft.rfft(frames * window, axis=-1)[..., bins]
        spectrum -= frames.mean(axis=-1)[..., np.newaxis] * window_spectrum
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        out[r : r + rows] = (power.mean(axis=1) * scale).mean(axis=1)
    return out


def _features_channel_major(
    x: np.ndarray, sampling_frequency: float, n_neighbors: int, nyquist_fraction: float
) -> dict[str, np.ndarray]:
    """Features of ``x``, float64 ``(n_channels, n_samples)``, modified in place."""
    fs = float(sampling_frequency)
    n_channels, n_samples = x.shape
    if n_samples < 2:
        raise RawDataError(f"a segment needs at least 2 samples for its features, got {n_samples}")
    if n_channels == 0:
        return {name: np.zeros(0) for name in FEATURE_NAMES}
    x -= x.mean(axis=1, keepdims=True)
    similarity = _similarity(x)
    sos = butter_highpass_sos(COHERENCE_HIGHPASS_HZ, COHERENCE_HIGHPASS_ORDER, fs)
    n_taps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    padlen = min(3 * n_taps, n_samples - 1)  # scipy's default, shortened for short segments
    similarity_hp = _similarity(scipy.signal.sosfiltfilt(sos, x, axis=1, padlen=padlen))
    psd_hf = _psd_high(x, fs, nyquist_fraction)
    return {
        "xcor_hf": similarity - _median_filter(similarity, n_neighbors),
        "xcor_lf": _median_filter(similarity_hp, n_neighbors) - 1.0,
        "psd_hf": psd_hf,
        "rms_raw": np.sqrt(np.mean(np.square(x), axis=1)),
    }


def channel_features(
    segment_uv: np.ndarray,
    sampling_frequency: float,
    *,
    n_neighbors: int = 11,
    nyquist_fraction: float = 0.8,
) -> dict[str, np.ndarray]:
    """IBL's bad-channel features of one segment (see the module docstring).

    Parameters
    ----------
    segment_uv : numpy.ndarray
        ``(n_samples, n_channels)`` microvolts, the channels of one shank ordered by depth
        (bottom first; see :func:`depth_order`), n_samples >= 2.
    sampling_frequency : float
        Samples per second.
    n_neighbors : int
        Length of the median filter along the channels (odd).
    nyquist_fraction : float
        ``psd_hf`` averages the PSD above this fraction of the Nyquist frequency.

    Returns
    -------
    dict of str to numpy.ndarray
        ``xcor_hf``, ``xcor_lf`` (dimensionless), ``psd_hf`` (µV²/Hz), ``rms_raw`` (µV), each
        ``(n_channels,)`` float64. The similarities are NaN when the median trace is flat.
    """
    segment = np.asarray(segment_uv)
    if segment.ndim != 2:
        raise RawDataError(f"segment_uv must be (n_samples, n_channels), got shape {segment.shape}")
    if n_neighbors < 1 or n_neighbors % 2 == 0:
        raise ConfigError(f"n_neighbors must be an odd number >= 1, got {n_neighbors!r}")
    if not 0.0 < nyquist_fraction < 1.0:
        raise ConfigError(f"nyquist_fraction must lie in (0, 1), got {nyquist_fraction!r}")
    return _features_channel_major(
        channel_major(segment, np.float64), sampling_frequency, n_neighbors, nyquist_fraction
    )


def label_channels(
    features: Mapping[str, np.ndarray],
    dead_threshold: float = -0.5,
    noisy_coherence_threshold: float = 1.0,
    psd_hf_threshold: float = 0.02,
    outside_threshold: float = -0.75,
) -> np.ndarray:
    """IBL labels from the features of one shank's channels, ordered by depth (bottom first).

    Parameters
    ----------
    features : mapping
        ``xcor_hf``, ``xcor_lf`` and ``psd_hf`` arrays of equal length (see
        :func:`channel_features`).
    dead_threshold : float
        ``xcor_hf`` below this: dead.
    noisy_coherence_threshold : float
        ``xcor_hf`` above this: noisy.
    psd_hf_threshold : float
        ``psd_hf`` (µV²/Hz) above this: noisy.
    outside_threshold : float
        The contiguous block of channels ending at the top channel whose ``xcor_lf`` is below
        this: outside the brain.

    Returns
    -------
    numpy.ndarray
        int8 codes: 0 good, 1 dead, 2 noisy, 3 outside. Priority noisy > dead > outside, as in
        IBL. A NaN feature meets no criterion.
    """
    missing = [k for k in ("xcor_hf", "xcor_lf", "psd_hf") if k not in features]
    if missing:
        raise ValueError(f"features lack {missing}; expected the output of channel_features")
    xcor_hf, xcor_lf, psd_hf = (np.asarray(features[k], np.float64).reshape(-1)
                                for k in ("xcor_hf", "xcor_lf", "psd_hf"))
    if not xcor_hf.size == xcor_lf.size == psd_hf.size:
        raise ValueError(f"features have different lengths: xcor_hf {xcor_hf.size}, "
                         f"xcor_lf {xcor_lf.size}, psd_hf {psd_hf.size}")
    labels = np.full(xcor_hf.size, GOOD, np.int8)
    below = xcor_lf < outside_threshold
    if below.size and below[-1]:
        above = np.flatnonzero(~below)  # the block runs from the last channel above threshold
        labels[(above[-1] + 1) if above.size else 0 :] = OUTSIDE
    labels[xcor_hf < dead_threshold] = DEAD
    labels[(psd_hf > psd_hf_threshold) | (xcor_hf > noisy_coherence_threshold)] = NOISY
    return labels


# -- segments and channel order ----------------------------------------------------------------


def segment_length(n_samples: int, sampling_frequency: float, segment_seconds: float) -> int:
    """Samples per segment: ``round(segment_seconds * fs)``, at least 2, at most ``n_samples``.

    Parameters
    ----------
    n_samples : int
        Length of the recording.
    sampling_frequency : float
        Samples per second.
    segment_seconds : float
        Requested segment length in seconds.

    Returns
    -------
    int
    """
    return int(min(max(2, round(segment_seconds * sampling_frequency)), n_samples))


def segment_starts(
    n_samples: int, sampling_frequency: float, n_segments: int, segment_seconds: float
) -> list[int]:
    """First samples of the segments analysed: one centred in each of ``n_segments`` equal parts
    of the recording, clipped to it, duplicates removed (short recordings), ascending.

    Parameters
    ----------
    n_samples : int
        Length of the recording.
    sampling_frequency : float
        Samples per second.
    n_segments : int
        Number of segments wanted (>= 1).
    segment_seconds : float
        Length of each segment; see :func:`segment_length`.

    Returns
    -------
    list of int
        Each segment is ``[start, start + segment_length(...))``; empty if ``n_samples`` is 0.
    """
    n_samples, n_segments = int(n_samples), int(n_segments)
    if n_segments < 1:
        raise ConfigError(f"n_segments must be >= 1, got {n_segments}")
    if n_samples <= 0:
        return []
    length = segment_length(n_samples, sampling_frequency, segment_seconds)
    centres = (np.arange(n_segments) + 0.5) * (n_samples / n_segments)
    starts = np.clip(np.floor(centres - length / 2.0), 0, n_samples - length).astype(np.int64)
    return sorted({int(s) for s in starts})


def depth_order(info: ChannelInfo) -> list[np.ndarray]:
    """Channel indices of each shank, ordered by depth (y, then x; bottom first).

    The order of SpikeInterface's ``order_channels_by_depth(dimensions=("x", "y"))``; channels
    without a position come last.

    Parameters
    ----------
    info : ChannelInfo
        Positions and shank ids.

    Returns
    -------
    list of numpy.ndarray
        One int64 index array per shank, shanks in ascending id.
    """
    x, y = info.positions[:, 0], info.positions[:, 1]
    groups = []
    for shank in np.unique(info.shank_ids):
        idx = np.flatnonzero(info.shank_ids == shank)
        groups.append(idx[np.lexsort((x[idx], y[idx]))])
    return groups


# -- whole recording ---------------------------------------------------------------------------


def _validated(**kwargs: object) -> BadChannelParams:
    try:
        return BadChannelParams(**kwargs)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        raise ConfigError(f"invalid bad-channel detection parameters: {problems}") from None


def detect_bad_channels(
    read: ReadFn,
    n_samples: int,
    info: ChannelInfo,
    *,
    n_segments: int = 10,
    segment_seconds: float = 1.0,
    highpass_freq: float | None = 300.0,
    dead_threshold: float = -0.5,
    noisy_coherence_threshold: float = 1.0,
    psd_hf_threshold: float = 0.02,
    outside_threshold: float = -0.75,
    n_neighbors: int = 11,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Label every channel of a recording good, dead, noisy or outside the brain.

    Reads ``n_segments`` segments (:func:`segment_starts`), converts them to µV, high-passes
    them (``highpass_freq``; see the module docstring for why, and why no phase shift), labels
    the channels of each shank ordered by depth in each segment (:func:`channel_features`,
    :func:`label_channels`) and keeps each channel's majority label. The keyword arguments are
    the fields of :class:`BadChannelParams`, so ``detect_bad_channels(read, n, info,
    **params.model_dump())`` works.

    Parameters
    ----------
    read : callable
        ``read(a, b)`` -> int16 ``(b - a, info.n_channels)``: samples ``[a, b)`` of the ephys
        channels (as for :meth:`Chain.process`).
    n_samples : int
        Length of the recording (>= 2).
    info : ChannelInfo
        Sampling frequency, gains (µV per bit), positions and shank ids.
    n_segments, segment_seconds, highpass_freq, dead_threshold, noisy_coherence_threshold, \
psd_hf_threshold, outside_threshold, n_neighbors
        See :class:`BadChannelParams`.

    Returns
    -------
    labels : numpy.ndarray
        ``(n_channels,)`` int8 IBL codes in the original channel order.
    features : dict of str to numpy.ndarray
        ``xcor_hf``, ``xcor_lf``, ``psd_hf`` (µV²/Hz), ``rms_raw`` (µV): each channel's median
        over the segments, original channel order (for display: the labels come from the vote,
        not from these medians).

    Raises
    ------
    neuropool.errors.ConfigError
        Invalid parameters (the message names the field), or ``highpass_freq`` at or above
        the Nyquist frequency.
    neuropool.errors.RawDataError
        A recording shorter than 2 samples, or ``read`` returning the wrong shape.
    """
    params = _validated(
        n_segments=n_segments, segment_seconds=segment_seconds, highpass_freq=highpass_freq,
        dead_threshold=dead_threshold, noisy_coherence_threshold=noisy_coherence_threshold,
        psd_hf_threshold=psd_hf_threshold, outside_threshold=outside_threshold,
        n_neighbors=n_neighbors,
    )
    n_samples, fs, n_channels = int(n_samples), info.sampling_frequency, info.n_channels
    if n_samples < 2:
        raise RawDataError(f"bad-channel detection needs a recording of at least 2 samples, "
                           f"got {n_samples}")
    chain = Chain([] if params.highpass_freq is None else
                  [HighPass(float(params.highpass_freq), SEGMENT_HIGHPASS_ORDER)])
    chain.check(info)
    length = segment_length(n_samples, fs, params.segment_seconds)
    starts = segment_starts(n_samples, fs, params.n_segments, params.segment_seconds)
    groups = depth_order(info)
    thresholds = {
        "dead_threshold": params.dead_threshold,
        "noisy_coherence_threshold": params.noisy_coherence_threshold,
        "psd_hf_threshold": params.psd_hf_threshold,
        "outside_threshold": params.outside_threshold,
    }
    votes = np.zeros((n_channels, 4), np.int64)
    per_segment = {name: np.empty((len(starts), n_channels)) for name in FEATURE_NAMES}
    for i, start in enumerate(starts):
        segment = chain.process(read, start, start + length, n_samples, info)
        x = channel_major(segment, np.float64)
        del segment
        for idx in groups:
            features = _features_channel_major(x[idx], fs, params.n_neighbors, 0.8)
            votes[idx, label_channels(features, **thresholds)] += 1
            for name in FEATURE_NAMES:
                per_segment[name][i, idx] = features[name]
    labels = np.argmax(votes, axis=1).astype(np.int8)  # first maximum: ties go to the lower code
    return labels, {name: np.median(v, axis=0) for name, v in per_segment.items()}

