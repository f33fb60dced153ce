"""A sequence of steps applied to one block of a recording, with overlap margins.

``Chain.process(read, start, stop, n_samples, info)`` returns the preprocessed samples
``[start, stop)``. It reads ``[start - M, stop + M)`` clipped to the recording, where ``M`` is
the sum of the step margins, and then peels the margins off step by step: step ``k`` runs on
``[max(0, start - R), min(n, stop + R))`` with ``R`` the sum of the margins of steps ``k``
onwards, and its output is cut down to the window that the next step needs. Every intermediate
signal is therefore a well-defined signal of the whole recording (up to the margin truncation
error), and the concatenation of blocks does not depend on where the blocks are cut.

Edges: where a window reaches sample 0 or ``n_samples``, the step is told so (``at_start`` /
``at_end``) and applies its edge rule instead of discarding context. The rules are those of a
single SpikeInterface ``get_traces`` call over the whole recording: zero padding for the phase
shift (no taper of real samples), ``sosfiltfilt``'s odd extension and steady-state initial
conditions for the high-pass. They depend only on the distance to the edge, never on where a
block starts. (A chunked SpikeInterface run does not have this property: when a chunk starts
less than a margin from the recording's edge it tapers real samples.)

Memory: one int16 copy and a few float32/float64 copies of ``stop - start + 2 M`` rows;
nothing scales with the recording's length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from neuropool.errors import ConfigError, RawDataError

from .base import ChannelInfo, Step, channel_major, sample_major
from .spectral import apply_responses

__all__ = ["Chain", "ReadFn"]

ReadFn = Callable[[int, int], np.ndarray]
"""``read(a, b)`` -> int16 ``(b - a, n_channels)``: samples ``[a, b)`` of the ephys channels."""


@dataclass(frozen=True)
class Chain:
    """An ordered, picklable list of preprocessing steps.

    Parameters
    ----------
    steps : sequence of Step
        Applied in order; stored as a tuple.
    """

    steps: tuple[Step, ...] = ()

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        steps = tuple(steps)
        for step in steps:
            if not isinstance(step, Step):
                raise ConfigError(f"Chain steps must be Step instances, got {type(step).__name__}")
        object.__setattr__(self, "steps", steps)

    def margins(self, sampling_frequency: float) -> list[int]:
        """Each step's margin in samples.

        Parameters
        ----------
        sampling_frequency : float
            Samples per second.

        Returns
        -------
        list of int
        """
        return [int(step.margin(sampling_frequency)) for step in self.steps]

    def margin(self, sampling_frequency: float) -> int:
        """Total context read on each side of a block (the sum of the step margins).

        Parameters
        ----------
        sampling_frequency : float
            Samples per second.

        Returns
        -------
        int
        """
        return sum(self.margins(sampling_frequency))

    def check(self, info: ChannelInfo) -> None:
        """Validate every step against a recording (e.g. the high-pass below Nyquist).

        Parameters
        ----------
        info : ChannelInfo
            The recording's channels.

        Raises
        ------
        neuropool.errors.ConfigError
            If a step's parameters cannot apply to this recording.
        """
        for step in self.steps:
            step.check(info)

    def process(
        self,
        read: ReadFn,
        start: int,
        stop: int,
        n_samples: int,
        info: ChannelInfo,
        *,
        fft: bool = True,
    ) -> np.ndarray:
        """Preprocess samples ``[start, stop)``.

        Parameters
        ----------
        read : callable
            ``read(a, b)`` returns the int16 samples ``[a, b)`` of the ephys channels,
            ``(b - a, info.n_channels)``; it is called once, with ``0 <= a < b <= n_samples``.
        start, stop : int
            The block to return, ``0 <= start <= stop <= n_samples``.
        n_samples : int
            Length of the recording.
        info : ChannelInfo
            Sampling frequency, gains and ADC shifts of the channels ``read`` returns.
        fft : bool, default True
            Run consecutive linear filters as one FFT wherever their window touches neither edge
            of the recording (a block that does touch an edge is split: its first or last
            ``margin + 1`` samples run step by step, the rest takes the fast path). ``False``
            runs every step on its own everywhere: the reference the fast path is tested against.

        Returns
        -------
        numpy.ndarray
            float32 µV, ``(stop - start, info.n_channels)``, C-contiguous.
        """
        start, stop, n_samples = int(start), int(stop), int(n_samples)
        if not 0 <= start <= stop <= n_samples:
            raise ValueError(
                f"need 0 <= start <= stop <= n_samples, got start={start}, stop={stop}, "
                f"n_samples={n_samples}"
            )
        self.check(info)
        n_channels = info.n_channels
        if start == stop:
            return np.zeros((0, n_channels), dtype=np.float32)
        margins = self.margins(info.sampling_frequency)
        remaining = sum(margins)
        a, b = max(0, start - remaining), min(n_samples, stop + remaining)
        raw = np.asarray(read(a, b))
        if raw.shape != (b - a, n_channels):
            raise RawDataError(
                f"read({a}, {b}) returned shape {raw.shape}, expected {(b - a, n_channels)} "
                f"(samples x ephys channels)"
            )
        pieces = self._pieces(start, stop, n_samples, info) if fft else [(start, stop)]
        if len(pieces) == 1:
            return self._run(raw, a, b, start, stop, n_samples, info, fft)
        out = np.empty((stop - start, n_channels), dtype=np.float32)
        total = sum(margins)
        for s, e in pieces:  # each piece reads its own margins from the one read above
            a2, b2 = max(0, s - total), min(n_samples, e + total)
            out[s - start : e - start] = self._run(
                raw[a2 - a : b2 - a], a2, b2, s, e, n_samples, info, fft
            )
        return out

    def _pieces(
        self, start: int, stop: int, n_samples: int, info: ChannelInfo
    ) -> list[tuple[int, int]]:
        """``[start, stop)`` cut so that every piece but the first and last ``margin + 1``
        samples of the recording has windows that touch neither edge (the FFT fast path)."""
        if not any(self._spectral_run(k, info) for k in range(len(self.steps))):
            return [(start, stop)]
        m = self.margin(info.sampling_frequency)
        head, tail = max(start, m + 1), min(stop, n_samples - m - 1)
        if head >= tail:  # a short recording: all of it lies near an edge
            return [(start, stop)]
        return [(s, e) for s, e in ((start, head), (head, tail), (tail, stop)) if e > s]

    def _run(
        self,
        raw: np.ndarray,
        a: int,
        b: int,
        start: int,
        stop: int,
        n_samples: int,
        info: ChannelInfo,
        fft: bool,
    ) -> np.ndarray:
        """The steps over ``raw`` (samples ``[a, b)``), peeled down to ``[start, stop)``."""
        margins = self.margins(info.sampling_frequency)
        remaining = sum(margins)
        block = _to_microvolts(raw, info.gains_uv)
        k = 0
        while k < len(self.steps):
            at_start, at_end = a == 0, b == n_samples
            group = self._spectral_run(k, info) if fft and not (at_start or at_end) else 0
            if group:  # inside the recording: consecutive linear filters as one FFT
                block = apply_responses(block, self.steps[k : k + group], info)
            else:
                group = 1
                block = self.steps[k].apply(block, info, at_start=at_start, at_end=at_end)
            remaining -= sum(margins[k : k + group])
            a_next, b_next = max(0, start - remaining), min(n_samples, stop + remaining)
            block = block[a_next - a : block.shape[0] - (b - b_next)]
            a, b = a_next, b_next
            k += group
        return sample_major(block, np.float32) if not block.flags.c_contiguous else block

    def _spectral_run(self, k: int, info: ChannelInfo) -> int:
        """How many steps from ``k`` on have a frequency response (0: step ``k`` has none)."""
        n = 0
        while k + n < len(self.steps) and self.steps[k + n].frequency_response(8, info) is not None:
            n += 1
        return n

    def __repr__(self) -> str:
        return f"Chain({list(self.steps)!r})"


def _to_microvolts(raw: np.ndarray, gains_uv: np.ndarray) -> np.ndarray:
    """``raw * gains`` as float32, ``(n_samples, n_channels)`` viewing a channel-major array."""
    out = channel_major(raw, np.float32)
    out *= np.asarray(gains_uv, dtype=np.float32)[:, np.newaxis]
    return out.T
