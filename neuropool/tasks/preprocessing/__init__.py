"""Neuropixels AP-band cleaning, one block at a time: phase shift, high-pass, common reference.

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

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import ChannelInfo, Step, margin_samples
from .chain import Chain, ReadFn
from .common_reference import CommonReference
from .highpass import HighPass, butter_highpass_sos
from .phase_shift import PhaseShift, fractional_delay

__all__ = [
    "Chain",
    "ChannelInfo",
    "CommonReference",
    "HighPass",
    "PhaseShift",
    "PreprocessParams",
    "ReadFn",
    "Step",
    "build_chain",
    "butter_highpass_sos",
    "fractional_delay",
    "margin_samples",
]


class PreprocessParams(BaseModel):
    """Parameters of the standard AP-band preprocessing chain.

    Attributes
    ----------
    phase_shift : bool
        Correct the ADC multiplexing delays (``ChannelInfo.adc_shifts``).
    highpass_freq : float
        High-pass cut-off in Hz, > 0; it must also be below the Nyquist frequency, which is
        checked when the chain is applied to a recording (``ConfigError``).
    highpass_order : int
        Butterworth order of one pass (1..10); the filter runs forward and backward.
    reference : {"global"}
        Channels forming the common reference.
    operator : {"median", "average"}
        How the common reference is computed.
    margin_ms : float or None
        Context in ms (> 0) on each side of a block *for each step that needs some* (phase
        shift and high-pass), so the chain reads ``2 * margin_ms`` per side when both run. None
        picks each step's default: 40 ms for the phase shift, ``5000 / highpass_freq`` ms for
        the high-pass.
    phase_shift_method : {"fir", "taper"}
        ``"fir"`` (default): windowed-sinc FIR, output independent of the block size.
        ``"taper"``: SpikeInterface's algorithm (exact circular delay of a tapered block), whose
        output depends on the block boundaries by up to ~0.1 of the RMS (see above).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase_shift: bool = True
    highpass_freq: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    highpass_order: int = Field(default=3, ge=1, le=10)
    reference: Literal["global"] = "global"
    operator: Literal["median", "average"] = "median"
    margin_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    phase_shift_method: Literal["fir", "taper"] = "fir"


def build_chain(params: PreprocessParams) -> Chain:
    """The chain described by ``params``: [phase shift], high-pass, common reference.

    Parameters
    ----------
    params : PreprocessParams
        Validated parameters.

    Returns
    -------
    Chain
    """
    steps: list[Step] = []
    if params.phase_shift:
        steps.append(PhaseShift(margin_ms=params.margin_ms, method=params.phase_shift_method))
    steps.append(
        HighPass(
            freq_min=float(params.highpass_freq),
            order=int(params.highpass_order),
            margin_ms=params.margin_ms,
        )
    )
    steps.append(CommonReference(operator=params.operator, reference=params.reference))
    return Chain(steps)
