"""IBL's single-unit criteria on spike trains and amplitude distributions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from neuropool.tasks.ibl_units import IBLCriteria, label_counts, noise_cutoff, sliding_rp

FS = 30000.0


def refractory_train(rate: float, seconds: float, refractory_s: float, seed: int) -> np.ndarray:
    """A Poisson train with a dead time after each spike (no violations), on the sample grid."""
    rng = np.random.default_rng(seed)
    isi = refractory_s + rng.exponential(1 / rate, int(rate * seconds * 1.2))
    t = np.cumsum(isi)
    return np.round(t[t < seconds] * FS) / FS


def test_a_clean_unit_passes_the_sliding_refractory_period_and_a_contaminated_one_fails():
    clean = refractory_train(8.0, 1800.0, 0.003, seed=0)
    passes, min_cont = sliding_rp(clean, FS)
    assert passes and min_cont <= 10.0
    rng = np.random.default_rng(1)
    # half as many spikes again from an unrelated train: ~33 % contamination
    mixed = np.sort(np.r_[clean, np.round(rng.uniform(0, 1800.0, len(clean) // 2) * FS) / FS])
    passes, min_cont = sliding_rp(mixed, FS)
    assert not passes and not min_cont <= 10.0


def test_sliding_rp_uses_ibls_own_implementation_with_our_thresholds():
    from slidingRP.metrics import slidingRP_all

    trains = [refractory_train(r, 600.0, 0.002, seed=s) for s, r in enumerate((2.0, 5.0, 20.0))]
    times = np.concatenate(trains)
    clusters = np.concatenate([np.full(len(t), i) for i, t in enumerate(trains)])
    order = np.argsort(times, kind="stable")
    ref = slidingRP_all(times[order], clusters[order], conf_thresh=80, cont_thresh=20, rp_reject=0.001,
                        sampleRate=FS, binSizeCorr=1 / FS)
    criteria = IBLCriteria(rp_confidence_pct=80, rp_contamination_pct=20, rp_reject_ms=1.0)
    ours = [sliding_rp(t, FS, criteria)[0] for t in trains]
    assert ours == [bool(v) for v in ref["value"]]


def test_noise_cutoff_fails_a_distribution_cut_at_the_detection_floor():
    rng = np.random.default_rng(0)
    whole = rng.normal(120.0, 20.0, 5000)
    passes, cutoff, _ = noise_cutoff(whole)
    assert passes and cutoff < 5
    cut = whole[whole > 115.0]  # a unit whose smaller spikes fell under the threshold
    passes, cutoff, low = noise_cutoff(cut)
    assert not passes and cutoff > 5 and low > 0.1 * np.histogram(cut, np.linspace(0, cut.max(), 100))[0].max()


def test_noise_cutoff_by_hand_on_a_small_histogram():
    """Counts 0..9 per bin edge region: the second non-empty bin against the bins past the peak."""
    # amplitudes placed in the centres of 99 bins over [0, 99]: bin k holds counts[k] spikes
    counts = np.zeros(99, dtype=int)
    counts[[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]] = [30, 40, 50, 60, 50, 40, 30, 20, 10, 12, 8]
    amps = np.repeat(np.arange(99) + 0.5, counts)
    amps = np.r_[amps, 99.0]  # the largest amplitude sets the histogram's range to [0, 99]
    passes, cutoff, low = noise_cutoff(amps)
    hist = np.histogram(amps, np.linspace(0, 99.0, 100))[0]
    peak = int(np.argmax(hist))
    start = int(np.ceil(0.5 * np.count_nonzero(hist[peak:-1]) + peak))
    high = hist[start:][hist[start:] > 0]
    assert low == 40  # the second non-empty bin
    assert cutoff == pytest.approx((40 - high.mean()) / high.std())
    assert passes == (not (cutoff > 5 and low > 0.1 * hist.max()))


def test_degenerate_units_fail_rather_than_pass():
    assert noise_cutoff(np.array([50.0]))[0] is False
    assert sliding_rp(np.array([1.0]), FS)[0] is False
    assert np.isnan(noise_cutoff(np.full(100, 80.0))[1])


def test_label_counts_bins_thirds():
    assert label_counts(np.array([0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])) == {"0": 1, "0.33": 2, "0.67": 1, "1": 3}

