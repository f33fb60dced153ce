"""The preprocessing chain's parameters, its named presets, and the chain they build.

Every field is a key of the ``preprocess:`` section of ``configs/pipeline/*.yaml``. A preset
(``preset: ibl`` or ``preset: aind``) fills in the published parameters of that institution's
chain; any field given next to it overrides the preset's value:

``ibl`` (``ibldsp.voltage.destripe`` as IBL runs it on every Neuropixels recording)
    High-pass 300 Hz (Butterworth order 3, forward-backward), ADC phase shift, bad channels
    detected with IBL's thresholds (dead: coherence < -0.5; noisy: PSD above
    0.8 Nyquist > 0.02 µV²/Hz or coherence > 1; outside: top block with low-frequency coherence
    < -0.75) and interpolated (kriging, p = 1.3, 20 µm on NP1), then the spatial high-pass with
    automatic gain control (``kfilt``: 0.1 s AGC, order 3, 0.01 of the spatial Nyquist, 60
    mirrored channels). Outside channels are kept, untouched by the spatial filter, as IBL does.
    IBL runs the detection on the raw AP stream, which Neuropixels 1.0 high-passes at 300 Hz in
    hardware; the preset high-passes the segments at 300 Hz first, which is the same for NP1 and
    keeps the LFP and drift of wide-band probes (NP2) from hiding dead channels (set
    ``bad_channels.highpass_freq: null`` for IBL's exact raw input).
``aind`` (AIND's ``aind-ephys-preprocessing`` capsule, ``params.json``, ``denoising_strategy:
cmr``)
    Phase shift, high-pass 300 Hz (SpikeInterface's default order 5), bad channels detected
    on the high-passed data (dead -0.5, noisy 1.0, outside -0.3), outside channels removed, a
    global median reference, then dead and noisy channels removed from the output; a probe with
    half or more of its channels bad is refused (``max_bad_fraction: 0.5``).

Without a preset the chain is: phase shift, high-pass 300 Hz order 3, bad channels detected on
high-passed data with IBL's thresholds, dead/noisy interpolated, outside channels removed, global
median reference (AIND's order of operations with IBL's filter and repair).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .bad_channels import BadChannelParams
from .base import DEAD, NOISY, Step
from .chain import Chain
from .common_reference import CommonReference
from .destripe import SpatialHighPass
from .highpass import HighPass
from .interpolate import InterpolateBadChannels
from .phase_shift import PhaseShift

__all__ = ["PRESETS", "BadChannelsConfig", "DestripeParams", "PreprocessParams", "build_chain"]


class BadChannelsConfig(BadChannelParams):
    """Bad-channel detection (:class:`BadChannelParams`) and what is done with the channels found.

    Attributes
    ----------
    detect : bool
        Run the detection (once per recording, on ``n_segments`` segments spread over it).
    action : {"interpolate", "remove", "keep"}
        What happens to dead and noisy channels: replaced by a kriging-weighted sum of good
        neighbours (IBL), removed from the output after the reference (AIND), or kept as they
        are (only labelled).
    remove_outside : bool
        Drop the channels outside the brain from the output (AIND); kept otherwise (IBL).
    max_bad_fraction : float
        Refuse the probe (the task fails, naming the counts) when this fraction of its channels
        or more is bad: a broken or uninserted probe is not worth sorting.
    sigma_um : float or None
        Interpolation kernel length in µm; None: the vertical contact pitch (20 µm on NP1).
    p : float
        Interpolation kernel exponent (1.3 in IBL and SpikeInterface).
    """

    detect: bool = True
    action: Literal["interpolate", "remove", "keep"] = "interpolate"
    remove_outside: bool = True
    max_bad_fraction: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    sigma_um: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    p: float = Field(default=1.3, gt=0, allow_inf_nan=False)

    def detector_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~.bad_channels.detect_bad_channels`."""
        return self.model_dump(include=set(BadChannelParams.model_fields))


