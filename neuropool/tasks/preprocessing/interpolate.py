"""Replace dead and noisy channels by a kriging-weighted sum of their good neighbours.

The interpolation of IBL (``ibldsp.voltage.interpolate_bad_channels``) and SpikeInterface
(``spikeinterface.preprocessing.interpolate_bad_channels``). Each target channel ``b`` becomes
``sum_g w_bg x_g`` over the source channels ``g``, with

    ``k_bg = exp(-(d_bg / sigma_um) ** p)``, ``d_bg`` the distance between the contacts (µm),
    ``k_bg = 0`` where ``k_bg < 0.005``, ``w_bg = k_bg / sum_g k_bg``, then ``w_bg = 0`` where
    ``w_bg < 0.005`` (without normalising again, as both references do).

With IBL's defaults (``p = 1.3``, ``sigma_um = 20``) the first cut-off drops sources farther
than 72 µm. ``sigma_um`` defaults here to the most common vertical pitch between contact rows,
SpikeInterface's rule, which is IBL's 20 µm on Neuropixels 1.0 (15 µm on 2.0). A target without
any source (all its neighbours are bad, or it has no position) becomes zero, as in both.

Differences from the references, on purpose:

* sources are the good channels of the *same shank* only (both references ignore shanks);
* channels labelled outside the brain are neither sources nor targets (IBL uses them as
  sources; SpikeInterface interpolates whatever ids it is given);
* only good channels are sources: a dead channel left alone (``interpolate_labels=(NOISY,)``)
  is not one either, and channels with a NaN position never are.

Place in the chain: after the high-pass and before the common reference, as AIND (phase shift,
high-pass, interpolation, reference) and IBL's ``destripe`` (high-pass, phase shift,
interpolation, spatial filter) do, so that bad channels do not enter the reference.

On channels where these rules do not apply the output equals both references to float32
rounding (see ``tests/tasks/test_bad_channels.py``).

The step needs no context (margin 0). The weights depend on the labels, positions and shanks
only: they are computed once per distinct ``(labels, positions, shank ids, sigma_um, p,
targets)`` and cached in the module (not in the step, which stays a tiny picklable recipe).
Applying them costs about one copy of the block: the block is copied in tiles of 1,024 rows
and, while a tile is in cache, each group of neighbouring targets gets one small product
``tile[:, lo:hi] @ w`` over the contiguous range of channels holding its sources. Measured on
a 30,000 x 384 float32 block (busy 2-core machine, best of 15): 8 targets 16 ms (the copy
alone: 16 ms), 39 targets spread over the probe 28-32 ms, in either memory layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from neuropool.errors import ConfigError

from .base import DEAD, GOOD, NOISY, ChannelInfo, Step

__all__ = ["WEIGHT_CUTOFF", "InterpolateBadChannels", "estimate_pitch_um", "kriging_weights"]

#: Kernel values and normalised weights below this are dropped (IBL's and SpikeInterface's).
WEIGHT_CUTOFF = 0.005
_INTERPOLABLE = (DEAD, NOISY)
_TILE_ROWS = 1024  # rows per tile in apply (1.5 MB of 384 float32 channels)
_PRODUCT_OVERHEAD = 32  # multiplications per row that one more matrix product is worth


class _Group(NamedTuple):
    """Targets whose sources lie in one contiguous range of channels:
    ``out[:, targets] = x[:, lo:hi] @ weights`` (a strided view, no gather)."""

    lo: int
    hi: int
    targets: np.ndarray  # (n_targets,) int64
    weights: np.ndarray  # (hi - lo, n_targets) float32, zero rows for non-sources


class _Plan(NamedTuple):
    """What :meth:`InterpolateBadChannels.apply` needs."""

    groups: tuple[_Group, ...]
    orphans: np.ndarray  # targets without any source: set to zero


def estimate_pitch_um(positions: np.ndarray) -> float:
    """The most common distance between consecutive distinct contact heights (y), in µm.

    SpikeInterface's default ``sigma_um`` (``estimate_recommended_sigma_um``): 20 µm for
    Neuropixels 1.0, 15 µm for 2.0. Ties go to the smaller distance.

    Parameters
    ----------
    positions : numpy.ndarray
        ``(n_channels, 2)`` contact positions in µm; NaN rows are ignored.

    Returns
    -------
    float

    Raises
    ------
    neuropool.errors.ConfigError
        If fewer than two distinct finite heights exist.
    """
    y = np.asarray(positions, np.float64)[:, 1]
    heights = np.unique(y[np.isfinite(y)])
    steps = np.round(np.diff(heights), 6)
    if steps.size == 0:
        raise ConfigError(
            f"sigma_um cannot be estimated from the contact positions: found "
            f"{heights.size} distinct finite height(s), need at least 2; set sigma_um explicitly"
        )
    values, counts = np.unique(steps, return_counts=True)
    return float(values[np.argmax(counts)])


def kriging_weights(
    positions: np.ndarray,
    labels: np.ndarray,
    shank_ids: np.ndarray,
    sigma_um: float,
    p: float,
    targets: tuple[int, ...] = _INTERPOLABLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolation weights of the channels labelled ``targets`` from the good channels.

    Parameters
    ----------
    positions : numpy.ndarray
        ``(n_channels, 2)`` µm.
    labels : numpy.ndarray
        ``(n_channels,)`` IBL codes.
    shank_ids : numpy.ndarray
        ``(n_channels,)``; sources come from the target's shank only.
    sigma_um, p : float
        Kernel ``exp(-(d / sigma_um) ** p)``.
    targets : tuple of int
        Label codes to replace.

    Returns
    -------
    target_idx : numpy.ndarray
        ``(n_targets,)`` channel indices, ascending.
    source_idx : numpy.ndarray
        ``(n_sources,)`` indices of the good channels with a non-zero weight, ascending.
    weights : numpy.ndarray
        ``(n_sources, n_targets)`` float64; each column sums to at most 1 (0 for a target
        without sources).
    """
    positions = np.asarray(positions, np.float64)
    labels = np.asarray(labels)
    shank_ids = np.asarray(shank_ids)
    target_idx = np.flatnonzero(np.isin(labels, targets))
    candidates = np.flatnonzero((labels == GOOD) & np.isfinite(positions).all(axis=1))
    delta = positions[target_idx, np.newaxis, :] - positions[np.newaxis, candidates, :]
    with np.errstate(invalid="ignore"):
        kernel = np.exp(-((np.hypot(delta[..., 0], delta[..., 1]) / sigma_um) ** p))
    kernel[~(kernel >= WEIGHT_CUTOFF)] = 0.0  # also NaN: targets without a position
    kernel[shank_ids[target_idx, np.newaxis] != shank_ids[np.newaxis, candidates]] = 0.0
    total = kernel.sum(axis=1, keepdims=True)
    weights = np.divide(kernel, total, out=np.zeros_like(kernel), where=total > 0)
    weights[weights < WEIGHT_CUTOFF] = 0.0
    used = np.flatnonzero(weights.any(axis=0))
    return target_idx, candidates[used], np.ascontiguousarray(weights[:, used].T)


