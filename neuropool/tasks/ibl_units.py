"""IBL's single-unit criteria and the ``label`` they give each unit (0 to 1).

The International Brain Laboratory calls a unit good when it passes three tests, each worth a
third of its label (Banga et al., "Spike sorting pipeline for the International Brain
Laboratory", 2022):

1. **Sliding refractory period** (``slidingRP``): the spike train's refractory-period violations
   are, with at least ``rp_confidence_pct`` confidence, compatible with a contamination below
   ``rp_contamination_pct``, for some refractory period between ``rp_reject_ms`` and 10 ms. This
   uses IBL's own implementation, the ``slidingRP`` package.
2. **Noise cutoff**: the unit's amplitude histogram is not cut off at the detection floor. The
   second non-empty bin of a 100-bin histogram (from 0 to the largest amplitude) is compared with
   the bins above the peak, past ``2 * quantile`` of its upper half: it fails when it lies more
   than ``noise_cutoff_max`` standard deviations above their mean *and* holds more than
   ``noise_cutoff_peak_fraction`` of the peak bin.
3. **Amplitude**: the median spike amplitude exceeds ``min_amplitude_uv`` (50 µV).

Amplitudes are IBL's ``spikes.amps``: each spike's template peak-to-trough amplitude on the
unit's peak channel, scaled by the spike's own amplitude relative to the template's peak
(:func:`spike_amplitudes_ptt`). ``label = (rp + noise cutoff + amplitude) / 3``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


class IBLCriteria(BaseModel):
    """Thresholds of IBL's single-unit criteria (IBL's published values by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rp_confidence_pct: float = Field(90.0, gt=0, lt=100, description="slidingRP confidence")
    rp_contamination_pct: float = Field(10.0, gt=0, lt=100, description="slidingRP contamination")
    rp_reject_ms: float = Field(0.5, ge=0, lt=10, description="shortest refractory period tested")
    noise_cutoff_max: float = Field(5.0, gt=0, description="standard deviations")
    noise_cutoff_peak_fraction: float = Field(0.10, gt=0, le=1)
    noise_cutoff_quantile: float = Field(0.25, gt=0, lt=0.5)
    noise_cutoff_bins: int = Field(100, ge=10, le=10000)
    min_amplitude_uv: float = Field(50.0, ge=0, description="median peak-to-trough amplitude")


def noise_cutoff(amps: np.ndarray, criteria: IBLCriteria | None = None) -> tuple[bool, float, float]:
    """IBL's noise cutoff of one unit's spike amplitudes.

    Parameters
    ----------
    amps : array_like
        The unit's spike amplitudes (any positive unit: the test is scale-free).
    criteria : IBLCriteria, optional

    Returns
    -------
    (passes, cutoff, low_count)
        Whether the unit passes, the cutoff in standard deviations (NaN when it cannot be
        computed) and the count of the low bin tested. A unit with fewer than two spikes, or
        whose upper bins do not vary, fails.
    """
    c = criteria or IBLCriteria()
    amps = np.asarray(amps, dtype=float)
    if amps.size < 2 or not np.isfinite(amps).all() or amps.max() <= 0:
        return False, float("nan"), float("nan")
    counts, _ = np.histogram(amps, bins=np.linspace(0.0, amps.max(), c.noise_cutoff_bins))
    peak = int(np.argmax(counts))
    occupied_above_peak = int(np.count_nonzero(counts[peak:-1]))
    first_high = int(np.ceil(2 * c.noise_cutoff_quantile * occupied_above_peak + peak))
    high = counts[first_high:]
    high = high[high > 0]
    nonempty = counts[counts > 0]
    if high.size == 0 or high.std() == 0 or nonempty.size < 2:
        return False, float("nan"), float("nan")
    low = float(nonempty[1])  # the second non-empty bin, as IBL's
    cutoff = (low - high.mean()) / high.std()
    fails = cutoff > c.noise_cutoff_max and low > c.noise_cutoff_peak_fraction * counts.max()
    return not fails, float(cutoff), low


