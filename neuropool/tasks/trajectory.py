"""Probe trajectories in the IBL convention, and positions on the probe -> CCF coordinates.

A trajectory is the straight track of a probe:

- ``x, y, z``: the entry point in µm relative to bregma, in the Allen CCF axes as IBL uses them:
  x medio-lateral (right positive), y antero-posterior (anterior positive), z dorso-ventral
  (dorsal positive, so the brain is at z < 0);
- ``depth``: distance in µm from the entry point to the probe tip, along the track;
- ``theta``: polar angle in degrees between the track and the vertical (0 = straight down);
- ``phi``: azimuth in degrees of the track's horizontal direction, counter-clockwise from +x
  (0: tilted towards the right, 90: towards anterior).

The tip is ``entry - depth * (sin θ cos φ, sin θ sin φ, cos θ)``. A site at ``y_local`` µm up the
shank (``channels.localCoordinates[:, 1]``) sits ``tip_length + y_local`` from the tip along the
track towards the entry: the first site is one tip length (NP1: 200 µm, IBL's value) above the
tip. As in IBL's pipeline, the lateral offset across the 70 µm shank is neglected.
Outputs are ``mlapdv`` in µm relative to bregma: (ML, AP, DV) = (x, y, z).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: Distance from the probe's tip to its first site, in µm (Neuropixels 1.0, IBL's TIP_SIZE_UM).
TIP_LENGTH_UM = 200.0


class Trajectory(BaseModel):
    """A straight probe insertion (IBL convention, µm and degrees; see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: float = Field(..., description="entry ML from bregma, µm (right positive)")
    y: float = Field(..., description="entry AP from bregma, µm (anterior positive)")
    z: float = Field(0.0, description="entry DV from bregma, µm (dorsal positive)")
    depth: float = Field(..., gt=0, le=20000, description="entry to tip along the track, µm")
    theta: float = Field(0.0, ge=0, lt=90, description="angle from vertical, degrees")
    phi: float = Field(0.0, ge=-360, le=360, description="azimuth from +x, counter-clockwise, degrees")
    tip_length_um: float = Field(TIP_LENGTH_UM, ge=0, le=2000)

    @property
    def entry(self) -> np.ndarray:
        """Entry point (ML, AP, DV) in µm."""
        return np.array([self.x, self.y, self.z], dtype=float)

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the entry point down to the tip."""
        t, p = np.deg2rad(self.theta), np.deg2rad(self.phi)
        return -np.array([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)])

    @property
    def tip(self) -> np.ndarray:
        """Tip (ML, AP, DV) in µm."""
        return self.entry + self.depth * self.direction

    def to_ccf(self, y_local: np.ndarray) -> np.ndarray:
        """Map heights on the shank (µm above the first site's reference) to ``mlapdv`` (n, 3) µm.

        Parameters
        ----------
        y_local : array_like
            Site or unit heights on the probe, ``localCoordinates[:, 1]``, µm.
        """
        along = self.tip_length_um + np.asarray(y_local, dtype=float)
        return self.tip[None, :] - along[:, None] * self.direction[None, :]

    def depth_below_entry(self, y_local: np.ndarray) -> np.ndarray:
        """Distance from the entry point along the track, µm (negative: outside the brain)."""
        return self.depth - self.tip_length_um - np.asarray(y_local, dtype=float)
