"""Interpolation of bad channels (kriging) against IBL (``ibldsp.voltage``) and SpikeInterface,
on the synthetic NP1 data of ``test_bad_channels.py``: worst error 4.8e-7 of the signal RMS
against IBL and 3.5e-7 against SpikeInterface (float32 rounding)."""

from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pytest

from neuropool.errors import ConfigError
from neuropool.tasks.preprocessing import Chain, ChannelInfo, CommonReference
from neuropool.tasks.preprocessing.base import DEAD, GOOD, NOISY, OUTSIDE
from neuropool.tasks.preprocessing.interpolate import (
    InterpolateBadChannels,
    estimate_pitch_um,
    kriging_weights,
)
from tests.tasks.test_bad_channels import (
    FS,
    GAIN_UV,
    INTERP_BOUND,
    N_CHANNELS,
    np1_positions,
    reader,
    si_recording,
)

# -- interpolation -----------------------------------------------------------------------------


def interp_data(n_samples: int = 3_000, seed: int = 0) -> np.ndarray:
    """A spatially smooth field plus noise, float32 ``(n_samples, 384)``."""
    rng = np.random.default_rng(seed)
    y = np1_positions(N_CHANNELS)[:, 1]
    field = np.sin(2 * np.pi * y / 400.0)[None, :] * rng.normal(0, 30, (n_samples, 1))
    return (field + rng.normal(0.0, 10.0, (n_samples, N_CHANNELS))).astype(np.float32)


def np1_info(labels, shank_ids=None, positions=None) -> ChannelInfo:
    positions = np1_positions(len(labels)) if positions is None else positions
    n = len(labels)
    return ChannelInfo(FS, np.ones(n), np.zeros(n), positions, np.asarray(labels, np.int8),
                       shank_ids)


def rel_worst(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.sqrt(np.mean(np.square(ref, dtype=np.float64))))


# dead and noisy channels: isolated, adjacent, at both ends, and a run of 40 channels whose
# centre has no good channel within the 72 µm cut-off (IBL and SpikeInterface set it to 0).
BAD = {3: DEAD, 10: NOISY, 11: DEAD, 12: DEAD, 100: NOISY, 0: DEAD, 383: NOISY,
       **dict.fromkeys(range(200, 240), DEAD)}


def bad_labels(n: int = N_CHANNELS) -> np.ndarray:
    labels = np.zeros(n, np.int8)
    labels[list(BAD)] = list(BAD.values())
    return labels


def test_interpolation_matches_ibl():
    iv = pytest.importorskip("ibldsp.voltage")
    x, labels = interp_data(), bad_labels()
    positions = np1_positions(N_CHANNELS)
    ours = InterpolateBadChannels().apply(x, np1_info(labels))
    ref = iv.interpolate_bad_channels(x.T.astype(np.float64), labels, positions[:, 0],
                                      positions[:, 1]).T
    worst = rel_worst(ours, ref)
    print(f"\ninterpolation vs IBL: worst {worst:.1e} of the RMS")
    assert worst < INTERP_BOUND
    assert np.all(ours[:, 215:225] == 0) and np.all(ref[:, 215:225] == 0)  # no source left
    good = labels == GOOD
    np.testing.assert_array_equal(ours[:, good], x[:, good])


def test_interpolation_matches_spikeinterface():
    spre = pytest.importorskip("spikeinterface.preprocessing")
    x, labels = interp_data(), bad_labels()
    rec = si_recording(x, np1_positions(N_CHANNELS))
    bad_ids = rec.channel_ids[labels != GOOD]
    interpolated = spre.interpolate_bad_channels(rec, bad_ids)
    assert interpolated._kwargs["sigma_um"] == 20.0 == estimate_pitch_um(np1_positions(8))
    ref = interpolated.get_traces()
    worst = rel_worst(InterpolateBadChannels().apply(x, np1_info(labels)), ref)
    print(f"\ninterpolation vs SpikeInterface: worst {worst:.1e} of the RMS")
    assert worst < INTERP_BOUND


def test_outside_channels_are_neither_sources_nor_changed():
    """With an outside block at the top and a dead channel just below it, the result equals
    IBL's on the recording without the outside channels (IBL itself would use them)."""
    iv = pytest.importorskip("ibldsp.voltage")
    x = interp_data()
    labels = np.zeros(N_CHANNELS, np.int8)
    labels[340:] = OUTSIDE
    labels[[338, 100]] = [DEAD, NOISY]
    ours = InterpolateBadChannels().apply(x, np1_info(labels))
    np.testing.assert_array_equal(ours[:, 340:], x[:, 340:])
    inside, positions = slice(0, 340), np1_positions(N_CHANNELS)
    ref = iv.interpolate_bad_channels(x[:, inside].T.astype(np.float64), labels[inside],
                                      positions[inside, 0], positions[inside, 1]).T
    assert rel_worst(ours[:, inside], ref) < INTERP_BOUND
    with_outside = iv.interpolate_bad_channels(x.T.astype(np.float64), labels, positions[:, 0],
                                               positions[:, 1]).T
    assert rel_worst(ours[:, 338], with_outside[:, 338]) > 0.01  # IBL used the outside channels


