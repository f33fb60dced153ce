"""IBL's destriping spatial filter: a high-pass across channels under automatic gain control.

The same operation as ``ibldsp.voltage.kfilt`` (as ``ibldsp.voltage.destripe`` calls it) and
``spikeinterface.preprocessing.highpass_spatial_filter`` with their default parameters. At each
sample, per shank (``info.shank_ids``):

1. **Automatic gain control** (AGC): every channel is divided by its gain, the moving average of
   ``|x|`` under a normalised Hann window of ``2 h + 1`` samples, ``h = round(agc_window_s * fs
   / 2)`` (``numpy.hanning(3001)`` = 0.1 s at 30 kHz), floored at ``agc_epsilon`` (0.003) times
   the standard deviation of the shank's block. This floor is IBL's rule: ``destripe`` calls
   ``kfilt`` per shank without an ``epsilon``, which then takes ``0.003 * np.std(x -
   np.mean(x))`` over the array it is given. (SpikeInterface floors each channel at 0.003 times
   its RMS over random chunks of the recording. IBL's per-shank ``kfilt`` also uses 3,000
   samples whatever the sampling frequency, since ``destripe``'s ``lagc`` is not passed on.)
2. **Spatial high-pass**: the channels, ordered by depth, are padded with ``n_channel_pad`` (60)
   mirrored channels on each side (``min(n_channel_pad, n)`` for a shank of ``n`` channels),
   optionally tapered by a raised cosine over ``n_channel_taper`` channels at each end, and
   filtered forward and backward (``scipy.signal.sosfiltfilt``, its edge rule included) by a
   Butterworth high-pass of order ``order`` (3) and cut-off ``cutoff`` (0.01 of the spatial
   Nyquist frequency).
3. The gain is multiplied back.

Channels labelled OUTSIDE (``info.labels == 3``) take no part (neither in the filter nor in the
AGC floor) and are returned unchanged, as ``destripe`` does when given channel labels.

Depth order: channels keep their order when ``positions[:, 1]`` is non-decreasing (both
references then filter in channel order); otherwise they are sorted by depth, then by ``x``
(SpikeInterface's ``order_channels_by_depth``). IBL never reorders.

Parity (``tests/tasks/test_destripe.py``, worst error over the RMS of the reference): 1.4e-6
against SpikeInterface; 8e-6 against ``kfilt`` inside IBL's ``destripe`` (one or two shanks,
with or without outside channels).

How it is computed
------------------
The padding, filter and cropping of step 2 are one linear map ``M`` of the channel vector, the
same at every sample. It is built once per channel count by filtering the identity matrix, and
applied as ``u - A (B u)`` with the SVD of ``I - M`` truncated at 1e-6 of its norm: the
high-pass passes all but the lowest spatial frequencies, so ``I - M`` has rank 37 for 384
channels, and the map costs two thin matrix products per tile of samples instead of a
recursive filter along every sample's channel vector.

The gain is a Hann-weighted moving sum computed exactly (to float32 rounding) in blocks of ``R``
samples (``R`` divides ``h`` when possible: 50 at 30 kHz). Within the window, the weight
``1 + cos(pi d / h)`` of a sample ``d`` samples away is a sum of three separable terms, so the
blocks lying wholly inside the window contribute through three sums per block (and prefix sums
over blocks), and only the blocks that straddle the window's edges need exact weights: one matrix
product with ``R x R`` weight matrices. Both run on tiles of 8 channels that stay in cache.

Margin and edges
----------------
The AGC is the only part that reaches across samples, so ``margin(fs)`` is ``h`` (1,500 samples
at 30 kHz): an output sample depends on the samples within ``h - 1`` of it, and blocks cut
anywhere give the same result to float32 rounding (measured: 8.6e-7 of the RMS). The exception
is the AGC floor, a statistic of each block as in IBL (which processes files in chunks too):
it only matters where a channel's moving average of ``|x|`` falls below 0.3 % of the shank's
standard deviation (where a channel is exactly zero, the floor plays no role). At the
recording's edges the moving average is zero-padded, i.e. the window is truncated and not
renormalised: this is what both references do for a single call over the whole recording
(``fftconvolve(..., mode="same")``); the gain falls to about half at the first and last samples.

Speed (384 channels x 33,000 samples, one BLAS thread, busy shared 2-core machine, best of 7):
about 0.2 s per block: 80 ms for the gain, 20 ms for the floor's statistics, 80 ms for the
spatial map, the rest copies. The matrix products are small, so let BLAS use one thread per
worker: with OpenBLAS's default threads on that machine the step took 1.0 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral, Real

import numpy as np
import scipy.signal

from neuropool.errors import ConfigError

from .base import OUTSIDE, ChannelInfo, Step, channel_major

__all__ = ["SpatialHighPass", "agc_half_width", "hann_moving_average", "spatial_highpass_matrix"]

_AGC_TILE = 8  # channels per tile of the moving average
_SPATIAL_TILE = 1024  # samples per tile of the spatial map
_RANK_TOLERANCE = 1e-6  # singular values of I - M kept, relative to the largest


def agc_half_width(agc_window_s: float, sampling_frequency: float) -> int:
    """Half-length ``h`` of the AGC's Hann window (``2 h + 1`` samples), as both references round.

    Parameters
    ----------
    agc_window_s : float
        Window length in seconds.
    sampling_frequency : float
        Samples per second.

    Returns
    -------
    int
    """
    return int(np.round(agc_window_s * sampling_frequency / 2.0))


# -- the moving average ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _HannPlan:
    """Constant arrays of a Hann moving sum with half-width ``h``, in blocks of ``R`` samples.

    The output block at padded block index ``p`` sums ``weights`` times the design columns:
    the first groups of ``R`` columns are data blocks ``p + j`` (signed, see ``terms``), with
    exact weights; the last three are coarse sums over the blocks ``p + lo .. p + q - 1``, which
    lie wholly inside the window.
    """

    block: int
    q: int
    lo: int
    terms: tuple[tuple[tuple[int, int], ...], ...]  # per column group: (block offset, sign)
    weights: np.ndarray  # (n_groups * R + 3, R) float32, normalised by 2 h
    basis: np.ndarray  # (R, 3) float32: 1, cos, sin of the phase within a block


def _block_length(h: int) -> int:
    """``h`` itself when short, else its largest divisor in [16, 64], else 32."""
    if h < 16:
        return h
    for length in range(64, 15, -1):
        if h % length == 0:
            return length
    return 32


@lru_cache(maxsize=16)
def _hann_plan(h: int) -> _HannPlan:
    period = 2 * h  # weights 1 + cos(2 pi d / period) for |d| <= h, normalised by period
    length = _block_length(h)
    q = h // length
    r = np.arange(length)
    x = r[:, np.newaxis] - r[np.newaxis, :]  # sample r' of a block minus output offset r

    def weight(j: int) -> np.ndarray:
        d = j * length + x
        return np.where(np.abs(d) <= h, 1.0 + np.cos(2.0 * np.pi * d / period), 0.0)

    if h % length == 0:
        # Blocks p - q and p + q straddle the window's edges, with complementary masks: the sum
        # of their weights is the smooth weight of a whole block, so block p - q joins the coarse
        # sums and only the difference of the two blocks needs exact weights.
        terms, groups, lo = (((q, 1), (-q, -1)),), [weight(q)], -q
    else:
        offsets = (-q - 1, -q, q, q + 1)
        terms, groups, lo = tuple(((j, 1),) for j in offsets), [weight(j) for j in offsets], 1 - q
    phase = 2.0 * np.pi * r / period
    basis = np.stack([np.ones(length), np.cos(phase), np.sin(phase)])
    weights = (np.concatenate([*groups, basis]) / period).astype(np.float32)
    basis = np.ascontiguousarray(basis.T, dtype=np.float32)
    weights.setflags(write=False)
    basis.setflags(write=False)
    return _HannPlan(length, q, lo, terms, weights, basis)


def hann_moving_average(
    x: np.ndarray,
    h: int,
    channels: np.ndarray | None = None,
    stats: np.ndarray | None = None,
) -> np.ndarray:
    """``|x|`` convolved with ``numpy.hanning(2 h + 1)`` normalised to sum 1, zero-padded.

    Equal to ``scipy.signal.fftconvolve(abs(x), w[None], mode="same", axes=1)`` (both
    references' AGC gain) to float32 rounding (measured: 2e-7 of the mean gain).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n_channels, n_samples)`` float32, channel-major (rows are read whole).
    h : int
        Half-width of the window, >= 1.
    channels : numpy.ndarray, optional
        Rows of ``x`` to process, in the order of the result (default all).
    stats : numpy.ndarray, optional
        ``(len(channels), 2)`` float64, filled with each channel's sum and its sum of squared
        deviations from its mean.

    Returns
    -------
    numpy.ndarray
        ``(len(channels), n_samples)`` float32 (a view of a slightly wider array).
    """
    n_all, n = x.shape
    channels = np.arange(n_all) if channels is None else np.asarray(channels)
    contiguous = channels.size > 0 and np.array_equal(
        channels, np.arange(channels[0], channels[0] + channels.size)
    )
    plan = _hann_plan(int(h))
    length, n_groups = plan.block, len(plan.terms)
    pad = max(abs(j) for term in plan.terms for j, _ in term)  # zero blocks on each side
    n_blocks = -(-n // length)
    n_padded = n_blocks + 2 * pad
    # Phase of each block's start, for the coarse sums of whole blocks.
    period = 2 * h
    start_phase = np.exp(2j * np.pi * ((np.arange(n_padded) * length) % period) / period)
    out_phase = start_phase[pad : pad + n_blocks].conj()
    lo, hi = pad + plan.lo, pad + plan.q  # coarse sums over blocks b + lo .. b + hi - 1
    out = np.empty((channels.size, n_blocks * length), dtype=np.float32)
    tile = _AGC_TILE
    padded = np.zeros((tile, n_padded, length), dtype=np.float32)
    design = np.empty((tile, n_blocks, n_groups * length + 3), dtype=np.float32)
    prefix = np.zeros((tile, n_padded + 1), dtype=np.float64)
    prefix_z = np.zeros((tile, n_padded + 1), dtype=np.complex128)
    scratch = np.empty((tile, n), dtype=np.float32) if stats is not None else None
    for c0 in range(0, channels.size, tile):
        g = min(tile, channels.size - c0)
        first = int(channels[0]) + c0
        rows = x[first : first + g] if contiguous else x[channels[c0 : c0 + g]]
        a = padded[:g]
        flat = a.reshape(g, n_padded * length)
        np.abs(rows, out=flat[:, pad * length : pad * length + n])
        flat[:, pad * length + n : (pad + n_blocks) * length] = 0.0
        if stats is not None:  # sums, and squares about each channel's mean (no cancellation)
            total = rows.sum(axis=1)
            centred = scratch[:g]
            np.subtract(rows, (total / np.float32(n))[:, np.newaxis], out=centred)
            stats[c0 : c0 + g, 0] = total
            stats[c0 : c0 + g, 1] = np.einsum("ij,ij->i", centred, centred)
        d = design[:g]
        for k, term in enumerate(plan.terms):
            columns = d[:, :, k * length : (k + 1) * length]
            (j0, _), *rest = term
            columns[...] = a[:, pad + j0 : pad + j0 + n_blocks]
            for j, sign in rest:
                (np.add if sign > 0 else np.subtract)(
                    columns, a[:, pad + j : pad + j + n_blocks], out=columns
                )
        sums = (a.reshape(g * n_padded, length) @ plan.basis).reshape(g, n_padded, 3)
        np.cumsum(sums[:, :, 0], axis=1, out=prefix[:g, 1:])
        np.cumsum((sums[:, :, 1] + 1j * sums[:, :, 2]) * start_phase, axis=1,
                  out=prefix_z[:g, 1:])
        coarse = d[:, :, n_groups * length :]
        coarse[:, :, 0] = prefix[:g, hi : hi + n_blocks] - prefix[:g, lo : lo + n_blocks]
        z = (prefix_z[:g, hi : hi + n_blocks] - prefix_z[:g, lo : lo + n_blocks]) * out_phase
        coarse[:, :, 1] = z.real
        coarse[:, :, 2] = z.imag
        np.matmul(d.reshape(g * n_blocks, -1), plan.weights,
                  out=out[c0 : c0 + g].reshape(g * n_blocks, length))
    return out[:, :n]


# -- the spatial map ------------------------------------------------------------------------------


def _raised_cosine_taper(n_padded: int, n_taper: int) -> np.ndarray:
    """IBL's taper: a raised cosine rising over the first ``n_taper`` channels and falling over
    the last ``n_taper`` (``fcn_cosine`` up and down), 1 elsewhere."""
    i = np.arange(n_padded, dtype=np.float64)
    up = (1.0 - np.cos(np.clip(i / n_taper, 0.0, 1.0) * np.pi)) / 2.0
    down = (1.0 - np.cos(np.clip((i - (n_padded - n_taper)) / n_taper, 0.0, 1.0) * np.pi)) / 2.0
    return up * (1.0 - down)


def spatial_highpass_matrix(
    n_channels: int, order: int = 3, cutoff: float = 0.01, n_pad: int = 60, n_taper: int = 0
) -> np.ndarray:
    """The linear map ``M`` of the spatial high-pass on ``n_channels`` depth-ordered channels.

    Mirror padding by ``min(n_pad, n_channels)`` channels per side, optional taper, forward-
    backward Butterworth high-pass along channels (``sosfiltfilt``'s default padding, shortened for
    very few channels), cropping: ``y = M @ x`` for a channel vector ``x``.

    Parameters
    ----------
    n_channels : int
        Number of channels, >= 1.
    order : int
        Butterworth order of one pass.
    cutoff : float
        Cut-off as a fraction of the spatial Nyquist frequency, in (0, 1).
    n_pad, n_taper : int
        Mirrored channels added on each side; channels tapered at each end of the padded array.

    Returns
    -------
    numpy.ndarray
        ``(n_channels, n_channels)`` float64.
    """
    identity = np.eye(n_channels)
    pad = min(int(n_pad), n_channels)
    padded = np.concatenate([identity[:pad][::-1], identity, identity[n_channels - pad :][::-1]])
    if n_taper > 0:
        padded *= _raised_cosine_taper(padded.shape[0], int(n_taper))[:, np.newaxis]
    sos = scipy.signal.butter(int(order), float(cutoff), btype="highpass", output="sos")
    n_taps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    padlen = min(3 * n_taps, padded.shape[0] - 1)
    filtered = scipy.signal.sosfiltfilt(sos, padded, axis=0, padlen=padlen)
    return filtered[pad : pad + n_channels]


@lru_cache(maxsize=16)
def _low_rank_factors(
    n_channels: int, order: int, cutoff: float, n_pad: int, n_taper: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` with ``M ~= I - A @ B``: the truncated SVD of ``I - M`` (float64)."""
    residual = np.eye(n_channels) - spatial_highpass_matrix(n_channels, order, cutoff, n_pad, n_taper)
    u, s, vt = np.linalg.svd(residual)
    rank = max(1, int(np.sum(s > _RANK_TOLERANCE * s[0]))) if s[0] > 0 else 0
    left, right = u[:, :rank] * s[:rank], vt[:rank]
    left.setflags(write=False)
    right.setflags(write=False)
    return left, right


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _depth_order(positions: np.ndarray) -> np.ndarray:
    """Indices of ``positions`` in depth order (see the module docstring)."""
    depth = positions[:, 1]
    if np.all(depth[1:] >= depth[:-1]):
        return np.arange(len(depth))
    return np.lexsort((positions[:, 0], depth))


# -- the step -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpatialHighPass(Step):
    """IBL's destriping: AGC, Butterworth high-pass across depth-ordered channels, gain restored.

    Parameters
    ----------
    agc_window_s : float or None
        Length of the AGC's Hann window in seconds (0.1); None: no AGC.
    agc_epsilon : float
        AGC floor, as a fraction of the standard deviation of each shank's block (0.003).
    order : int
        Butterworth order of one pass of the spatial filter (3).
    cutoff : float
        Spatial cut-off as a fraction of the spatial Nyquist frequency (0.01).
    n_channel_pad : int
        Mirrored channels added on each side before filtering (60).
    n_channel_taper : int
        Channels tapered by a raised cosine at each end of the padded array (0: none).
    """

    agc_window_s: float | None = 0.1
    agc_epsilon: float = 0.003
    order: int = 3
    cutoff: float = 0.01
    n_channel_pad: int = 60
    n_channel_taper: int = 0

    def __post_init__(self) -> None:
        window = self.agc_window_s
        if window is not None and not (_is_number(window) and window > 0):
            raise ConfigError(f"agc_window_s must be a positive number of seconds (0.1 in IBL) or "
                              f"None for no AGC, got {window!r}")
        epsilon = self.agc_epsilon
        if not (_is_number(epsilon) and epsilon >= 0):
            raise ConfigError(f"agc_epsilon must be a number >= 0 (0.003 in IBL), got {epsilon!r}")
        if not (_is_int(self.order) and 1 <= self.order <= 10):
            raise ConfigError(f"order must be an integer from 1 to 10 (3 in IBL), got "
                              f"{self.order!r}")
        cutoff = self.cutoff
        if not (_is_number(cutoff) and 0.0 < cutoff < 1.0):
            raise ConfigError(f"cutoff must lie strictly between 0 and 1 (a fraction of the "
                              f"spatial Nyquist frequency; 0.01 in IBL), got {cutoff!r}")
        for name in ("n_channel_pad", "n_channel_taper"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 0):
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")

    def margin(self, sampling_frequency: float) -> int:
        """Half the AGC window: the moving average is the only operation across samples.

        Parameters
        ----------
        sampling_frequency : float
            Samples per second.

        Returns
        -------
        int
        """
        if self.agc_window_s is None:
            return 0
        return agc_half_width(self.agc_window_s, sampling_frequency)

    def check(self, info: ChannelInfo) -> None:
        """Raise :class:`~neuropool.errors.ConfigError` if the AGC window is shorter than 3
        samples at this sampling frequency (other parameters are checked on construction).

        Parameters
        ----------
        info : ChannelInfo
            Provides the sampling frequency.
        """
        window = self.agc_window_s
        if window is not None and agc_half_width(window, info.sampling_frequency) < 1:
            raise ConfigError(
                f"agc_window_s={window!r} is shorter than 3 samples at "
                f"{info.sampling_frequency:g} Hz; use at least {3 / info.sampling_frequency:.3g} "
                f"s, or None for no AGC"
            )

    def apply(
        self,
        block: np.ndarray,
        info: ChannelInfo,
        *,
        at_start: bool = False,
        at_end: bool = False,
    ) -> np.ndarray:
        """Destripe ``block``.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_samples, n_channels)`` float32 µV, context rows included.
        info : ChannelInfo
            Provides positions, labels, shank ids and the sampling frequency.
        at_start, at_end : bool
            Unused: the moving average is zero-padded at every side of the block, which is the
            edge rule at the recording's edges and is discarded with the margin elsewhere.

        Returns
        -------
        numpy.ndarray
            float32, same shape as ``block`` (a transposed view of a channel-major array).
        """
        self.check(info)
        x = np.asarray(block).T
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = channel_major(block, np.float32)
        n_channels, n = x.shape
        left, right, members = self._factors(info)
        if n == 0 or members.size == 0:
            return np.array(x, dtype=np.float32).T
        gain = floor = None
        if self.agc_window_s is not None:
            h = agc_half_width(self.agc_window_s, info.sampling_frequency)
            stats = np.zeros((members.size, 2))
            gain = hann_moving_average(x, h, members, stats)
            floor = self._floors(stats, n, info.shank_ids[members])
        out = np.empty_like(x)
        whole = members.size == n_channels and np.array_equal(members, np.arange(n_channels))
        rows = slice(None) if whole else members
        tile = min(n, _SPATIAL_TILE)
        u = np.empty((members.size, tile), np.float32)
        low = np.empty((left.shape[1], tile), np.float32)
        z = np.empty((members.size, tile), np.float32)
        for t0 in range(0, n, tile):
            t1 = min(n, t0 + tile)
            w = t1 - t0
            ut, lt, zt = u[:, :w], low[:, :w], z[:, :w]
            if gain is None:
                ut[...] = x[rows, t0:t1]
            else:
                g = gain[:, t0:t1]
                np.maximum(g, floor, out=ut)
                np.divide(x[rows, t0:t1], ut, out=ut)
            np.matmul(right, ut, out=lt)
            np.matmul(left, lt, out=zt)
            np.subtract(ut, zt, out=zt)
            if gain is not None:
                zt *= g
            out[rows, t0:t1] = zt
        if not whole:
            others = np.setdiff1d(np.arange(n_channels), members)
            out[others] = x[others]
        return out.T

    def _factors(self, info: ChannelInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Low-rank factors of ``I - M`` over the filtered channels (all shanks), float32, and
        those channels' indices, grouped by shank and depth-ordered."""
        groups = []
        inside = info.labels != OUTSIDE
        for shank in np.unique(info.shank_ids):
            channels = np.flatnonzero((info.shank_ids == shank) & inside)
            if channels.size:
                groups.append(channels[_depth_order(info.positions[channels])])
        if not groups:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, int)
        blocks = [_low_rank_factors(g.size, int(self.order), float(self.cutoff),
                                    int(self.n_channel_pad), int(self.n_channel_taper))
                  for g in groups]
        n_members = sum(g.size for g in groups)
        rank = sum(a.shape[1] for a, _ in blocks)
        left = np.zeros((n_members, rank), np.float32)
        right = np.zeros((rank, n_members), np.float32)
        i = k = 0
        for g, (a, b) in zip(groups, blocks, strict=True):
            left[i : i + g.size, k : k + a.shape[1]] = a
            right[k : k + a.shape[1], i : i + g.size] = b
            i, k = i + g.size, k + a.shape[1]
        return left, right, np.concatenate(groups)

    def _floors(self, stats: np.ndarray, n: int, shanks: np.ndarray) -> np.ndarray:
        """``(n_members, 1)`` AGC floor of each channel: ``agc_epsilon`` times the standard
        deviation of its shank's block (all samples of all its filtered channels)."""
        floor = np.empty((shanks.size, 1), np.float32)
        for shank in np.unique(shanks):
            sel = shanks == shank
            means = stats[sel, 0] / n
            mean = means.mean()
            var = (stats[sel, 1].sum() + n * np.sum((means - mean) ** 2)) / (n * means.size)
            floor[sel] = self.agc_epsilon * math.sqrt(var)
        return np.maximum(floor, np.finfo(np.float32).tiny)