@lru_cache(maxsize=32)
def _cached_plan(
    labels: bytes, positions: bytes, shanks: bytes, sigma_um: float | None, p: float,
    targets: tuple[int, ...],
) -> _Plan | None:
    label_arr = np.frombuffer(labels, np.int8)
    n = label_arr.size
    if not np.isin(label_arr, targets).any():
        return None
    pos = np.frombuffer(positions, np.float64).reshape(n, 2)
    sigma = estimate_pitch_um(pos) if sigma_um is None else sigma_um
    target_idx, source_idx, weights = kriging_weights(
        pos, label_arr, np.frombuffer(shanks, np.int64), sigma, p, targets
    )
    return _plan_groups(target_idx, source_idx, weights)


def _plan_groups(target_idx: np.ndarray, source_idx: np.ndarray, weights: np.ndarray) -> _Plan:
    """Group the targets so that each group is one small product on a contiguous slice of the
    block: neighbouring targets join a group while that costs fewer multiplications (plus a
    fixed overhead per product) than keeping them apart."""
    spans = []
    for j in range(target_idx.size):
        used = source_idx[weights[:, j] > 0]
        if used.size:
            spans.append((int(used.min()), int(used.max()) + 1, j))
    spans.sort()

    def cost(lo: int, hi: int, n_targets: int) -> int:
        return (hi - lo) * n_targets + _PRODUCT_OVERHEAD

    merged: list[tuple[int, int, list[int]]] = []
    for lo, hi, j in spans:
        if merged:
            glo, ghi, columns = merged[-1]
            joined = cost(glo, max(ghi, hi), len(columns) + 1)
            if joined <= cost(glo, ghi, len(columns)) + cost(lo, hi, 1):
                merged[-1] = (glo, max(ghi, hi), [*columns, j])
                continue
        merged.append((lo, hi, [j]))
    groups = []
    for lo, hi, columns in merged:
        dense = np.zeros((hi - lo, len(columns)), np.float32)
        inside = (source_idx >= lo) & (source_idx < hi)
        dense[source_idx[inside] - lo] = weights[np.ix_(inside, columns)]
        group = _Group(lo, hi, target_idx[columns].astype(np.int64), dense)
        group.targets.setflags(write=False)
        group.weights.setflags(write=False)
        groups.append(group)
    with_sources = {j for _, _, j in spans}
    orphans = np.array([t for j, t in enumerate(target_idx) if j not in with_sources], np.int64)
    orphans.setflags(write=False)
    return _Plan(tuple(groups), orphans)


