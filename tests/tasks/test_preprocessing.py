"""The preprocessing chain against SpikeInterface, across block sizes, through pickle.

Errors are reported as ``max |ours - reference| / RMS(reference)`` (worst sample, all channels,
recording edges included) and ``RMS(ours - reference) / RMS(reference)``. The synthetic data
are deliberately hard for a chunked phase shift: white noise up to Nyquist (10 µV, plus one
80 µV channel), spikes, per-channel DC offsets up to ±500 µV and low-frequency drift.
"""

from __future__ import annotations

import functools
import pickle
import time

import cloudpickle
import numpy as np
import pydantic
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropool.errors import ConfigError, RawDataError
from neuropool.tasks.preprocessing import (
    Chain,
    ChannelInfo,
    CommonReference,
    HighPass,
    PhaseShift,
    PreprocessParams,
    build_chain,
    fractional_delay,
)

si = pytest.importorskip("spikeinterface.core")
spre = pytest.importorskip("spikeinterface.preprocessing")

FS = 30_000.0
GAIN_UV = 2.34375  # NP1 AP gain 500: 1.2 V / 1024 / 500 * 1e6 / 1.0 µV per bit
# n + 2 * 40 ms = 100,000 samples, a fast FFT length, so the FFT lengths of SpikeInterface's
# single get_traces call and of ours coincide (used by the exact "taper" comparison).
N_SAMPLES = 97_600
NOISY_CHANNEL = 21

# Bounds asserted below (measured values in the comments, default margins).
PARITY_WORST = 0.2  # white noise: 0.14 (fir), 0.09 (taper)
PARITY_RMS = 0.02  # white noise: 1.1e-2 (fir), 3.5e-3 (taper)
PARITY_BANDLIMITED_WORST = 0.02  # noise low-passed at 10 kHz: 7e-3 (fir)
BLOCK_INDEPENDENCE = 1e-4  # fir: 2e-6


