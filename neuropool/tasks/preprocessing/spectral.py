"""Consecutive linear filters applied as one FFT: the chain's fast path away from the edges.

The phase shift (``method="fir"``) and the Butterworth filters are linear, time-invariant and
act on each channel separately, so inside a recording each is a product in the frequency
domain: the windowed-sinc delay by its kernel's spectrum, a forward-backward Butterworth by
``|H(f)|^2`` (what ``sosfiltfilt`` computes away from its edges). ``Chain.process`` groups such
consecutive steps and, for a window that touches neither edge of the recording, runs them as
one ``rfft -> multiply -> irfft`` in float32 instead of one float64 FFT for the delay and a
``sosfiltfilt`` for the filter. At the recording's edges each step runs on its own, with its own
edge rule, so the results near the edges are the same as before.

Why it is exact enough: the group reads the sum of its steps' margins on each side, and the
kept samples lie at least that far from the circular wrap of the FFT. The sinc kernel is exactly
zero beyond the phase shift's margin and the Butterworth kernel decays with its slowest pole
(about 1.1 ms at 300 Hz, order 3), so the wrap reaches the kept samples only through kernel
tails of ``exp(-margin / tau)``. The per-channel mean is taken out before the float32 transform
(and put back times the DC gain) so that DC offsets of hundreds of µV cost no precision.
Measured against the step-by-step float64 path (one block over the whole synthetic recording of
``tests/tasks/test_preprocessing.py``, cut into 7,777- and 30,000-sample blocks): worst sample
7e-6 of the RMS, RMS 7e-7, float32 rounding.

Speed (384 channels, 1 s blocks + 56.7 ms margins, one thread, with the median reference): the
whole chain ~0.27 s per interior block against ~0.75 s step by step (profile:
``benchmarks/bench_preprocess.py --profile``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from .base import ChannelInfo, Step, channel_major

__all__ = ["SpectralResponse", "apply_responses", "combine"]

SpectralResponse = tuple[np.ndarray, np.ndarray]
"""``(rows, index)``: ``rows`` ``(k, n_fft // 2 + 1)`` complex or real responses and ``index``
``(n_channels,)`` int, the row that applies to each channel (channels share few responses:
NP1 has 13 distinct ADC delays for 384 channels)."""


def combine(responses: Sequence[SpectralResponse], n_channels: int) -> SpectralResponse:
    """The product of several per-channel responses, keeping only the distinct combinations.

    Parameters
    ----------
    responses : sequence of (rows, index)
        One per step, all for the same FFT length.
    n_channels : int
        Number of channels.

    Returns
    -------
    (rows, index)
        complex64 rows of the combined response and each channel's row.
    """
    keys = np.stack([np.broadcast_to(index, (n_channels,)) for _, index in responses], axis=1)
    unique, index = np.unique(keys, axis=0, return_inverse=True)
    rows = []
    for combo in unique:
        product = np.ones(responses[0][0].shape[1], dtype=np.complex128)
        for (step_rows, _), row in zip(responses, combo, strict=True):
            product = product * step_rows[row]
        rows.append(product)
    return np.asarray(rows, dtype=np.complex64), index.reshape(-1)


def apply_responses(block: np.ndarray, steps: Sequence[Step], info: ChannelInfo) -> np.ndarray:
    """Run ``steps`` (all with a frequency response) on ``block`` as one circular FFT filter.

    Parameters
    ----------
    block : numpy.ndarray
        ``(n_samples, n_channels)`` float32 µV, with at least the steps' summed margins of
        context on both sides (the output there is not exact). Overwritten when it is a
        writeable float32 transposed view of a channel-major array (the chain's own blocks).
    steps : sequence of Step
        Consecutive steps whose ``frequency_response`` is not None.
    info : ChannelInfo
        The recording's channels.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``block`` (a transposed view of a channel-major array).
    """
    n = block.shape[0]
    n_fft = scipy.fft.next_fast_len(n, real=True)
    found = [step.frequency_response(n_fft, info) for step in steps]
    if any(r is None for r in found):
        raise ValueError("apply_responses needs steps that all have a frequency response")
    rows, index = combine([r for r in found if r is not None], info.n_channels)
    x = block.T  # channel-major: the FFT runs along contiguous rows
    if not (x.flags.c_contiguous and x.dtype == np.float32 and x.flags.writeable):
        x = channel_major(block, np.float32)
    mean = x.mean(axis=1, dtype=np.float64).astype(np.float32)
    x -= mean[:, np.newaxis]  # in place: the chain owns its intermediate blocks
    spectrum = scipy.fft.rfft(x, n=n_fft, axis=1)
    for channel, row in enumerate(index):
        spectrum[channel] *= rows[row]
    y = scipy.fft.irfft(spectrum, n=n_fft, axis=1, overwrite_x=True)[:, :n]
    dc_gain = rows[index, 0].real.astype(np.float32)
    if np.any(dc_gain):
        y += (mean * dc_gain)[:, np.newaxis]
    return y.astype(np.float32, copy=False).T