def sliding_rp(spike_times_s: np.ndarray, sampling_frequency: float,
               criteria: IBLCriteria | None = None) -> tuple[bool, float]:
    """IBL's sliding refractory-period test (its ``slidingRP`` package) on one spike train.

    Returns
    -------
    (passes, min_contamination_pct)
        Whether the unit passes, and the lowest contamination (%) compatible with its violations
        at the criteria's confidence (NaN when none is, up to 35 %).
    """
    from slidingRP.metrics import slidingRP

    c = criteria or IBLCriteria()
    times = np.sort(np.asarray(spike_times_s, dtype=float))
    if times.size < 2:
        return False, float("nan")
    params = {"sampleRate": sampling_frequency, "binSizeCorr": 1.0 / sampling_frequency}
    out = slidingRP(times, conf_thresh=c.rp_confidence_pct, cont_thresh=c.rp_contamination_pct,
                    rp_reject=c.rp_reject_ms / 1000.0, **params)
    passes, min_cont = bool(out[5]), out[1]
    return passes, float(min_cont) if min_cont is not None and np.isfinite(min_cont) else float("nan")


def spike_amplitudes_ptt(analyzer: Any) -> np.ndarray:
    """Every spike's peak-to-trough amplitude on its unit's peak channel, µV, as IBL's ``spikes.amps``.

    The template's peak-to-trough on the unit's extremum channel, scaled by the spike's own
    amplitude (``spike_amplitudes``, taken at the template's peak sample) over the template's peak.
    """
    from spikeinterface.core import get_template_extremum_channel

    templates = analyzer.get_extension("templates").get_data(operator="average")
    peak_channel = get_template_extremum_channel(analyzer, outputs="index")
    amps = analyzer.get_extension("spike_amplitudes").get_data()
    units = analyzer.sorting.to_spike_vector()["unit_index"]
    scale = np.zeros(len(analyzer.unit_ids))
    for i, unit in enumerate(analyzer.unit_ids):
        wave = templates[i, :, peak_channel[unit]]
        peak = wave[np.argmax(np.abs(wave))]
        scale[i] = (wave.max() - wave.min()) / abs(peak) if peak != 0 else 0.0
    return np.abs(amps) * scale[units]


def ibl_metrics(analyzer: Any, criteria: IBLCriteria | None = None) -> pd.DataFrame:
    """IBL's per-unit criteria and label, one row per unit of ``analyzer`` (same order).

    Columns: ``ibl_rp_pass``, ``ibl_rp_min_contamination_pct``, ``ibl_noise_cutoff``,
    ``ibl_noise_cutoff_pass``, ``ibl_amp_median_uv``, ``ibl_amp_pass``, ``ibl_label``.
    """
    c = criteria or IBLCriteria()
    fs = analyzer.sampling_frequency
    spikes = analyzer.sorting.to_spike_vector()
    amps = spike_amplitudes_ptt(analyzer)
    order = np.argsort(spikes["unit_index"], kind="stable")
    bounds = np.searchsorted(spikes["unit_index"][order], np.arange(len(analyzer.unit_ids) + 1))
    rows: list[dict[str, Any]] = []
    for i in range(len(analyzer.unit_ids)):
        idx = order[bounds[i]:bounds[i + 1]]
        times = spikes["sample_index"][idx] / fs
        rp_pass, min_cont = sliding_rp(times, fs, c)
        nc_pass, cutoff, _ = noise_cutoff(amps[idx], c)
        median = float(np.median(amps[idx])) if idx.size else float("nan")
        amp_pass = bool(np.isfinite(median) and median > c.min_amplitude_uv)
        rows.append({"ibl_rp_pass": rp_pass, "ibl_rp_min_contamination_pct": min_cont,
                     "ibl_noise_cutoff": cutoff, "ibl_noise_cutoff_pass": nc_pass,
                     "ibl_amp_median_uv": median, "ibl_amp_pass": amp_pass,
                     "ibl_label": (rp_pass + nc_pass + amp_pass) / 3.0})
    return pd.DataFrame(rows)


def label_counts(labels: np.ndarray) -> dict[str, int]:
    """Units per IBL label value, keyed ``"0"``, ``"0.33"``, ``"0.67"``, ``"1"`` (all four present)."""
    thirds = np.rint(np.asarray(labels, dtype=float) * 3).astype(int)
    names = ("0", "0.33", "0.67", "1")
    return {names[k]: int(np.count_nonzero(thirds == k)) for k in range(4)}