def test_no_bad_channels_is_the_identity():
    x = interp_data(500)
    for labels in (np.zeros(N_CHANNELS), np.full(N_CHANNELS, OUTSIDE)):
        out = InterpolateBadChannels().apply(x, np1_info(labels))
        assert out is x
    out = InterpolateBadChannels(interpolate_labels=(NOISY,)).apply(x, np1_info(bad_labels()))
    np.testing.assert_array_equal(out[:, 3], x[:, 3])  # dead, not a target
    assert not np.array_equal(out[:, 10], x[:, 10])  # noisy
    assert InterpolateBadChannels().margin(FS) == 0


def test_layouts_and_dtype():
    x, info = interp_data(2_500), np1_info(bad_labels())
    ref = InterpolateBadChannels().apply(x, info)
    channel_major_view = np.ascontiguousarray(x.T).T
    out = InterpolateBadChannels().apply(channel_major_view, info)
    assert out.dtype == np.float32 and out.flags.f_contiguous
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(InterpolateBadChannels().apply(x.astype(np.float64), info), ref,
                               rtol=0, atol=1e-4)
    assert InterpolateBadChannels().apply(x[:0], info).shape == (0, N_CHANNELS)


def test_multi_shank_isolation():
    """Two shanks at the same positions: a bad channel of shank 0 uses shank 0 only."""
    n = 192
    positions = np.concatenate([np1_positions(n // 2)] * 2)
    shank = np.repeat([0, 1], n // 2)
    labels = np.zeros(n, np.int8)
    labels[[20, 21, 150]] = [DEAD, NOISY, DEAD]
    x = interp_data()[:, :n].copy()
    x[:, shank == 1] += 1e4  # any leak across shanks would show
    out = InterpolateBadChannels().apply(x, np1_info(labels, shank, positions))
    for s in (0, 1):
        alone = InterpolateBadChannels().apply(
            np.ascontiguousarray(x[:, shank == s]), np1_info(labels[shank == s], None,
                                                             positions[shank == s]))
        np.testing.assert_allclose(out[:, shank == s], alone, rtol=1e-6)
    assert np.abs(out[:, [20, 21]]).max() < 1e3 < out[:, 150].min()
    targets, sources, _ = kriging_weights(positions, labels, shank, 20.0, 1.3)
    assert list(targets) == [20, 21, 150]
    assert set(sources) == set(sources) & set(np.flatnonzero(labels == GOOD))


def test_nan_positions_and_sigma_estimate():
    labels = np.zeros(8, np.int8)
    labels[[2, 5]] = DEAD
    positions = np1_positions(8)
    positions[5] = np.nan  # a target without a position: zero
    positions[3] = np.nan  # never a source
    x = interp_data(200)[:, :8]
    out = InterpolateBadChannels().apply(x, np1_info(labels, positions=positions))
    assert np.all(out[:, 5] == 0)
    targets, sources, weights = kriging_weights(positions, labels, np.zeros(8), 20.0, 1.3)
    assert 3 not in sources and np.allclose(weights.sum(axis=0), [1.0, 0.0])
    np2 = np.column_stack([np.arange(10) % 2 * 32.0, 15.0 * (np.arange(10) // 2)])
    assert estimate_pitch_um(np2) == 15.0
    single_row = np.column_stack([np.arange(4) * 20.0, np.zeros(4)])
    with pytest.raises(ConfigError, match="sigma_um"):
        InterpolateBadChannels().check(np1_info([1, 0, 0, 0], positions=single_row))
    InterpolateBadChannels(sigma_um=20.0).check(np1_info([1, 0, 0, 0], positions=single_row))


@pytest.mark.parametrize(
    "field, value",
    [
        *[("sigma_um", v) for v in (0.0, -20.0, float("nan"), float("inf"), "wide", True)],
        *[("p", v) for v in (0.0, -1.3, float("nan"), None)],
        *[("interpolate_labels", v) for v in ((GOOD,), (OUTSIDE,), ("dead",), 7, None)],
    ],
)
def test_invalid_interpolation_params_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        InterpolateBadChannels(**{field: value})


def test_interpolation_pickles_small_and_in_a_chain():
    x, info = interp_data(4_000), np1_info(bad_labels())
    step = InterpolateBadChannels(sigma_um=25.0, interpolate_labels=[NOISY, DEAD])
    assert step.interpolate_labels == (DEAD, NOISY)
    expected = step.apply(x, info)  # fills the module's cache; the step stays tiny
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        blob = dumps(step)
        assert len(blob) < 400
        clone = loads(blob)
        assert clone == step and hash(clone) == hash(step)
        np.testing.assert_array_equal(clone.apply(x, info), expected)
    raw = np.round(x / GAIN_UV).astype(np.int16)
    gains_info = ChannelInfo(FS, np.full(N_CHANNELS, GAIN_UV), np.zeros(N_CHANNELS),
                             info.positions, info.labels)
    chain = Chain([step, CommonReference()])
    whole = chain.process(reader(raw), 0, 4_000, 4_000, gains_info)
    parts = np.concatenate([chain.process(reader(raw), a, a + 1_000, 4_000, gains_info)
                            for a in range(0, 4_000, 1_000)])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-3)