def np1_shifts(n_channels: int) -> np.ndarray:
    """NP1-like ADC delays: 13 ADC cycles, 12 channels per ADC, ADCs interleaved in pairs."""
    channels = np.arange(n_channels)
    return ((channels % 24) // 2) / 13.0


@functools.lru_cache(maxsize=4)
def synthetic(
    n_channels: int = 64, n_samples: int = N_SAMPLES, seed: int = 0, bandlimited: bool = False
) -> tuple[np.ndarray, ChannelInfo]:
    """int16 raw data and its ChannelInfo (read-only arrays, cached)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 10.0, (n_samples, n_channels))
    noise[:, NOISY_CHANNEL % n_channels] *= 8.0
    if bandlimited:
        sos = scipy.signal.butter(8, 10_000.0, fs=FS, output="sos")
        noise = scipy.signal.sosfiltfilt(sos, noise, axis=0)
    t = np.arange(n_samples) / FS
    x = noise + rng.normal(0.0, 3.0, (n_samples, 1))  # common-mode noise
    x += 50.0 * np.sin(2 * np.pi * 3.0 * t)[:, None]  # slow drift
    x += 20.0 * np.sin(2 * np.pi * 60.0 * t + 1.0)[:, None] * rng.uniform(0.5, 1.5, n_channels)
    x += rng.uniform(-500.0, 500.0, n_channels)  # DC offsets
    wt = np.arange(-30, 60) / FS
    waveform = -80 * np.exp(-((wt / 3e-4) ** 2)) + 30 * np.exp(-(((wt - 6e-4) / 5e-4) ** 2))
    for _ in range(int(200 * n_samples / FS)):
        s, c, amp = rng.integers(100, n_samples - 100), rng.integers(n_channels), rng.uniform(0.5, 2)
        for dc in range(-2, 3):
            if 0 <= c + dc < n_channels:
                x[s - 30 : s + 60, c + dc] += amp * np.exp(-abs(dc)) * waveform
    raw = np.clip(np.round(x / GAIN_UV), -32768, 32767).astype(np.int16)
    raw.setflags(write=False)
    info = ChannelInfo(
        sampling_frequency=FS,
        gains_uv=np.full(n_channels, GAIN_UV),
        adc_shifts=np1_shifts(n_channels),
        positions=np.column_stack([np.arange(n_channels) % 2 * 32.0, np.arange(n_channels) * 10.0]),
    )
    return raw, info


def si_recording(raw: np.ndarray, info: ChannelInfo):
    """A SpikeInterface NumpyRecording with our gains and ADC shifts."""
    rec = si.NumpyRecording([np.array(raw)], FS)
    rec.set_channel_gains(info.gains_uv)
    rec.set_channel_offsets(0.0)
    rec.set_property("inter_sample_shift", np.asarray(info.adc_shifts))
    return rec


def si_chain(rec, operator: str = "median"):
    """SpikeInterface's phase_shift -> highpass_filter -> common_reference, float32."""
    rec = spre.phase_shift(rec, dtype="float32")
    rec = spre.highpass_filter(
        rec, freq_min=300.0, filter_order=3, ftype="butter", filter_mode="sos",
        direction="forward-backward",
    )
    return spre.common_reference(rec, reference="global", operator=operator)


def in_blocks(chain: Chain, raw: np.ndarray, info: ChannelInfo, cuts) -> np.ndarray:
    """Concatenated ``chain.process`` over the blocks between consecutive ``cuts``."""
    n = raw.shape[0]
    read = lambda a, b: raw[a:b]  # noqa: E731
    edges = [0, *sorted(set(cuts) - {0, n}), n]
    return np.concatenate(
        [chain.process(read, a, b, n, info) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    )


def errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(worst absolute error, RMS error), both relative to the RMS of ``ref``."""
    diff = ours.astype(np.float64) - ref
    rms = np.sqrt(np.mean(np.square(ref, dtype=np.float64)))
    return float(np.abs(diff).max() / rms), float(np.sqrt(np.mean(diff**2)) / rms)


# -- parity with SpikeInterface ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["fir", "taper"])
def test_chain_matches_spikeinterface(method):
    raw, info = synthetic()
    reference = si_chain(si_recording(raw, info)).get_traces(return_in_uV=True)
    chain = build_chain(PreprocessParams(phase_shift_method=method))
    for block in (7_777, 30_000):
        ours = in_blocks(chain, raw, info, range(0, raw.shape[0], block))
        worst, rms = errors(ours, reference)
        print(f"\n{method} blocks of {block}: worst {worst:.2e}, rms {rms:.2e} of the RMS")
        assert worst < PARITY_WORST and rms < PARITY_RMS


def test_chain_matches_spikeinterface_bandlimited():
    """With no energy near Nyquist the disagreement is the zero-padded DC step at the edges."""
    raw, info = synthetic(bandlimited=True)
    reference = si_chain(si_recording(raw, info)).get_traces(return_in_uV=True)
    ours = in_blocks(build_chain(PreprocessParams()), raw, info, range(0, raw.shape[0], 7_777))
    worst, rms = errors(ours, reference)
    print(f"\nband-limited: worst {worst:.2e}, rms {rms:.2e}")
    assert worst < PARITY_BANDLIMITED_WORST


def test_phase_shift_taper_is_spikeinterface_operator():
    """One block over the whole recording: same FFT length, same zero padding -> float rounding."""
    raw, info = synthetic()
    reference = spre.phase_shift(si_recording(raw, info), dtype="float32").get_traces(return_in_uV=True)
    ours = in_blocks(Chain([PhaseShift(method="taper")]), raw, info, [])
    scale = np.sqrt(np.mean(reference.var(axis=0)))  # DC excluded
    assert np.abs(ours - reference).max() / scale < 1e-5


def test_phase_shift_fir_matches_spikeinterface():
    raw, info = synthetic(bandlimited=True)
    reference = spre.phase_shift(si_recording(raw, info), dtype="float32").get_traces(return_in_uV=True)
    ours = in_blocks(Chain([PhaseShift()]), raw, info, range(0, raw.shape[0], 10_000))
    scale = np.sqrt(np.mean(reference.var(axis=0)))
    worst = np.abs(ours - reference).max() / scale
    print(f"\nphase shift alone (band-limited noise): worst {worst:.2e} of the AC RMS")
    assert worst < 0.02


def test_fractional_delay_direction_and_integer_shift():
    x = np.random.default_rng(3).normal(size=(3, 1000))
    for half_width in (None, 50):
        y = fractional_delay(x, np.array([1.0, 0.0, 2.0]), n_fft=1200, half_width=half_width)
        np.testing.assert_allclose(y[0, 1:], x[0, :-1], atol=1e-12)  # y[n] = x[n - 1]
        np.testing.assert_allclose(y[1], x[1], atol=1e-12)
        np.testing.assert_allclose(y[2, 2:], x[2, :-2], atol=1e-12)


def test_highpass_matches_spikeinterface():
    raw, info = synthetic()
    rec = spre.highpass_filter(si_recording(raw, info), freq_min=300.0, filter_order=3, dtype="float32")
    reference = rec.get_traces(return_in_uV=True)
    ours = in_blocks(Chain([HighPass(300.0, 3)]), raw, info, range(0, raw.shape[0], 7_777))
    worst, _ = errors(ours, reference)
    assert worst < 1e-5


@pytest.mark.parametrize("operator", ["median", "average"])
def test_common_reference_matches_spikeinterface(operator):
    raw, info = synthetic()
    rec = spre.common_reference(si_recording(raw, info), operator=operator, dtype="float32")
    reference = rec.get_traces(return_in_uV=True)
    ours = in_blocks(Chain([CommonReference(operator)]), raw, info, [50_000])
    worst, _ = errors(ours, reference)
    assert worst < 1e-6


# -- block-size independence ------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def one_block(operator: str) -> np.ndarray:
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    return in_blocks(build_chain(PreprocessParams(operator=operator)), raw, info, [])


@settings(max_examples=30, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=23_999), min_size=1, max_size=12),
    operator=st.sampled_from(["median", "average"]),
)
def test_block_size_independence(cuts, operator):
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    whole = one_block(operator)
    ours = in_blocks(build_chain(PreprocessParams(operator=operator)), raw, info, cuts)
    worst, _ = errors(ours, whole)
    assert worst < BLOCK_INDEPENDENCE


@pytest.mark.parametrize("block", [1, 2_000, 9_999])
def test_regular_blocks_independence(block):
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    if block == 1:  # one sample per block is slow: cover the first and last 40 only
        cuts = [*range(1, 40), *range(23_960, 24_000)]
    else:
        cuts = range(0, 24_000, block)
    worst, _ = errors(in_blocks(build_chain(PreprocessParams()), raw, info, cuts), one_block("median"))
    assert worst < BLOCK_INDEPENDENCE


# -- chain contract -----------------------------------------------------------------------------


def test_reads_only_block_plus_margins():
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    chain = build_chain(PreprocessParams())
    margin = chain.margin(FS)
    assert margin == 1_200 + 500
    calls = []

    def read(a, b):
        calls.append((a, b))
        return raw[a:b]

    out = chain.process(read, 10_000, 12_000, 24_000, info)
    assert out.shape == (2_000, 24) and out.dtype == np.float32 and out.flags.c_contiguous
    assert calls == [(10_000 - margin, 12_000 + margin)]
    calls.clear()
    chain.process(read, 100, 200, 24_000, info)
    assert calls == [(0, 200 + margin)]
    assert chain.process(read, 5, 5, 24_000, info).shape == (0, 24)


def test_bad_block_requests():
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    chain = build_chain(PreprocessParams())
    with pytest.raises(ValueError, match="start"):
        chain.process(lambda a, b: raw[a:b], 300, 200, 24_000, info)
    with pytest.raises(RawDataError, match="shape"):
        chain.process(lambda a, b: raw[a:b, :10], 0, 200, 24_000, info)
    with pytest.raises(RawDataError, match="adc_shifts"):
        ChannelInfo(FS, np.ones(4), np.zeros(3), np.zeros((4, 2)))


def test_no_phase_shift_and_zero_shifts():
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    no_shift = ChannelInfo(FS, info.gains_uv, np.zeros(24), info.positions)
    a = in_blocks(build_chain(PreprocessParams(phase_shift=False)), raw, info, [7_000])
    b = in_blocks(build_chain(PreprocessParams()), raw, no_shift, [7_000])
    np.testing.assert_array_equal(a, b)


# -- pickling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)])
def test_chain_pickles(dumps, loads):
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    params = PreprocessParams(operator="average", highpass_freq=250.0)
    chain = build_chain(params)
    blob = dumps(chain)
    assert len(blob) < 2_000
    clone = loads(blob)
    assert clone == chain
    assert loads(dumps(params)) == params
    assert loads(dumps(info)).n_channels == 24
    read = lambda a, b: raw[a:b]  # noqa: E731
    np.testing.assert_array_equal(
        clone.process(read, 3_000, 9_000, 24_000, info), chain.process(read, 3_000, 9_000, 24_000, info)
    )


# -- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("highpass_freq", "fast"),
        ("highpass_freq", -300.0),
        ("highpass_freq", 0.0),
        ("highpass_freq", float("nan")),
        ("highpass_order", 0),
        ("highpass_order", 11),
        ("highpass_order", 2.5),
        ("operator", "mean"),
        ("reference", "local"),
        ("phase_shift", "sometimes"),
        ("phase_shift_method", "sinc"),
        ("margin_ms", -1.0),
        ("margin_ms", 0.0),
        ("bogus_field", 1),
    ],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        PreprocessParams(**{field: value})


def test_frequency_above_nyquist_is_a_config_error():
    raw, info = synthetic(n_channels=24, n_samples=24_000, seed=1)
    chain = build_chain(PreprocessParams(highpass_freq=20_000.0))  # valid alone, not at 30 kHz
    with pytest.raises(ConfigError, match="highpass_freq"):
        chain.process(lambda a, b: raw[a:b], 0, 1_000, 24_000, info)
    with pytest.raises(ConfigError, match="highpass_freq"):
        chain.check(info)


def test_defaults():
    params = PreprocessParams()
    assert (params.phase_shift, params.highpass_freq, params.highpass_order) == (True, 300.0, 3)
    assert (params.reference, params.operator, params.margin_ms) == ("global", "median", None)
    steps = build_chain(params).steps
    assert [type(s) for s in steps] == [PhaseShift, HighPass, CommonReference]
    assert build_chain(PreprocessParams(margin_ms=10.0)).margin(FS) == 600


# -- speed (printed, not asserted) -----------------------------------------------------------------


def test_speed_against_spikeinterface():
    raw, info = synthetic(n_channels=384, n_samples=60_000, seed=2)
    rec = si_chain(si_recording(raw, info))
    chain = build_chain(PreprocessParams())
    read = lambda a, b: raw[a:b]  # noqa: E731
    block = 30_000
    timings = {}
    for name, run in (
        ("spikeinterface", lambda a, b: rec.get_traces(start_frame=a, end_frame=b, return_in_uV=True)),
        ("neuropool", lambda a, b: chain.process(read, a, b, 60_000, info)),
    ):
        t0 = time.perf_counter()
        for start in range(0, 60_000, block):
            run(start, start + block)
        timings[name] = time.perf_counter() - t0
    print(
        f"\n384 channels x 2 s in 1 s blocks: spikeinterface {timings['spikeinterface']:.2f} s, "
        f"neuropool {timings['neuropool']:.2f} s "
        f"(x{timings['spikeinterface'] / timings['neuropool']:.2f} faster)"
    )
