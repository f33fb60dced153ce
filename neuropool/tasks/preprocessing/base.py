"""What every preprocessing step shares: the channel description and the ``Step`` contract.

A step is a *recipe*: a small frozen dataclass that holds parameters only (no arrays, no
caches, no open files), so that it pickles to a few hundred bytes and can be shipped to a Dask
or Ray worker. Everything that depends on the recording (sampling frequency, gains, ADC delays,
positions) arrives at call time in a :class:`ChannelInfo`.

The block contract
------------------
``Step.apply(block, info, at_start=..., at_end=...)`` receives float32 microvolts shaped
``(n_samples, n_channels)``, in either memory layout (the chain passes transposed views of
channel-major arrays between steps, to avoid transposing copies; see :func:`channel_major`). Unless ``at_start`` is true, the first ``margin(fs)`` rows are
context that the caller will throw away; likewise the last ``margin(fs)`` rows unless
``at_end`` is true. ``at_start`` / ``at_end`` say that the first / last row of the block is the
first / last sample of the recording, so the step must apply its own edge rule there (the
rules are chosen to match SpikeInterface's result for a single ``get_traces`` call over the
whole recording; see each step). The returned array has the same shape as ``block``; rows
that lie within ``margin`` of a non-edge side are not guaranteed to be exact.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuropool.errors import RawDataError

_TILE = 256  # rows per tile of a transposing copy

#: Channel labels, IBL's codes (``ibldsp.voltage.detect_bad_channels``).
GOOD, DEAD, NOISY, OUTSIDE = 0, 1, 2, 3
LABEL_NAMES = {GOOD: "good", DEAD: "dead", NOISY: "noisy", OUTSIDE: "outside"}

__all__ = [
    "DEAD", "GOOD", "LABEL_NAMES", "NOISY", "OUTSIDE",
    "ChannelInfo", "Step", "channel_major", "margin_samples", "sample_major",
]


@dataclass(frozen=True, eq=False)
class ChannelInfo:
    """The per-recording facts a preprocessing step needs, for the ephys channels only.

    Attributes
    ----------
    sampling_frequency : float
        Samples per second.
    gains_uv : numpy.ndarray
        ``(n_channels,)`` microvolts per bit.
    adc_shifts : numpy.ndarray
        ``(n_channels,)`` delay of each channel's sample, as a fraction of the sample period
        (SpikeInterface's ``inter_sample_shift``); 0 for no correction.
    positions : numpy.ndarray
        ``(n_channels, 2)`` contact positions in µm; may contain NaN.
    labels : numpy.ndarray, optional
        ``(n_channels,)`` channel labels, IBL's codes (:data:`GOOD`, :data:`DEAD`,
        :data:`NOISY`, :data:`OUTSIDE`); default all good. Set by bad-channel detection, which
        runs once per recording before the blocks.
    shank_ids : numpy.ndarray, optional
        ``(n_channels,)`` shank index of each channel; default all 0.
    """

    sampling_frequency: float
    gains_uv: np.ndarray
    adc_shifts: np.ndarray
    positions: np.ndarray
    labels: np.ndarray | None = None
    shank_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        fs = float(self.sampling_frequency)
        if not math.isfinite(fs) or fs <= 0:
            raise RawDataError(f"sampling_frequency must be a positive number, got {fs!r}")
        gains = np.asarray(self.gains_uv, dtype=np.float64).reshape(-1)
        n = gains.size
        shifts = np.asarray(self.adc_shifts, dtype=np.float64).reshape(-1)
        positions = np.asarray(self.positions, dtype=np.float64)
        if shifts.shape != (n,):
            raise RawDataError(f"adc_shifts has {shifts.size} values for {n} channels (gains_uv)")
        if positions.shape != (n, 2):
            raise RawDataError(f"positions must be ({n}, 2), got {positions.shape}")
        if not np.all(np.isfinite(gains)):
            raise RawDataError("gains_uv contains NaN or infinite values")
        if not np.all(np.isfinite(shifts)):
            raise RawDataError("adc_shifts contains NaN or infinite values")
        labels = np.zeros(n, np.int8) if self.labels is None else np.asarray(self.labels, np.int8)
        shanks = np.zeros(n, np.int64) if self.shank_ids is None else np.asarray(self.shank_ids, np.int64)
        if labels.shape != (n,) or not np.isin(labels, (GOOD, DEAD, NOISY, OUTSIDE)).all():
            raise RawDataError(f"labels must be {n} values among 0 (good), 1 (dead), 2 (noisy), "
                               f"3 (outside the brain); got {labels!r}")
        if shanks.shape != (n,):
            raise RawDataError(f"shank_ids has {shanks.size} values for {n} channels (gains_uv)")
        for name, value in (("gains_uv", gains), ("adc_shifts", shifts), ("positions", positions),
                            ("labels", labels), ("shank_ids", shanks)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "sampling_frequency", fs)

    @property
    def n_channels(self) -> int:
        """Number of ephys channels."""
        return int(self.gains_uv.size)

    def with_labels(self, labels: np.ndarray) -> ChannelInfo:
        """A copy of this description with new channel labels.

        Parameters
        ----------
        labels : numpy.ndarray
            ``(n_channels,)`` label codes.

        Returns
        -------
        ChannelInfo
        """
        return ChannelInfo(self.sampling_frequency, self.gains_uv, self.adc_shifts,
                           self.positions, labels, self.shank_ids)

    @classmethod
    def from_recording_info(cls, info: Any) -> ChannelInfo:
        """Keep the ephys columns of a reader's ``RecordingInfo`` (sync columns dropped).

        Parameters
        ----------
        info : neuropool.io.readers.base.RecordingInfo
            Anything with ``sampling_frequency``, ``gains_uv``, ``adc_shifts``, ``positions``
            and ``is_sync`` attributes.

        Returns
        -------
        ChannelInfo
        """
        keep = ~np.asarray(info.is_sync, dtype=bool)
        return cls(
            sampling_frequency=float(info.sampling_frequency),
            gains_uv=np.asarray(info.gains_uv, dtype=np.float64)[keep],
            adc_shifts=np.asarray(info.adc_shifts, dtype=np.float64)[keep],
            positions=np.asarray(info.positions, dtype=np.float64)[keep],
            shank_ids=np.asarray(getattr(info, "shank_ids", np.zeros(keep.size)), np.int64)[keep],
        )


def margin_samples(margin_ms: float, sampling_frequency: float) -> int:
    """Convert a margin in milliseconds to a whole number of samples (rounded up).

    Parameters
    ----------
    margin_ms : float
        Margin in milliseconds.
    sampling_frequency : float
        Samples per second.

    Returns
    -------
    int
    """
    return int(math.ceil(margin_ms * sampling_frequency / 1000.0 - 1e-9))


def _transposed_copy(a: np.ndarray, dtype: np.dtype | type, n_cols: int) -> np.ndarray:
    """C-contiguous ``a.T`` cast to ``dtype`` and zero-padded to ``n_cols`` columns, copied in
    tiles of rows (3-4x faster than numpy's strided transpose for 36,000 x 384 blocks)."""
    rows = a.shape[0]
    out = np.empty((a.shape[1], n_cols), dtype=dtype)
    out[:, rows:] = 0
    for i in range(0, rows, _TILE):
        out[:, i : min(i + _TILE, rows)] = a[i : i + _TILE].T
    return out


def channel_major(
    block: np.ndarray, dtype: np.dtype | type = np.float64, n_samples: int | None = None
) -> np.ndarray:
    """``block.T`` as a new C-contiguous ``(n_channels, n_samples)`` array of ``dtype``.

    Steps receive ``(n_samples, n_channels)`` arrays in either memory layout; filtering and
    FFTs run along contiguous rows of the channel-major copy.

    Parameters
    ----------
    block : numpy.ndarray
        ``(n_samples, n_channels)``.
    dtype : numpy dtype
        Dtype of the result.
    n_samples : int, optional
        Length of the result's rows (>= ``block.shape[0]``): zero-padded at the end.

    Returns
    -------
    numpy.ndarray
        A new array (never a view of ``block``).
    """
    block = np.asarray(block)
    n_cols = block.shape[0] if n_samples is None else max(int(n_samples), block.shape[0])
    if block.ndim == 2 and block.strides[0] == block.itemsize:  # rows of block.T contiguous
        out = np.empty((block.shape[1], n_cols), dtype=dtype)
        out[:, : block.shape[0]] = block.T
        out[:, block.shape[0] :] = 0
        return out
    return _transposed_copy(block, dtype, n_cols)


def sample_major(block: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """``block`` as a C-contiguous ``(n_samples, n_channels)`` array of ``dtype`` (a new array).

    Parameters
    ----------
    block : numpy.ndarray
        ``(n_samples, n_channels)``.
    dtype : numpy dtype
        Dtype of the result.

    Returns
    -------
    numpy.ndarray
    """
    block = np.asarray(block)
    if block.flags.c_contiguous:
        return np.array(block, dtype=dtype, order="C")
    return _transposed_copy(block.T, dtype, block.shape[1])


class Step(ABC):
    """One preprocessing operation applied to a block of samples (see the module docstring)."""

    @abstractmethod
    def margin(self, sampling_frequency: float) -> int:
        """Samples of context this step needs on each side of a block for an exact result.

        Parameters
        ----------
        sampling_frequency : float
            Samples per second.

        Returns
        -------
        int
        """

    @abstractmethod
    def apply(
        self,
        block: np.ndarray,
        info: ChannelInfo,
        *,
        at_start: bool = False,
        at_end: bool = False,
    ) -> np.ndarray:
        """Process one block.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_samples, n_channels)`` float32 microvolts, context rows included.
        info : ChannelInfo
            The recording's channels.
        at_start, at_end : bool
            Whether the first / last row of ``block`` is the first / last sample of the
            recording.

        Returns
        -------
        numpy.ndarray
            float32, same shape as ``block``.
        """

    def frequency_response(  # noqa: B027 - optional hook
        self, n_fft: int, info: ChannelInfo
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The step as a per-channel filter on ``n_fft`` points, if it is one.

        Steps that are linear, time-invariant and per-channel (the windowed-sinc phase shift,
        Butterworth filters) return ``(rows, index)``: ``rows`` ``(k, n_fft // 2 + 1)`` the
        distinct frequency responses and ``index`` ``(n_channels,)`` the row of each channel.
        ``Chain`` then runs consecutive such steps as one FFT away from the recording's edges
        (see :mod:`neuropool.tasks.preprocessing.spectral`). Default: None (not such a step).

        Parameters
        ----------
        n_fft : int
            FFT length.
        info : ChannelInfo
            The recording's channels.

        Returns
        -------
        tuple of numpy.ndarray, or None
        """
        return None

    def check(self, info: ChannelInfo) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise :class:`neuropool.errors.ConfigError` if the step cannot run on ``info``.

        Parameters
        ----------
        info : ChannelInfo
            The recording's channels.
        """
