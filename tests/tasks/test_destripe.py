"""The destriping spatial filter and the local common reference against IBL and SpikeInterface.

Synthetic NP1-like data (96 channels, 1 s at 30 kHz, int16 at 2.34 µV/bit): 10 µV white noise
on every channel, a "stripe" (white common noise whose amplitude grows smoothly from 15 to
35 µV along the probe, which a global median cannot remove), 3 Hz drift and DC offsets up to
±500 µV, NP1 contact positions and ADC shifts.

Errors are ``worst = max |ours - ref| / RMS(ref)`` and ``rms = RMS(ours - ref) / RMS(ref)``,
over every sample and channel unless said otherwise. Measured (the bounds below are a little
above):

* ``SpatialHighPass`` alone against SpikeInterface's ``highpass_spatial_filter`` (float32, one
  ``get_traces`` over the recording; ours in blocks of 7,777 samples or in one): worst 1.4e-6 /
  rms 1.7e-7 (defaults), 9.9e-7 / 2.0e-7 (no AGC), 1.4e-6 / 1.5e-7 (taper 10, pad 30, cut-off
  0.02).
* IBL's ``destripe`` (high-pass 300 Hz, ``fshift``, ``kfilt`` per shank on the inside channels)
  against ``Chain([HighPass(300, 3), PhaseShift(), SpatialHighPass()])`` in blocks:
  without ADC shifts (``fshift`` is then a no-op): worst 6.7e-6 / rms 6.8e-7, recording edges
  included (one or two shanks, with or without outside channels: at most 8.0e-6 / 6.8e-7).
  With NP1 shifts, on noise low-passed at 10 kHz: worst 2.8e-3 / rms 6.5e-4 away from the
  recording's edges (50 ms excluded at each end), 0.74 / 2.5e-3 with the edges. That
  difference is the phase shift's: IBL's ``fshift`` is a circular FFT delay of the whole
  recording, which wraps its end onto its start, while ``PhaseShift`` zero-pads the edges and
  truncates the sinc at 40 ms (see its docstring; on white noise up to Nyquist: 4.3e-2 / 8.6e-3
  without the edges, 1.03 / 1.0e-2 with them).
* Local common reference against SpikeInterface's ``common_reference(reference="local")``:
  median identical, average worst 2.0e-7 (float32 sums).
* Blocks cut anywhere against one block: ``SpatialHighPass`` alone 8.6e-7, the IBL chain above
  3.2e-6 and high-pass + local median 4.4e-6 (the high-pass's margin: 2e-6 in the standard
  chain).
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import warnings

import cloudpickle
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropool.errors import ConfigError
from neuropool.tasks.preprocessing import Chain, ChannelInfo, CommonReference, HighPass, PhaseShift
from neuropool.tasks.preprocessing.base import GOOD, OUTSIDE
from neuropool.tasks.preprocessing.common_reference import _network_median, local_neighbours
from neuropool.tasks.preprocessing.destripe import (
    SpatialHighPass,
    hann_moving_average,
    spatial_highpass_matrix,
)
from tests.tasks.conftest import best_time

si = pytest.importorskip("spikeinterface.core")
spre = pytest.importorskip("spikeinterface.preprocessing")

FS = 30_000.0
GAIN_UV = 2.34375
N_CHANNELS = 96
N_SAMPLES = 30_000
EDGE = 1_500  # samples (50 ms) left out at each edge where the edge rules differ

# Bounds (measured values in the module docstring).
SI_WORST, SI_RMS = 1e-5, 1e-6
IBL_WORST, IBL_RMS = 3e-5, 3e-6  # no ADC shifts: the whole recording
IBL_SHIFTED_WORST, IBL_SHIFTED_RMS = 5e-3, 1e-3  # NP1 shifts, edges excluded
BLOCK_INDEPENDENCE = 1e-5


@functools.lru_cache(maxsize=8)
def synthetic(
    n_channels: int = N_CHANNELS,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
    bandlimited: bool = False,
    shanks: int = 1,
    shifts: bool = True,
) -> tuple[np.ndarray, ChannelInfo]:
    """int16 raw data and its ChannelInfo (read-only, cached); ``shanks`` equal shanks 250 µm
    apart, each with its own NP1 layout."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 10.0, (n_samples, n_channels))
    stripe = rng.normal(0.0, 1.0, (n_samples, 1)) * np.linspace(15.0, 35.0, n_channels)
    if bandlimited:
        sos = scipy.signal.butter(8, 10_000.0, fs=FS, output="sos")
        noise = scipy.signal.sosfiltfilt(sos, noise, axis=0)
        stripe = scipy.signal.sosfiltfilt(sos, stripe, axis=0)
    x = noise + stripe
    x += 50.0 * np.sin(2 * np.pi * 3.0 * np.arange(n_samples) / FS)[:, None]
    x += rng.uniform(-500.0, 500.0, n_channels)
    raw = np.clip(np.round(x / GAIN_UV), -32768, 32767).astype(np.int16)
    raw.setflags(write=False)
    per_shank = n_channels // shanks
    shank = np.arange(n_channels) // per_shank
    row = np.arange(n_channels) % per_shank
    positions = np.column_stack(
        [np.array([43.0, 11.0, 59.0, 27.0])[row % 4] + 250.0 * shank, 20.0 * (row // 2 + 1)]
    )
    adc = ((np.arange(n_channels) % 24) // 2) / 13.0 if shifts else np.zeros(n_channels)
    return raw, ChannelInfo(FS, np.full(n_channels, GAIN_UV), adc, positions, shank_ids=shank)


def in_blocks(chain: Chain, raw: np.ndarray, info: ChannelInfo, cuts, fft: bool = True) -> np.ndarray:
    """Concatenated ``chain.process`` over the blocks between consecutive ``cuts``."""
    n = raw.shape[0]
    edges = [0, *sorted(set(cuts) - {0, n}), n]
    return np.concatenate([
        chain.process(lambda a, b: raw[a:b], a, b, n, info, fft=fft)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ])


def errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(worst absolute error, RMS error), both relative to the RMS of ``ref``."""
    diff = ours.astype(np.float64) - ref
    rms = np.sqrt(np.mean(np.square(ref, dtype=np.float64)))
    return float(np.abs(diff).max() / rms), float(np.sqrt(np.mean(diff**2)) / rms)


def si_recording(raw: np.ndarray, info: ChannelInfo):
    """A SpikeInterface NumpyRecording of the float32 µV traces (SpikeInterface's noise levels,
    which ``highpass_spatial_filter`` needs, overflow on int16 recordings) with our positions."""
    rec = si.NumpyRecording([raw * np.float32(GAIN_UV)], FS)
    rec.set_channel_gains(1.0)
    rec.set_channel_offsets(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        rec.set_channel_locations(info.positions)
    return rec


def ibl_destripe(raw: np.ndarray, info: ChannelInfo, labels=None) -> np.ndarray:
    """``ibldsp.voltage.destripe`` on the µV data (in volts, as IBL expects), back in µV."""
    voltage = pytest.importorskip("ibldsp.voltage")
    h = {"x": info.positions[:, 0], "y": info.positions[:, 1],
         "sample_shift": np.asarray(info.adc_shifts), "shank": info.shank_ids.astype(float)}
    volts = raw.T.astype(np.float64) * (GAIN_UV * 1e-6)
    return voltage.destripe(volts, FS, h=h, channel_labels=labels).T * 1e6


def ibl_chain() -> Chain:
    return Chain([HighPass(300.0, 3), PhaseShift(), SpatialHighPass()])


# -- the parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, n", [(1500, 33_000), (1499, 9_000), (125, 2_000), (7, 500),
                                  (1500, 700), (40, 1)])
def test_moving_average_matches_fftconvolve(h, n):
    # 1500: blocks of 50 divide h; 1499 (prime): four edge blocks; 1500 / 700: shorter than
    # the window. Measured: 2e-7 of each channel's largest gain (float32 rounding).
    x = np.random.default_rng(h).normal(0.0, 10.0, (5, n)).astype(np.float32)
    x[1] = 0.0  # a dead channel stays exactly 0
    x[2, : n // 2] += 400.0
    w = np.hanning(2 * h + 1)
    ref = scipy.signal.fftconvolve(np.abs(x.astype(np.float64)), (w / w.sum())[None], "same", axes=1)
    stats = np.zeros((4, 2))
    ours = hann_moving_average(x, h, np.array([4, 1, 2, 0]), stats)
    assert ours.shape == (4, n) and ours.dtype == np.float32
    ref = ref[[4, 1, 2, 0]]
    assert np.all(np.abs(ours - ref) <= 1e-6 * ref.max(axis=1, keepdims=True))
    assert np.all(ours[1] == 0.0)
    rows = x[[4, 1, 2, 0]].astype(np.float64)
    np.testing.assert_allclose(stats[:, 0], rows.sum(axis=1), rtol=1e-6, atol=1e-3)
    deviations = ((rows - rows.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    np.testing.assert_allclose(stats[:, 1], deviations, rtol=1e-5)


@pytest.mark.parametrize("n, taper", [(384, 0), (96, 20), (60, 5), (7, 0)])
def test_spatial_matrix_matches_kfilt(n, taper):
    # kfilt without AGC is the padded, tapered, filtered and cropped identity (measured 3e-14);
    # IBL pads by min(60, n) channels like us (its taper assumes n >= 60).
    voltage = pytest.importorskip("ibldsp.voltage")
    x = np.random.default_rng(n).normal(size=(n, 40))
    ref = voltage.kfilt(x.copy(), ntr_pad=60, ntr_tap=taper, lagc=None)
    ours = spatial_highpass_matrix(n, n_taper=taper) @ x
    assert np.abs(ours - ref).max() < 1e-10 * np.abs(ref).max()


# -- parity with SpikeInterface -------------------------------------------------------------------


SI_VARIANTS = {
    "defaults": ({}, {}),
    "no agc": ({"apply_agc": False}, {"agc_window_s": None}),
    "taper": ({"n_channel_pad": 30, "n_channel_taper": 10, "highpass_butter_wn": 0.02},
              {"n_channel_pad": 30, "n_channel_taper": 10, "cutoff": 0.02}),
}


@pytest.mark.parametrize("variant", SI_VARIANTS)
def test_matches_spikeinterface_highpass_spatial_filter(variant):
    si_kwargs, our_kwargs = SI_VARIANTS[variant]
    raw, info = synthetic()
    ref = spre.highpass_spatial_filter(si_recording(raw, info), dtype="float32", **si_kwargs)
    ref = ref.get_traces(return_in_uV=True)
    chain = Chain([SpatialHighPass(**our_kwargs)])
    for block in (7_777, N_SAMPLES):
        worst, rms = errors(in_blocks(chain, raw, info, range(0, N_SAMPLES, block)), ref)
        print(f"\n{variant}, blocks of {block}: worst {worst:.1e}, rms {rms:.1e}")
        assert worst < SI_WORST and rms < SI_RMS


def test_channels_out_of_depth_order_match_spikeinterface():
    # SpikeInterface sorts channels by depth, then x, when their depths are not sorted; so do we.
    raw, info = synthetic()
    order = np.random.default_rng(5).permutation(N_CHANNELS)
    info = ChannelInfo(FS, info.gains_uv, info.adc_shifts, info.positions[order])
    raw = np.ascontiguousarray(raw[:, order])
    ref = spre.highpass_spatial_filter(si_recording(raw, info), dtype="float32")
    ours = in_blocks(Chain([SpatialHighPass()]), raw, info, [20_000])
    worst, rms = errors(ours, ref.get_traces(return_in_uV=True))
    assert worst < SI_WORST and rms < SI_RMS


def test_depth_order_not_channel_order_matters():
    # With distinct depths, shuffling the channels shuffles the output and nothing else.
    raw, info = synthetic(n_channels=48, n_samples=6_000)
    positions = np.column_stack([np.zeros(48), 10.0 * np.arange(48)])
    ordered = ChannelInfo(FS, info.gains_uv, info.adc_shifts, positions)
    order = np.random.default_rng(2).permutation(48)
    shuffled = ChannelInfo(FS, info.gains_uv, info.adc_shifts, positions[order])
    x = (raw * np.float32(GAIN_UV)).astype(np.float32)
    a = SpatialHighPass().apply(x, ordered, at_start=True, at_end=True)
    b = SpatialHighPass().apply(np.ascontiguousarray(x[:, order]), shuffled, at_start=True,
                                at_end=True)
    np.testing.assert_allclose(b, a[:, order], rtol=0, atol=1e-5 * np.abs(a).max())


# -- parity with IBL ------------------------------------------------------------------------------


@pytest.mark.parametrize("shanks", [1, 2])
@pytest.mark.parametrize("outside", [False, True])
def test_matches_ibl_destripe_without_adc_shifts(shanks, outside):
    raw, info = synthetic(shanks=shanks, shifts=False)
    labels = None
    if outside:  # the top channels of the last shank and a few in the middle
        labels = np.full(N_CHANNELS, GOOD)
        labels[-7:] = OUTSIDE
        labels[40:43] = OUTSIDE
        info = info.with_labels(labels)
    ref = ibl_destripe(raw, info, labels)
    worst, rms = errors(in_blocks(ibl_chain(), raw, info, range(0, N_SAMPLES, 7_777)), ref)
    print(f"\n{shanks} shank(s), outside channels {outside}: worst {worst:.1e}, rms {rms:.1e}")
    assert worst < IBL_WORST and rms < IBL_RMS


def test_matches_ibl_destripe_with_np1_shifts():
    raw, info = synthetic(bandlimited=True)
    ref = ibl_destripe(raw, info)
    ours = in_blocks(ibl_chain(), raw, info, range(0, N_SAMPLES, 7_777))
    worst, rms = errors(ours[EDGE:-EDGE], ref[EDGE:-EDGE])
    print(f"\nNP1 shifts, 50 ms edges excluded: worst {worst:.1e}, rms {rms:.1e}; "
          f"with the edges: {errors(ours, ref)}")
    assert worst < IBL_SHIFTED_WORST and rms < IBL_SHIFTED_RMS


# -- local common reference ------------------------------------------------------------------------


def si_reference(raw, info, **kwargs) -> np.ndarray:
    rec = si_recording(raw, info)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not enough neighbours" at the probe's ends
        return spre.common_reference(rec, dtype="float32", **kwargs).get_traces(return_in_uV=True)


@pytest.mark.parametrize("operator", ["median", "average"])
def test_local_reference_matches_spikeinterface(operator):
    raw, info = synthetic()
    ref = si_reference(raw, info, reference="local", operator=operator)
    step = CommonReference(operator, "local")
    ours = in_blocks(Chain([step]), raw, info, range(0, N_SAMPLES, 10_000))
    worst, _ = errors(ours, ref)
    print(f"\nlocal {operator}: worst {worst:.1e}")
    assert worst < (1e-7 if operator == "median" else 2e-6)
    other = si_reference(raw, info, reference="local", operator=operator, local_radius=(0, 40),
                         min_local_neighbors=3)
    step = CommonReference(operator, "local", local_radius_um=(0.0, 40.0), min_local_neighbors=3)
    assert errors(in_blocks(Chain([step]), raw, info, [N_SAMPLES // 2]), other)[0] < 2e-6


def test_median_network_equals_numpy():
    rng = np.random.default_rng(4)
    for k in range(1, 14):
        values = rng.normal(size=(k, 30, 7)).astype(np.float32)
        values[:, 0] = 1.0  # ties
        ours = _network_median([v.copy() for v in values], np.empty((30, 7), np.float32))
        np.testing.assert_array_equal(ours, np.median(values, axis=0))


def test_local_neighbours_on_np1():
    _, info = synthetic()
    groups = local_neighbours(info.positions, np.ones(N_CHANNELS, bool))
    count = np.zeros(N_CHANNELS, int)
    for channels, neighbours in groups:
        count[channels] = neighbours.shape[1]
    # In (30, 55] µm on NP1: the other contact of the row, the 4 contacts two rows away, and for
    # the contacts at x = 11 and 59 µm the 2 contacts at 52 µm one row away. Near the ends of the
    # probe, fewer than 5: the 5 closest beyond 30 µm.
    interior = np.arange(8, N_CHANNELS - 8)
    x = info.positions[interior, 0]
    np.testing.assert_array_equal(count[interior], np.where((x == 11) | (x == 59), 7, 5))
    assert set(count.tolist()) == {5, 7}
    for channels, neighbours in groups:
        d = np.linalg.norm(info.positions[neighbours] - info.positions[channels][:, None], axis=2)
        assert np.all(d > 30.0)
    # Too few in the annulus: the closest beyond the inner radius, however far; none: left
    # unreferenced (no group); outside channels (candidates False) and NaN positions: never.
    lonely = np.array([[0.0, 0.0], [0.0, 10.0], [500.0, 500.0], [0.0, 40.0], [np.nan, 0.0]])
    allowed = np.array([True, True, True, False, True])
    groups = local_neighbours(lonely, allowed, (30.0, 55.0), 5)
    assert [(c.tolist(), n.tolist()) for c, n in groups] == [
        ([0, 1], [[2], [2]]), ([2, 3], [[0, 1], [0, 2]])]
    assert local_neighbours(lonely, allowed, (800.0, 900.0), 5) == ()


# -- outside channels ------------------------------------------------------------------------------


OUTSIDE_CHANNELS = np.r_[0, 33, 34, 80:N_CHANNELS]


@pytest.mark.parametrize(
    "step",
    [CommonReference("median"), CommonReference("average"), CommonReference("median", "local"),
     CommonReference("average", "local"), SpatialHighPass()],
    ids=["global median", "global average", "local median", "local average", "destripe"],
)
def test_outside_channels_take_no_part(step):
    raw, info = synthetic(n_samples=6_000)
    labels = np.full(N_CHANNELS, GOOD)
    labels[OUTSIDE_CHANNELS] = OUTSIDE
    labelled = info.with_labels(labels)
    inside = labels != OUTSIDE
    x = (raw * np.float32(GAIN_UV)).astype(np.float32)
    ours = step.apply(x, labelled, at_start=True, at_end=True)
    # The same as on the recording without the outside channels ...
    kept = ChannelInfo(FS, info.gains_uv[inside], info.adc_shifts[inside], info.positions[inside])
    alone = step.apply(np.ascontiguousarray(x[:, inside]), kept, at_start=True, at_end=True)
    np.testing.assert_allclose(ours[:, inside], alone, rtol=0, atol=1e-5 * np.abs(alone).max())
    # ... whatever the outside channels carry.
    loud = x.copy()
    loud[:, ~inside] = 1e4 * np.sign(loud[:, ~inside]) + 100.0 * loud[:, ~inside]
    again = step.apply(loud, labelled, at_start=True, at_end=True)
    np.testing.assert_array_equal(again[:, inside], ours[:, inside])
    if isinstance(step, SpatialHighPass):
        np.testing.assert_array_equal(ours[:, ~inside], x[:, ~inside])  # left as they are


def test_outside_channels_leave_global_reference_like_spikeinterface():
    raw, info = synthetic(n_samples=6_000)
    labels = np.full(N_CHANNELS, GOOD)
    labels[OUTSIDE_CHANNELS] = OUTSIDE
    inside = labels != OUTSIDE
    rec = si_recording(raw, info).remove_channels(np.flatnonzero(~inside))
    ref = spre.common_reference(rec, dtype="float32").get_traces(return_in_uV=True)
    ours = in_blocks(Chain([CommonReference()]), raw, info.with_labels(labels), [3_000])
    assert errors(ours[:, inside], ref)[0] < 1e-6


def test_everything_outside_leaves_the_block_alone():
    raw, info = synthetic(n_channels=24, n_samples=2_000)
    info = info.with_labels(np.full(24, OUTSIDE))
    x = (raw * np.float32(GAIN_UV)).astype(np.float32)
    for step in (CommonReference(), CommonReference("median", "local"), SpatialHighPass()):
        np.testing.assert_array_equal(step.apply(x, info), x)


def test_dead_channels_and_tiny_shanks():
    raw, info = synthetic(n_channels=24, n_samples=4_000, shanks=3)  # 8 channels per shank
    x = (raw * np.float32(GAIN_UV)).astype(np.float32)
    x[:, 5] = 0.0  # dead channel
    x[:, 16:24] = 0.0  # a whole dead shank
    labels = np.full(24, GOOD)
    labels[9:16] = OUTSIDE  # a shank with one channel inside
    out = SpatialHighPass().apply(x, info.with_labels(labels), at_start=True, at_end=True)
    assert np.all(np.isfinite(out))
    assert np.all(out[:, 5] == 0.0) and np.all(out[:, 16:] == 0.0)
    np.testing.assert_array_equal(out[:, 9:16], x[:, 9:16])


# -- blocks, pickling, parameters -------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def one_block(local: bool) -> np.ndarray:
    raw, info = synthetic(n_channels=32, n_samples=12_000)
    # the reference: every step on its own (no FFT fast path; two fast-path runs cut at different
    # places differ by up to twice its float32 rounding, ~1e-5 of the RMS)
    return in_blocks(_block_chain(local), raw, info, [], fft=False)


def _block_chain(local: bool) -> Chain:
    if local:
        return Chain([HighPass(300.0, 3), CommonReference("median", "local")])
    return ibl_chain()


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=11_999), min_size=1, max_size=8),
       local=st.booleans())
def test_block_size_independence(cuts, local):
    raw, info = synthetic(n_channels=32, n_samples=12_000)
    worst, _ = errors(in_blocks(_block_chain(local), raw, info, cuts), one_block(local))
    assert worst < BLOCK_INDEPENDENCE


def test_margin_covers_the_agc_window():
    assert SpatialHighPass().margin(FS) == 1_500  # numpy.hanning(3001): 0.1 s at 30 kHz
    assert SpatialHighPass(agc_window_s=None).margin(FS) == 0
    assert ibl_chain().margin(FS) == 500 + 1_200 + 1_500


@pytest.mark.parametrize(
    "dumps, loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)]
)
def test_steps_pickle(dumps, loads):
    raw, info = synthetic(n_channels=32, n_samples=6_000)
    x = (raw * np.float32(GAIN_UV)).astype(np.float32)
    for step in (SpatialHighPass(agc_window_s=0.05, n_channel_taper=4),
                 CommonReference("average", "local", [0, 40], 3)):
        blob = dumps(step)
        assert len(blob) < 1_000
        clone = loads(blob)
        assert clone == step and hash(clone) == hash(step)
        np.testing.assert_array_equal(clone.apply(x, info), step.apply(x, info))


@pytest.mark.parametrize(
    "field, value",
    [
        *[("agc_window_s", v) for v in (0.0, -0.1, float("nan"), "long")],
        *[("agc_epsilon", v) for v in (-1.0, float("inf"), None)],
        *[("order", v) for v in (0, 11, 2.5, True)],
        *[("cutoff", v) for v in (0.0, 1.0, -0.5, "low")],
        *[("n_channel_pad", v) for v in (-1, 1.5, None)],
        ("n_channel_taper", -3),
    ],
)
def test_invalid_spatial_parameters_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SpatialHighPass(**{field: value})


def test_agc_window_too_short_for_the_sampling_frequency():
    _, info = synthetic(n_channels=24, n_samples=2_000)
    with pytest.raises(ConfigError, match="agc_window_s"):
        Chain([SpatialHighPass(agc_window_s=1e-5)]).check(info)


@pytest.mark.parametrize(
    "field, value",
    [
        ("reference", "ring"),
        ("operator", "mean"),
        *[("local_radius_um", v) for v in ((55.0, 30.0), (-1.0, 30.0), (30.0,), "wide",
                                           (0.0, float("nan")))],
        *[("min_local_neighbors", v) for v in (0, -2, 2.5)],
    ],
)
def test_invalid_reference_parameters_name_the_field(field, value):
    _, info = synthetic(n_channels=24, n_samples=2_000)
    step = CommonReference(**{"reference": "local", field: value})
    with pytest.raises(ConfigError, match=field):
        step.check(info)


# -- speed (printed, not asserted) -------------------------------------------------------------------


def test_speed():
    rng = np.random.default_rng(0)
    n_channels, n = 384, 33_000
    positions = np.column_stack([np.array([43.0, 11.0, 59.0, 27.0])[np.arange(n_channels) % 4],
                                 20.0 * (np.arange(n_channels) // 2 + 1)])
    info = ChannelInfo(FS, np.ones(n_channels), np.zeros(n_channels), positions)
    block = rng.normal(0.0, 10.0, (n_channels, n)).astype(np.float32).T  # as the chain passes it
    steps = {"destripe": SpatialHighPass(), "local median": CommonReference("median", "local"),
             "local average": CommonReference("average", "local"),
             "global median": CommonReference("median")}
    seconds = {}
    with one_blas_thread():
        for name, step in steps.items():
            seconds[name] = round(best_time(lambda step=step: step.apply(block, info), 2), 3)
    print(f"\n384 channels x {n} samples, one BLAS thread, seconds (best of 2): {seconds}")


def one_blas_thread():
    """Limit BLAS to one thread where threadpoolctl is installed (see the destripe module)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)
