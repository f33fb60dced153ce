"""Bad-channel detection against IBL (``ibldsp.voltage``) and SpikeInterface (interpolation:
``test_interpolate.py``).

Synthetic NP1 data (384 channels, 1.5 s at 30 kHz, int16 at 2.34 µV/bit): a common "brain"
signal (low-passed at 3 kHz, 20 µV, gain varying smoothly along the probe) plus 8 µV white
noise on every channel, 3 Hz drift and DC offsets, with planted channels:

* dead: 4 channels carrying 3 % of the brain signal plus 1 µV noise (an adjacent pair among
  them);
* noisy: 3 channels with 40 µV of extra white noise (``psd_hf`` about 0.11 µV²/Hz against
  0.004 for good channels) and one with 2.5 times the brain signal (``xcor_hf`` about 1.5);
* outside the brain: the top 40 channels carry a different common signal instead of the
  brain's (``xcor_lf`` about -0.93 against -0.1..0.24 inside).

Measured (see the asserts): our features equal IBL's to 8.6e-15 relative (worst of all
features and segments, ``max |ours - IBL| / max |IBL|``); labels equal IBL's and
SpikeInterface's in every segment and after the vote. Interpolation: worst error 4.8e-7 of the
signal RMS against IBL and 3.5e-7 against SpikeInterface (float32 rounding).
"""

from __future__ import annotations

import functools
import pickle
import warnings

import numpy as np
import pydantic
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropool.errors import ConfigError, RawDataError
from neuropool.tasks.preprocessing import Chain, ChannelInfo, HighPass
from neuropool.tasks.preprocessing.bad_channels import (
    FEATURE_NAMES,
    BadChannelParams,
    channel_features,
    depth_order,
    detect_bad_channels,
    label_channels,
    segment_length,
    segment_starts,
)
from neuropool.tasks.preprocessing.base import DEAD, GOOD, NOISY, OUTSIDE

FS = 30_000.0
GAIN_UV = 2.34375
N_CHANNELS = 384
N_SAMPLES = 45_000
N_OUTSIDE = 40
DEAD_CHANNELS = (10, 101, 102, 250)
NOISY_PSD = (50, 200, 201)
NOISY_XCOR = (300,)
SEGMENTS = {"n_segments": 5, "segment_seconds": 0.2}  # 5 x 6,000 samples: keeps the file fast

FEATURE_BOUND = 1e-9  # measured 8.6e-15 (max |ours - IBL| / max |IBL| per feature)
INTERP_BOUND = 1e-5  # measured 4.8e-7 (IBL), 3.5e-7 (SpikeInterface) of the RMS


