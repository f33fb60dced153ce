"""Probe trajectory geometry against hand-computed cases (IBL convention)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from neuropool.tasks.trajectory import Trajectory


def test_vertical_probe():
    t = Trajectory(x=1000, y=-2000, z=0, depth=4000, theta=0, phi=0)
    np.testing.assert_allclose(t.tip, [1000, -2000, -4000])
    # first site 200 µm above the tip, then up the shank
    np.testing.assert_allclose(t.to_ccf(np.array([0.0, 20.0, 3820.0])),
                               [[1000, -2000, -3800], [1000, -2000, -3780], [1000, -2000, 20]])
    np.testing.assert_allclose(t.depth_below_entry(np.array([0.0, 3800.0])), [3800, 0])


def test_tilted_probe_towards_right_and_anterior():
    # theta 30°: tip moves by depth*sin30 horizontally and depth*cos30 down, away from phi
    t = Trajectory(x=0, y=0, z=-100, depth=2000, theta=30, phi=0)
    np.testing.assert_allclose(t.tip, [-1000, 0, -100 - 2000 * np.cos(np.pi / 6)], atol=1e-9)
    t = Trajectory(x=0, y=0, z=0, depth=2000, theta=30, phi=90)
    np.testing.assert_allclose(t.tip, [0, -1000, -2000 * np.cos(np.pi / 6)], atol=1e-9)
    # IBL's repeated site: phi 180, theta 15, entry (-2243, -2000)
    t = Trajectory(x=-2243, y=-2000, z=0, depth=4000, theta=15, phi=180)
    s, c = np.sin(np.deg2rad(15)), np.cos(np.deg2rad(15))
    np.testing.assert_allclose(t.tip, [-2243 + 4000 * s, -2000, -4000 * c], atol=1e-9)
    # a site 300 µm up the shank is 500 µm from the tip, towards the entry
    np.testing.assert_allclose(t.to_ccf(np.array([300.0]))[0], t.tip + 500 * np.array([-s, 0, c]), atol=1e-9)


def test_sites_lie_on_the_track_at_the_right_distance():
    t = Trajectory(x=500, y=300, z=-50, depth=3500, theta=22, phi=-40)
    pts = t.to_ccf(np.array([0.0, 1000.0, 2000.0]))
    np.testing.assert_allclose(np.linalg.norm(pts - t.tip, axis=1), [200, 1200, 2200])
    np.testing.assert_allclose(np.linalg.norm(pts - t.entry, axis=1), [3300, 2300, 1300])


def test_invalid_trajectories():
    with pytest.raises(ValidationError, match="depth"):
        Trajectory(x=0, y=0, depth=-1)
    with pytest.raises(ValidationError, match="theta"):
        Trajectory(x=0, y=0, depth=100, theta=95)
