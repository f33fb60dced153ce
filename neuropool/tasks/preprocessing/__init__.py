"""Neuropixels AP-band cleaning, one block at a time: phase shift, high-pass, bad channels,
common reference or destripe.

One step per module (``phase_shift``, ``highpass``, ``interpolate``, ``common_reference``,
``destripe``); bad-channel detection (``bad_channels``) runs once per recording and reaches the
steps as ``ChannelInfo.labels``; ``params`` holds the parameters, the ``ibl`` / ``aind`` presets
and ``build_chain``.

``build_chain(PreprocessParams())`` gives the standard chain; ``chain.process(read, start, stop,
n_samples, info)`` returns float32 µV for samples ``[start, stop)``, reading
``chain.margin(fs)`` extra samples on each side (1,700 at 30 kHz by default: 40 ms for the
phase shift + 5 periods of 300 Hz for the high-pass) so that the concatenated output does not
depend on how the recording is cut into blocks.

Accuracy, measured on the synthetic data of ``tests/tasks/test_preprocessing.py`` (64 channels,
3.25 s at 30 kHz, int16 at 2.34 µV/bit, white noise 10 µV + 3 µV common + one 80 µV channel,
spikes, DC offsets up to ±500 µV, 3 and 60 Hz drift, NP1 ADC shifts). "worst" is
``max |ours - ref| / RMS(ref)`` over every sample and channel, recording edges included;
"rms" is ``RMS(ours - ref) / RMS(ref)``. "parity" compares with SpikeInterface 0.105
(``phase_shift`` -> ``highpass_filter(300, order 3, sos, forward-backward)`` ->
``common_reference(global, median)``, float32, one ``get_traces`` over the whole recording)
over 4 ways of cutting blocks; "block" compares our blocks with our own single block:

=========  ===============================  ===============================  =============
phase      parity, white noise              parity, noise low-passed 10 kHz   block
shift      worst / rms                      worst / rms                       worst
=========  ===============================  ===============================  =============
fir 10ms   3.8e-1 / 2.1e-2                  3.5e-2 / 1.7e-3                   2e-6
fir 20ms   2.3e-1 / 1.5e-2                  1.7e-2 / 1.2e-3                   3e-6
fir 40ms   1.3e-1 / 1.0e-2  (default)       7.7e-3 / 8.1e-4                   3e-6
fir 80ms   7.9e-2 / 6.9e-3                  6.3e-3 / 5.6e-4                   2e-6
taper 10   1.8e-1 / 8.3e-3                  1.1e-2 / 6.9e-4                   1.7e-1
taper 40   8.9e-2 / 6.5e-3                  6.3e-3 / 5.3e-4                   8.9e-2
taper 80   6.6e-2 / 5.5e-3                  6.0e-3 / 4.6e-4                   6.6e-2
=========  ===============================  ===============================  =============

Why parity is not tighter: an exact fractional delay has the kernel ``sinc(n - s)``, which
decays only as ``1/n``, so every output sample depends on samples arbitrarily far away, and
for white noise the part beyond a margin ``M`` carries ``~ sigma / sqrt(M)``. SpikeInterface's
own result therefore depends on its chunking and FFT length: run in 7,777- or 30,000-sample
chunks it differs from its single call by 6.4e-2 / 4.6e-3 (white) and 6.2e-3 / 4.5e-4
(low-passed), the same order as the figures above. The worst errors sit on the
80 µV white channel and at frequencies near Nyquist (the median reference then mixes them
across channels); without energy near Nyquist what remains is SpikeInterface's 1/n ringing of
the zero-padded DC offset at the recording's edges, which it carries through the recording
while our FIR stops it at 40 ms. The parts of the chain other than the phase shift match
SpikeInterface to float rounding (high-pass 2e-6; median and mean reference identical here).

High-pass margin vs block independence (worst, fir 40 ms): 2 periods 1.7e-2, 3 periods
1.0e-3, 4 periods 2.9e-5, 5 periods (default, as SpikeInterface) 2.1e-6, 8 periods 1.3e-7.

Speed (384 channels, 1 s blocks, one thread): inside the recording the phase shift and the
high-pass run as one float32 FFT (:mod:`.spectral`), about 0.27 s per block against 1.7-1.9 s for
SpikeInterface's ``get_traces`` on the same blocks; blocks at the recording's edges run step by
step (about 0.75 s).
"""

from __future__ import annotations

from .bad_channels import BadChannelParams, detect_bad_channels
from .base import DEAD, GOOD, LABEL_NAMES, NOISY, OUTSIDE, ChannelInfo, Step, margin_samples
from .chain import Chain, ReadFn
from .common_reference import CommonReference
from .destripe import SpatialHighPass
from .highpass import HighPass, butter_highpass_sos
from .interpolate import InterpolateBadChannels
from .params import PRESETS, BadChannelsConfig, DestripeParams, PreprocessParams, build_chain
from .phase_shift import PhaseShift, fractional_delay

__all__ = [
    "DEAD",
    "GOOD",
    "LABEL_NAMES",
    "NOISY",
    "OUTSIDE",
    "PRESETS",
    "BadChannelParams",
    "BadChannelsConfig",
    "Chain",
    "ChannelInfo",
    "CommonReference",
    "DestripeParams",
    "HighPass",
    "InterpolateBadChannels",
    "PhaseShift",
    "PreprocessParams",
    "ReadFn",
    "SpatialHighPass",
    "Step",
    "build_chain",
    "butter_highpass_sos",
    "detect_bad_channels",
    "fractional_delay",
    "margin_samples",
]