def np1_positions(n: int) -> np.ndarray:
    """Neuropixels 1.0 staggered layout: x in {43, 11, 59, 27}, two contacts per 20 µm row."""
    i = np.arange(n)
    return np.column_stack([np.array([43.0, 11.0, 59.0, 27.0])[i % 4], 20.0 * (i // 2)])


def make_data(
    positions: np.ndarray,
    shank_ids: np.ndarray,
    outside: np.ndarray,
    dead=DEAD_CHANNELS,
    noisy_psd=NOISY_PSD,
    noisy_xcor=NOISY_XCOR,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, ChannelInfo, np.ndarray]:
    """int16 samples, their ChannelInfo and the planted labels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = positions.shape[0]
    sos = scipy.signal.butter(4, 3_000.0, fs=FS, output="sos")
    brain, other = scipy.signal.sosfiltfilt(sos, rng.normal(0, 1, (2, n_samples)), axis=1)
    brain *= 20.0 / brain.std()
    other *= 20.0 / other.std()
    gain = 1.0 + 0.2 * np.sin(2 * np.pi * positions[:, 1] / 7_680.0)
    x = rng.normal(0.0, 8.0, (n_samples, n))
    x[:, ~outside] += brain[:, None] * gain[~outside]
    x[:, outside] += other[:, None]
    dead, noisy_psd, noisy_xcor = list(dead), list(noisy_psd), list(noisy_xcor)
    x[:, dead] = 0.03 * brain[:, None] + rng.normal(0.0, 1.0, (n_samples, len(dead)))
    x[:, noisy_psd] += rng.normal(0.0, 40.0, (n_samples, len(noisy_psd)))
    x[:, noisy_xcor] += 1.5 * brain[:, None]
    x += 50.0 * np.sin(2 * np.pi * 3.0 * np.arange(n_samples) / FS)[:, None]
    x += rng.uniform(-300.0, 300.0, n)
    raw = np.clip(np.round(x / GAIN_UV), -32768, 32767).astype(np.int16)
    raw.setflags(write=False)
    truth = np.full(n, GOOD, np.int8)
    truth[outside] = OUTSIDE
    truth[dead] = DEAD
    truth[noisy_psd + noisy_xcor] = NOISY
    info = ChannelInfo(FS, np.full(n, GAIN_UV), np.zeros(n), positions, shank_ids=shank_ids)
    return raw, info, truth


@functools.lru_cache(maxsize=2)
def np1_data() -> tuple[np.ndarray, ChannelInfo, np.ndarray]:
    """Single-shank NP1 recording, the top ``N_OUTSIDE`` channels outside the brain."""
    outside = np.arange(N_CHANNELS) >= N_CHANNELS - N_OUTSIDE
    return make_data(np1_positions(N_CHANNELS), np.zeros(N_CHANNELS, int), outside)


@functools.lru_cache(maxsize=1)
def np1_detection() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``detect_bad_channels`` on :func:`np1_data` with ``SEGMENTS`` (shared by several tests)."""
    raw, info, _ = np1_data()
    return detect_bad_channels(reader(raw), raw.shape[0], info, **SEGMENTS)


def reader(raw: np.ndarray):
    return lambda a, b: raw[a:b]


def segments_in_uv(raw, info, highpass_freq):
    """The segments ``detect_bad_channels`` analyses, µV, (start, array) pairs."""
    n = raw.shape[0]
    chain = Chain([HighPass(highpass_freq, 3)] if highpass_freq else [])
    length = segment_length(n, FS, SEGMENTS["segment_seconds"])
    for start in segment_starts(n, FS, SEGMENTS["n_segments"], SEGMENTS["segment_seconds"]):
        yield start, chain.process(reader(raw), start, start + length, n, info)


def ibl_detect(segment_uv: np.ndarray):
    """IBL's labels and features of a depth-ordered segment (IBL takes volts, channels first)."""
    from ibldsp.voltage import detect_bad_channels as ibl_detect_bad_channels

    labels, features = ibl_detect_bad_channels(segment_uv.T.astype(np.float64) * 1e-6, FS)
    features = {k: np.asarray(features[k]) for k in FEATURE_NAMES}
    features["rms_raw"] = features["rms_raw"] * 1e6
    return labels.astype(np.int8), features


def majority(votes: np.ndarray) -> np.ndarray:
    """Per-row mode of ``(n_channels, n_segments)`` labels, ties to the lower code."""
    counts = np.stack([(votes == code).sum(axis=1) for code in range(4)], axis=1)
    return counts.argmax(axis=1)


# -- parity with IBL ---------------------------------------------------------------------------


@pytest.mark.parametrize("highpass_freq", [300.0, None])
def test_features_and_labels_match_ibl(highpass_freq):
    pytest.importorskip("ibldsp.voltage")
    raw, info, truth = np1_data()
    (order,) = depth_order(info)
    per_segment, worst = [], dict.fromkeys(FEATURE_NAMES, 0.0)
    for _, segment in segments_in_uv(raw, info, highpass_freq):
        ours = channel_features(segment[:, order], FS)
        ref_labels, ref = ibl_detect(segment[:, order])
        for name in FEATURE_NAMES:
            error = np.max(np.abs(ours[name] - ref[name])) / np.max(np.abs(ref[name]))
            worst[name] = max(worst[name], float(error))
        labels = label_channels(ours)
        np.testing.assert_array_equal(labels, ref_labels)
        per_segment.append(np.empty_like(labels))
        per_segment[-1][order] = ref_labels
    print(f"\nhighpass {highpass_freq}: worst feature error relative to IBL's max: "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert max(worst.values()) < FEATURE_BOUND

    if highpass_freq == 300.0:
        labels, features = np1_detection()
    else:
        labels, features = detect_bad_channels(
            reader(raw), raw.shape[0], info, highpass_freq=highpass_freq, **SEGMENTS
        )
    assert labels.dtype == np.int8 and labels.shape == (N_CHANNELS,)
    np.testing.assert_array_equal(labels, majority(np.stack(per_segment, axis=1)))
    assert set(features) == set(FEATURE_NAMES)
    assert all(v.shape == (N_CHANNELS,) and np.isfinite(v).all() for v in features.values())
    if highpass_freq is not None:  # on raw samples the 3 Hz drift dominates the similarities
        np.testing.assert_array_equal(labels, truth)


def test_detection_finds_the_planted_channels():
    _, _, truth = np1_data()
    labels, features = np1_detection()
    np.testing.assert_array_equal(labels, truth)
    good = truth == GOOD
    assert features["psd_hf"][good].max() < 0.01 < 0.05 < features["psd_hf"][list(NOISY_PSD)].min()
    assert features["xcor_hf"][list(DEAD_CHANNELS)].max() < -0.5 < features["xcor_hf"][good].min()
    assert features["xcor_lf"][truth == OUTSIDE].max() < -0.75 < features["xcor_lf"][good].min()
    assert features["rms_raw"][list(NOISY_PSD)].min() > 1.5 * features["rms_raw"][good].max()


# -- parity with SpikeInterface ----------------------------------------------------------------


def si_recording(traces: np.ndarray, positions: np.ndarray, gains=1.0):
    import spikeinterface.core as si
    from probeinterface import Probe

    rec = si.NumpyRecording([traces], FS)
    rec.set_channel_gains(gains)
    rec.set_channel_offsets(0.0)
    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=positions, shapes="circle", shape_params={"radius": 6})
    probe.set_device_channel_indices(np.arange(positions.shape[0]))
    rec.set_probe(probe)
    return rec


SI_CODES = {"good": GOOD, "dead": DEAD, "noise": NOISY, "out": OUTSIDE}


def si_labels(rec, **kwargs) -> np.ndarray:
    spre = pytest.importorskip("spikeinterface.preprocessing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, names = spre.detect_bad_channels(rec, method="coherence+psd", seed=0,
                                            job_kwargs={"progress_bar": False}, **kwargs)
    return np.array([SI_CODES[str(v)] for v in names], np.int8)


def test_labels_match_spikeinterface():
    """SpikeInterface on exactly our segments: each segment, high-passed as ours (order 3,
    forward-backward, with context), becomes a recording marked as filtered, analysed as one
    chunk of its whole length (its random chunk start is then 0). Then SpikeInterface on the
    whole recording, its own high-pass (order 3) and 6 random chunks of 0.2 s."""
    pytest.importorskip("spikeinterface.preprocessing")
    import spikeinterface.preprocessing as spre

    raw, info, truth = np1_data()
    per_segment = []
    for _, segment in segments_in_uv(raw, info, 300.0):
        rec = si_recording(segment, info.positions)
        rec.annotate(is_filtered=True)
        theirs = si_labels(rec, chunk_duration_s=(segment.shape[0] + 0.5) / FS,
                           num_random_chunks=1)
        ours = np.empty(N_CHANNELS, np.int8)
        (order,) = depth_order(info)
        ours[order] = label_channels(channel_features(segment[:, order], FS))
        np.testing.assert_array_equal(ours, theirs)
        per_segment.append(theirs)
    labels, _ = np1_detection()
    np.testing.assert_array_equal(labels, majority(np.stack(per_segment, axis=1)))

    rec = spre.highpass_filter(si_recording(np.array(raw), info.positions, GAIN_UV),
                               freq_min=300.0, filter_order=3)
    whole = si_labels(rec, chunk_duration_s=0.2, num_random_chunks=6)
    np.testing.assert_array_equal(whole, labels)
    np.testing.assert_array_equal(whole, truth)


# -- shanks, channel order, edge cases ---------------------------------------------------------


def test_multi_shank_and_channel_order():
    """Two shanks, channels interleaved (even: shank 0, odd: shank 1), outside block at the top
    of shank 1 only; then the same recording with its channels shuffled."""
    n = 256
    shank = np.arange(n) % 2
    within = np1_positions(n // 2)
    positions = np.empty((n, 2))
    positions[shank == 0] = within
    positions[shank == 1] = within + [250.0, 0.0]
    outside = (shank == 1) & (positions[:, 1] >= positions[:, 1].max() - 200.0)
    raw, info, truth = make_data(positions, shank, outside, dead=(10, 101), noisy_psd=(50,),
                                 noisy_xcor=(201,), n_samples=12_000, seed=3)
    assert truth[shank == 0].max() < OUTSIDE and (truth == OUTSIDE).sum() == 22
    segments = {"n_segments": 3, "segment_seconds": 0.2}
    labels, _ = detect_bad_channels(reader(raw), raw.shape[0], info, **segments)
    np.testing.assert_array_equal(labels, truth)

    perm = np.random.default_rng(0).permutation(n)
    shuffled = ChannelInfo(FS, info.gains_uv[perm], info.adc_shifts[perm],
                           info.positions[perm], shank_ids=shank[perm])
    raw_perm = np.ascontiguousarray(raw[:, perm])
    labels_perm, _ = detect_bad_channels(reader(raw_perm), raw.shape[0], shuffled, **segments)
    np.testing.assert_array_equal(labels_perm, labels[perm])


def test_label_rules():
    def feats(xcor_hf, xcor_lf, psd_hf=None):
        xcor_hf = np.asarray(xcor_hf, float)
        psd = np.zeros_like(xcor_hf) if psd_hf is None else np.asarray(psd_hf, float)
        return {"xcor_hf": xcor_hf, "xcor_lf": np.asarray(xcor_lf, float), "psd_hf": psd}

    # Outside: only the run of channels below threshold that reaches the top channel.
    lf = [0, -0.9, -0.9, 0, -0.8, -0.9, -0.76]
    np.testing.assert_array_equal(label_channels(feats(np.zeros(7), lf)), [0, 0, 0, 0, 3, 3, 3])
    np.testing.assert_array_equal(label_channels(feats(np.zeros(3), [-1, -1, 0])), [0, 0, 0])
    np.testing.assert_array_equal(label_channels(feats(np.zeros(3), [-1, -1, -1])), [3, 3, 3])
    # Strict inequalities; priority noisy > dead > outside (IBL's).
    np.testing.assert_array_equal(
        label_channels(feats([-0.5, 1.0, -0.6, 1.1, -0.6, 0.0], [0, 0, 0, 0, -1, -1],
                             [0.02, 0.0, 0.03, 0.0, 0.0, 0.0])),
        [GOOD, GOOD, NOISY, NOISY, DEAD, OUTSIDE],
    )
    # NaN features (flat median trace) meet no criterion.
    np.testing.assert_array_equal(label_channels(feats([np.nan] * 2, [np.nan] * 2)), [0, 0])
    # Custom thresholds.
    np.testing.assert_array_equal(
        label_channels(feats([-0.3, 0.6], [0, -0.5]), dead_threshold=-0.2,
                       noisy_coherence_threshold=0.5, outside_threshold=-0.4),
        [DEAD, NOISY],
    )
    with pytest.raises(ValueError, match="psd_hf"):
        label_channels({"xcor_hf": np.zeros(2), "xcor_lf": np.zeros(2)})


def test_flat_median_trace_gives_nan_similarities():
    segment = np.zeros((1_000, 12))
    segment[:, 3] = np.random.default_rng(0).normal(size=1_000)
    features = channel_features(segment, FS)
    assert np.isnan(features["xcor_hf"]).all() and np.isnan(features["xcor_lf"]).all()
    assert features["rms_raw"][3] > 0.5 and features["psd_hf"][3] > 0


def test_segment_starts():
    # 100 s at 30 kHz, 10 x 1 s: one segment centred in each tenth.
    starts = segment_starts(3_000_000, FS, 10, 1.0)
    assert starts == [135_000 + 300_000 * k for k in range(10)]
    assert segment_starts(3_000_000, FS, 10, 1.0) == starts  # deterministic
    # Short recordings: clipped, duplicates dropped.
    assert segment_starts(30_000, FS, 10, 1.0) == [0]
    assert segment_length(30_000, FS, 1.0) == 30_000
    short = segment_starts(45_000, FS, 10, 1.0)
    assert short[0] == 0 and short[-1] == 15_000 and short == sorted(set(short))
    assert segment_starts(7, FS, 3, 1.0) == [0] and segment_length(7, FS, 1.0) == 7
    assert segment_starts(0, FS, 3, 1.0) == []
    assert segment_starts(3_000_000, FS, 1, 1.0) == [1_485_000]
    with pytest.raises(ConfigError, match="n_segments"):
        segment_starts(100, FS, 0, 1.0)


@settings(max_examples=200, deadline=None)
@given(
    n_samples=st.integers(1, 10**8),
    n_segments=st.integers(1, 50),
    seconds=st.floats(1e-5, 100.0),
)
def test_segment_starts_properties(n_samples, n_segments, seconds):
    starts = segment_starts(n_samples, FS, n_segments, seconds)
    length = segment_length(n_samples, FS, seconds)
    assert 1 <= len(starts) <= n_segments and starts == sorted(set(starts))
    assert starts[0] >= 0 and starts[-1] + length <= n_samples
    assert min(2, n_samples) <= length <= n_samples


@pytest.mark.parametrize("n_samples", [2, 7, 300])
def test_short_recordings(n_samples):
    raw, info, _ = np1_data()
    labels, features = detect_bad_channels(reader(raw[:n_samples]), n_samples, info)
    assert labels.shape == (N_CHANNELS,) and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert features["rms_raw"].shape == (N_CHANNELS,)
    with pytest.raises(RawDataError, match="at least 2"):
        detect_bad_channels(reader(raw[:1]), 1, info)


def test_read_contract():
    raw, info, _ = np1_data()
    calls = []

    def read(a, b):
        calls.append((a, b))
        return raw[a:b]

    detect_bad_channels(read, raw.shape[0], info, n_segments=3, segment_seconds=0.05)
    margin = HighPass(300.0, 3).margin(FS)
    starts = segment_starts(raw.shape[0], FS, n_segments=3, segment_seconds=0.05)
    assert starts == [6_750, 21_750, 36_750]
    assert calls == [(s - margin, s + 1_500 + margin) for s in starts]
    detect_bad_channels(read, 2_000, info, n_segments=3, segment_seconds=0.05)
    assert segment_starts(2_000, FS, 3, 0.05) == [0, 250, 500]
    assert calls[3:] == [(0, 2_000)] * 3  # with their context, clipped to the recording
    with pytest.raises(RawDataError, match="shape"):
        detect_bad_channels(lambda a, b: raw[a:b, :10], raw.shape[0], info, **SEGMENTS)


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        *[("n_segments", v) for v in (0, -1, 2.5, "ten")],
        *[("segment_seconds", v) for v in (0.0, -1.0, float("inf"), "long")],
        *[("highpass_freq", v) for v in (0.0, -300.0, float("nan"))],
        *[("dead_threshold", v) for v in (0.0, 0.5, float("nan"))],
        *[("noisy_coherence_threshold", v) for v in (0.0, -1.0)],
        *[("psd_hf_threshold", v) for v in (0.0, -0.02, float("inf"))],
        *[("outside_threshold", v) for v in (0.0, 0.25)],
        *[("n_neighbors", v) for v in (10, 1, 0)],
        ("bogus", 1),
    ],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        BadChannelParams(**{field: value})
    if field != "bogus":  # detect_bad_channels itself raises TypeError on unknown keywords
        raw, info, _ = np1_data()
        with pytest.raises(ConfigError, match=field):
            detect_bad_channels(reader(raw), raw.shape[0], info, **{field: value})


def test_params_defaults_and_config_round_trip():
    params = BadChannelParams()
    assert (params.n_segments, params.segment_seconds, params.highpass_freq) == (10, 1.0, 300.0)
    assert (params.dead_threshold, params.noisy_coherence_threshold) == (-0.5, 1.0)
    assert (params.psd_hf_threshold, params.outside_threshold, params.n_neighbors) == (
        0.02, -0.75, 11)
    with pytest.raises(pydantic.ValidationError):
        params.n_segments = 3  # frozen
    assert pickle.loads(pickle.dumps(params)) == params
    assert BadChannelParams(highpass_freq=None).highpass_freq is None
    raw, info, truth = np1_data()
    custom = BadChannelParams(n_segments=2, segment_seconds=0.1, dead_threshold=-0.4)
    labels, _ = detect_bad_channels(reader(raw), raw.shape[0], info, **custom.model_dump())
    np.testing.assert_array_equal(labels, truth)


def test_highpass_above_nyquist_is_a_config_error():
    raw, info, _ = np1_data()
    with pytest.raises(ConfigError, match="highpass_freq"):
        detect_bad_channels(reader(raw), raw.shape[0], info, highpass_freq=20_000.0)
