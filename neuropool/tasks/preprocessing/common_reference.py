"""Global common reference: subtract the median (or mean) across channels, sample by sample.

The same operation as ``spikeinterface.preprocessing.common_reference(reference="global",
operator="median" | "average")`` without groups or reference channels. It needs no context
(margin 0), so it is exact on any block.

One difference in units: SpikeInterface references the traces in the parent's units (bits for
an int16 recording) and applies the gains afterwards, while this step works in µV. The two agree
(to float32 rounding) when all channels share one gain, the Neuropixels case; with unequal gains
the median in µV is the physically meaningful one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from neuropool.errors import ConfigError

from .base import ChannelInfo, Step, sample_major

__all__ = ["CommonReference"]


@dataclass(frozen=True)
class CommonReference(Step):
    """Subtract a global reference computed across all channels at each sample.

    Parameters
    ----------
    operator : {"median", "average"}
        How the reference is computed across channels.
    reference : {"global"}
        Which channels form the reference (only "global", all channels, for now).
    """

    operator: Literal["median", "average"] = "median"
    reference: Literal["global"] = "global"

    def margin(self, sampling_frequency: float) -> int:
        """No context is needed: the reference is computed sample by sample.

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

    def check(self, info: ChannelInfo) -> None:
        """Reject unknown operators and references.

        Parameters
        ----------
        info : ChannelInfo
            The recording's channels (unused).
        """
        if self.operator not in ("median", "average"):
            raise ConfigError(f"operator must be 'median' or 'average', got {self.operator!r}")
        if self.reference != "global":
            raise ConfigError(f"reference must be 'global', got {self.reference!r}")

    def apply(
        self,
        block: np.ndarray,
        info: ChannelInfo,
        *,
        at_start: bool = False,
        at_end: bool = False,
    ) -> np.ndarray:
        """Subtract the reference from every channel.

        Parameters
        ----------
        block : numpy.ndarray
            ``(n_samples, n_channels)`` float32 µV.
        info : ChannelInfo
            The recording's channels (unused).
        at_start, at_end : bool
            Unused.

        Returns
        -------
        numpy.ndarray
            float32, same shape as ``block``.
        """
        self.check(info)
        x = sample_major(block, np.float32)  # a new C-contiguous array, modified in place
        if x.shape[1] == 0:
            return x
        if self.operator == "median":
            ref = _median_across_channels(x)
        else:
            ref = np.mean(x, axis=1, dtype=np.float32)
        x -= ref[:, np.newaxis]
        return x


def _median_across_channels(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` for finite float32 data, 4-5x faster for 384 channels.

    One partition around the upper middle element; for an even channel count the lower middle
    element is the maximum of the lower half, and the two are averaged exactly as
    ``np.median`` does (float32 sum, halved), so the results are bit-identical.
    """
    n_channels = x.shape[1]
    half = n_channels // 2
    part = np.partition(x, half, axis=1)
    upper = part[:, half]
    if n_channels % 2:
        return upper
    lower = part[:, :half].max(axis=1)
    return (lower + upper) / np.float32(2)