@dataclass(frozen=True)
class InterpolateBadChannels(Step):
    """Replace each dead / noisy channel by a kriging-weighted sum of good ones (see above).

    The labels come from ``info.labels`` (set by bad-channel detection).

    Parameters
    ----------
    sigma_um : float, optional
        Kernel length scale in µm (> 0); default: the most common vertical contact pitch
        (:func:`estimate_pitch_um`, 20 µm on Neuropixels 1.0 as IBL's default).
    p : float
        Kernel exponent (> 0), 1.3 as in IBL and SpikeInterface.
    interpolate_labels : tuple of int
        Label codes to replace, among 1 (dead) and 2 (noisy); default both. Channels labelled
        outside the brain are never changed.
    """

    sigma_um: float | None = None
    p: float = 1.3
    interpolate_labels: tuple[int, ...] = _INTERPOLABLE

    def __post_init__(self) -> None:
        labels = self.interpolate_labels
        if isinstance(labels, int | np.integer):
            labels = (labels,)
        try:
            labels = tuple(sorted({int(v) for v in labels}))
        except (TypeError, ValueError):
            labels = None
        if labels is None or not set(labels) <= set(_INTERPOLABLE):
            raise ConfigError(
                f"interpolate_labels must be label codes among 1 (dead) and 2 (noisy), got "
                f"{self.interpolate_labels!r}; outside-the-brain (3) channels are never "
                f"interpolated"
            )
        object.__setattr__(self, "interpolate_labels", labels)
        if self.sigma_um is not None and not _positive(self.sigma_um):
            raise ConfigError(f"sigma_um must be a positive number of µm or None (the contact "
                              f"pitch), got {self.sigma_um!r}")
        if not _positive(self.p):
            raise ConfigError(f"p must be a positive number (1.3 in IBL), got {self.p!r}")
        if self.sigma_um is not None:
            object.__setattr__(self, "sigma_um", float(self.sigma_um))
        object.__setattr__(self, "p", float(self.p))

    def margin(self, sampling_frequency: float) -> int:
        """No context is needed: each sample is interpolated on its own.

        Parameters
        ----------
        sampling_frequency : float
            Samples per second (unused).

        Returns
        -------
        int
            Always 0.
        """
        return 0

    def _plan(self, info: ChannelInfo) -> _Plan | None:
        return _cached_plan(
            info.labels.astype(np.int8).tobytes(),
            info.positions.astype(np.float64).tobytes(),
            info.shank_ids.astype(np.int64).tobytes(),
            self.sigma_um,
            self.p,
            self.interpolate_labels,
        )

    def check(self, info: ChannelInfo) -> None:
        """Raise :class:`~neuropool.errors.ConfigError` if ``sigma_um`` is None and cannot be
        estimated from ``info.positions`` (computes and caches the weights).

        Parameters
        ----------
        info : ChannelInfo
            Labels, positions and shanks.
        """
        self._plan(info)

    def apply(
        self,
        block: np.ndarray,
        info: ChannelInfo,
        *,
        at_start: bool = False,
        at_end: bool = False,
    ) -> np.ndarray:
        """Interpolate the target channels of ``block``.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_samples, n_channels)`` float32 µV.
        info : ChannelInfo
            Labels, positions and shanks.
        at_start, at_end : bool
            Unused.

        Returns
        -------
        numpy.ndarray
            float32, same shape and memory layout as ``block``: a new array, or ``block``
            itself (as float32) when no channel is a target.
        """
        plan = self._plan(info)
        if plan is None:
            return np.asarray(block, dtype=np.float32)
        block = np.asarray(block)
        out = np.empty_like(block, dtype=np.float32, order="K")  # same layout as block
        # Row tiles that stay in cache while their targets are computed. Targets are never
        # sources (zero weight rows; the samples are finite, from int16), so the groups do not
        # interact.
        for a in range(0, block.shape[0], _TILE_ROWS):
            tile = out[a : a + _TILE_ROWS]
            tile[...] = block[a : a + _TILE_ROWS]
            for group in plan.groups:
                tile[:, group.targets] = tile[:, group.lo : group.hi] @ group.weights
        out[:, plan.orphans] = 0.0
        return out


def _positive(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and (
        math.isfinite(number) and number > 0
    )
