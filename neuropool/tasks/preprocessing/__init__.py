"""Neuropixels AP-band cleaning, one block at a time: phase shift, high-pass, common reference.

``build_chain(PreprocessParams())`` gives the standard chain; ``chain.process(read, start, stop,
n_samples, info)`` returns float32 µV for samples ``[start, stop)``, reading
``chain.margin(fs)`` extra samples on each side so that the concatenated output does not depend
on how the recording is cut into blocks.

Accuracy (measured by ``tests/tasks/test_preprocessing.py`` and the margin sweep below, on
synthetic NP1-like data: 64 channels, 10 µV rms noise, spikes, DC offsets up to ±500 µV, LFP-like
drift, one noisy channel; errors are the worst absolute sample error divided by the RMS of the
output):

* block-size independence with the default margins (phase shift 40 ms + high-pass 5/300 Hz =
  16.7 ms, 1,700 samples per side at 30 kHz): worst error 1.6e-5 of the RMS (the test asserts
  < 1e-4); the bulk of samples agree to float32 rounding;
* parity with SpikeInterface 0.105 (``phase_shift`` -> ``highpass_filter(300, order 3)`` ->
  ``common_reference("global", "median")``, one ``get_traces`` over the whole recording, float32):
  the same figure, 1.6e-5, first and last samples included (the test asserts < 1e-4);
* trade-off between the phase-shift margin (the high-pass margin is not the limit: at 5 periods
  its transient is below 1e-7) and the worst block-boundary error:

  ======================  ======  ======  ======  ======  ======
  phase-shift margin      5 ms    10 ms   20 ms   40 ms   80 ms
  worst error / RMS       TODO    TODO    TODO    TODO    TODO
  ======================  ======  ======  ======  ======  ======

Speed: see the printed measurement of the test suite (this implementation vs SpikeInterface's
``get_traces`` on the same data and blocks).
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