class DestripeParams(BaseModel):
    """The spatial high-pass of IBL's destripe (:class:`~.destripe.SpatialHighPass`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agc_window_s: float | None = Field(default=0.1, gt=0, allow_inf_nan=False)
    agc_epsilon: float = Field(default=0.003, ge=0, allow_inf_nan=False)
    order: int = Field(default=3, ge=1, le=10)
    cutoff: float = Field(default=0.01, gt=0, lt=1)
    n_channel_pad: int = Field(default=60, ge=0, le=1000)
    n_channel_taper: int = Field(default=0, ge=0, le=1000)


#: Published parameters of each institution's chain (see the module docstring).
PRESETS: dict[str, dict[str, Any]] = {
    "ibl": {
        "phase_shift": True,
        "highpass_freq": 300.0,
        "highpass_order": 3,
        "lowpass_freq": None,
        "bad_channels": {
            "detect": True, "highpass_freq": 300.0, "dead_threshold": -0.5,
            "noisy_coherence_threshold": 1.0, "psd_hf_threshold": 0.02,
            "outside_threshold": -0.75, "action": "interpolate", "remove_outside": False,
        },
        "reference": "destripe",
        "destripe": {"agc_window_s": 0.1, "order": 3, "cutoff": 0.01, "n_channel_pad": 60},
    },
    "aind": {
        "phase_shift": True,
        "highpass_freq": 300.0,
        "highpass_order": 5,
        "lowpass_freq": None,
        "bad_channels": {
            "detect": True, "highpass_freq": 300.0, "dead_threshold": -0.5,
            "noisy_coherence_threshold": 1.0, "psd_hf_threshold": 0.02,
            "outside_threshold": -0.3, "action": "remove", "remove_outside": True,
            "max_bad_fraction": 0.5,
        },
        "reference": "global",
        "operator": "median",
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, merging nested dictionaries key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class PreprocessParams(BaseModel):
    """Parameters of the AP-band preprocessing chain (see the module docstring).

    Attributes
    ----------
    preset : {"ibl", "aind"} or None
        Start from an institution's published chain; other fields override it.
    phase_shift : bool
        Correct the ADC multiplexing delays (``ChannelInfo.adc_shifts``).
    phase_shift_method : {"fir", "taper"}
        ``"fir"`` (default): windowed-sinc FIR, output independent of the block size.
        ``"taper"``: SpikeInterface's algorithm, whose output depends on the block boundaries.
    highpass_freq : float
        High-pass cut-off in Hz (> 0, below Nyquist: checked on the recording).
    highpass_order : int
        Butterworth order of one pass (1..10); the filter runs forward and backward.
    lowpass_freq : float or None
        Set to make the filter a band-pass ``[highpass_freq, lowpass_freq]``.
    bad_channels : BadChannelsConfig
        Detection thresholds and what to do with the channels found.
    reference : {"global", "local", "destripe", "none"}
        Common reference across all channels, in an annulus around each channel, IBL's spatial
        high-pass with AGC instead, or nothing. Channels outside the brain never enter a
        reference; dead and noisy ones enter it interpolated, or as they are with
        ``bad_channels.action`` ``remove`` (as AIND) or ``keep`` (the median shrugs them off).
    operator : {"median", "average"}
        How a global or local reference is computed.
    local_radius_um : (float, float)
        Inner and outer radius of the local reference's annulus, µm.
    min_local_neighbors : int
        Fewest channels in a local reference: with fewer in the annulus, the closest ones beyond
        the inner radius are used (SpikeInterface's rule).
    destripe : DestripeParams
        Parameters of ``reference: destripe``.
    margin_ms : float or None
        Context in ms on each side of a block for each step that needs some; None picks each
        step's default (40 ms phase shift, 5 periods of the high-pass, half the AGC window).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["ibl", "aind"] | None = None
    phase_shift: bool = True
    phase_shift_method: Literal["fir", "taper"] = "fir"
    highpass_freq: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    highpass_order: int = Field(default=3, ge=1, le=10)
    lowpass_freq: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    bad_channels: BadChannelsConfig = BadChannelsConfig()
    reference: Literal["global", "local", "destripe", "none"] = "global"
    operator: Literal["median", "average"] = "median"
    local_radius_um: tuple[float, float] = (30.0, 55.0)
    min_local_neighbors: int = Field(default=5, ge=1, le=1000)
    destripe: DestripeParams = DestripeParams()
    margin_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = data["preset"]
            if preset not in PRESETS:
                raise ValueError(f"preset must be one of {sorted(PRESETS)} or null, got {preset!r}")
            return _merge(PRESETS[preset], data)
        return data

    @model_validator(mode="after")
    def _check_band(self) -> PreprocessParams:
        if self.lowpass_freq is not None and self.lowpass_freq <= self.highpass_freq:
            raise ValueError(
                f"lowpass_freq ({self.lowpass_freq} Hz) must be above highpass_freq "
                f"({self.highpass_freq} Hz) for a band-pass; set it to null for a high-pass"
            )
        inner, outer = self.local_radius_um
        if not 0 <= inner < outer:
            raise ValueError(f"local_radius_um must be (inner, outer) with 0 <= inner < outer, "
                             f"got {self.local_radius_um}")
        return self


def build_chain(params: PreprocessParams) -> Chain:
    """The chain described by ``params``.

    [phase shift], high-pass (or band-pass), [interpolation of dead/noisy channels], then the
    common reference, the spatial high-pass (destripe) or nothing. Bad-channel *detection* is
    not a step: it runs once per recording and reaches the steps as ``ChannelInfo.labels``.

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
            freq_max=None if params.lowpass_freq is None else float(params.lowpass_freq),
        )
    )
    bad = params.bad_channels
    if bad.detect and bad.action == "interpolate":
        steps.append(InterpolateBadChannels(sigma_um=bad.sigma_um, p=bad.p,
                                            interpolate_labels=(DEAD, NOISY)))
    if params.reference == "destripe":
        d = params.destripe
        steps.append(SpatialHighPass(agc_window_s=d.agc_window_s, agc_epsilon=d.agc_epsilon,
                                     order=d.order, cutoff=d.cutoff, n_channel_pad=d.n_channel_pad,
                                     n_channel_taper=d.n_channel_taper))
    elif params.reference in ("global", "local"):
        steps.append(CommonReference(operator=params.operator, reference=params.reference,
                                     local_radius_um=tuple(params.local_radius_um),
                                     min_local_neighbors=params.min_local_neighbors))
    return Chain(steps)
