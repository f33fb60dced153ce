"""Probe trajectories in the IBL convention, and positions on the probe -> CCF coordinates.

A trajectory is the straight track of a probe, as IBL records it (Alyx trajectories,
``iblatlas.atlas.Insertion``), in µm and degrees where IBL's ``Insertion`` uses metres:

- ``x, y, z``: the entry point in µm relative to bregma, in the Allen CCF axes as IBL uses them:
  x medio-lateral (right positive), y antero-posterior (anterior positive), z dorso-ventral
  (dorsal positive, so the brain is at z < 0);
- ``depth``: distance in µm from the entry point to the probe tip, along the track;
- ``theta``: polar angle in degrees between the track and the vertical (0 = straight down);
- ``phi``: azimuth in degrees of the track's horizontal direction, counter-clockwise from +x
  seen from above (0: the entry is to the right of the tip, 90: anterior of it);
- ``roll``: rotation about the track (Alyx's ``roll``, IBL's ``beta``): recorded, not used,
  since sites are placed on the track's axis.

The tip is ``entry - depth * (sin θ cos φ, sin θ sin φ, cos θ)``, i.e. IBL's
``sph2cart(-depth, theta, phi) + entry``. Sites are placed as IBL's histology pipeline does
(``interpolate_along_track`` at ``localCoordinates y + TIP_SIZE_UM`` from the tip): a site at
height ``y_local`` on the shank (neuropool's channel coordinate ``y``, SpikeGLX's ``snsGeomMap``
and probeinterface's convention, first row at 0) is ``tip_length_um + site_offset_um + y_local``
from the tip along the track towards the entry. ``tip_length_um`` is IBL's ``TIP_SIZE_UM``
(200 µm); ``site_offset_um`` (20 µm) is the height at which IBL's ``channels.localCoordinates``
put the first row (ibl-neuropixel adds it to SpikeGLX's geometry), so the first row of an NP1 or
NP2 probe sits 220 µm above the tip, as in IBL's datasets. As in IBL's pipeline, the lateral
offset across the shank is neglected. Outputs are ``mlapdv`` in µm relative to bregma:
(ML, AP, DV) = (x, y, z).

With an atlas volume, IBL (``Insertion.from_dict(d, brain_atlas)``) replaces the entry's ``z``
by the brain surface at the entry's (x, y): the centre of the first voxel below the void,
found down the volume's column at that point. The localize task does the same by default
(``atlas.snap_entry_to_surface``); see :meth:`Trajectory.with_entry_z`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: Distance from the probe's tip to IBL's ``localCoordinates`` origin, in µm (IBL's TIP_SIZE_UM).
TIP_LENGTH_UM = 200.0
#: Height of the first row of sites in IBL's ``localCoordinates`` (0 in SpikeGLX's and
#: probeinterface's geometry, which neuropool's stores keep), in µm.
SITE_OFFSET_UM = 20.0


class Trajectory(BaseModel):
    """A straight probe insertion (IBL convention, µm and degrees; see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: float = Field(..., description="entry ML from bregma, µm (right positive)")
    y: float = Field(..., description="entry AP from bregma, µm (anterior positive)")
    z: float = Field(0.0, description="entry DV from bregma, µm (dorsal positive)")
    depth: float = Field(..., gt=0, le=20000, description="entry to tip along the track, µm")
    theta: float = Field(0.0, ge=0, lt=90, description="angle from vertical, degrees")
    phi: float = Field(0.0, ge=-360, le=360, description="azimuth from +x, counter-clockwise, degrees")
    roll: float = Field(0.0, ge=-360, le=360, description="rotation about the track, degrees (not used)")
    tip_length_um: float = Field(TIP_LENGTH_UM, ge=0, le=2000,
                                 description="tip to the localCoordinates origin, µm (IBL's TIP_SIZE_UM)")
    site_offset_um: float = Field(SITE_OFFSET_UM, ge=-2000, le=2000,
                                  description="IBL localCoordinates y of the store's y = 0, µm")

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

    def from_tip(self, y_local: np.ndarray) -> np.ndarray:
        """Distance along the track from the tip to heights ``y_local`` on the shank, µm."""
        return self.tip_length_um + self.site_offset_um + np.asarray(y_local, dtype=float)

    def to_ccf(self, y_local: np.ndarray) -> np.ndarray:
        """Map heights on the shank to ``mlapdv`` (n, 3), µm from bregma.

        Parameters
        ----------
        y_local : array_like
            Site or unit heights on the probe, µm: the stores' channel coordinate ``y`` (first
            row at 0); IBL's ``localCoordinates[:, 1]`` minus ``site_offset_um``.

        Returns
        -------
        numpy.ndarray
            (n, 3) positions (ML, AP, DV); points past the entry lie outside, on the same line.
        """
        along = self.from_tip(y_local)
        return self.tip[None, :] - along[:, None] * self.direction[None, :]

    def depth_below_entry(self, y_local: np.ndarray) -> np.ndarray:
        """Distance from the entry point along the track, µm (negative: outside the brain)."""
        return self.depth - self.from_tip(y_local)

    def with_entry_z(self, z: float) -> Trajectory:
        """The same insertion (x, y, depth, angles) entering at height ``z`` µm instead.

        This is how IBL snaps an insertion to the brain surface: only the entry's z changes,
        so the whole track, tip included, moves vertically by the difference.
        """
        return self.model_copy(update={"z": float(z)})
