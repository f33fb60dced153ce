"""Probe trajectory geometry against hand-computed cases and against IBL's iblatlas
(``Insertion``, ``sph2cart``/``cart2sph``, track interpolation) on many trajectories."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iblatlas.atlas import Insertion, cart2sph, sph2cart
from pydantic import ValidationError

from neuropool.tasks.trajectory import SITE_OFFSET_UM, TIP_LENGTH_UM, Trajectory


def test_vertical_probe():
    t = Trajectory(x=1000, y=-2000, z=0, depth=4000, theta=0, phi=0)
    np.testing.assert_allclose(t.tip, [1000, -2000, -4000])
    # first row (y = 0) 220 µm above the tip (IBL: localCoordinates y = 20, + TIP_SIZE_UM 200)
    np.testing.assert_allclose(t.to_ccf(np.array([0.0, 20.0, 3800.0])),
                               [[1000, -2000, -3780], [1000, -2000, -3760], [1000, -2000, 20]])
    np.testing.assert_allclose(t.depth_below_entry(np.array([0.0, 3780.0])), [3780, 0])


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
    # a site 300 µm up the shank is 520 µm from the tip, towards the entry
    np.testing.assert_allclose(t.to_ccf(np.array([300.0]))[0], t.tip + 520 * np.array([-s, 0, c]), atol=1e-9)


def test_sites_lie_on_the_track_at_the_right_distance():
    t = Trajectory(x=500, y=300, z=-50, depth=3500, theta=22, phi=-40)
    pts = t.to_ccf(np.array([0.0, 1000.0, 2000.0]))
    np.testing.assert_allclose(np.linalg.norm(pts - t.tip, axis=1), [220, 1220, 2220])
    np.testing.assert_allclose(np.linalg.norm(pts - t.entry, axis=1), [3280, 2280, 1280])
    bare = Trajectory(x=500, y=300, z=-50, depth=3500, theta=22, phi=-40, tip_length_um=0, site_offset_um=0)
    np.testing.assert_allclose(np.linalg.norm(bare.to_ccf(np.array([0.0, 10.0])) - t.tip, axis=1), [0, 10])


def test_invalid_trajectories():
    with pytest.raises(ValidationError, match="depth"):
        Trajectory(x=0, y=0, depth=-1)
    with pytest.raises(ValidationError, match="theta"):
        Trajectory(x=0, y=0, depth=100, theta=95)


# -- against iblatlas -------------------------------------------------------------------------

trajectories = st.builds(
    Trajectory,
    x=st.floats(-6000, 6000), y=st.floats(-8000, 5000), z=st.floats(-3000, 1000),
    depth=st.floats(1, 10000), theta=st.floats(0, 89.9), phi=st.floats(-360, 360))


def insertion(t: Trajectory) -> Insertion:
    """IBL's Insertion for the same trajectory (metres)."""
    return Insertion(x=t.x / 1e6, y=t.y / 1e6, z=t.z / 1e6, phi=t.phi, theta=t.theta, depth=t.depth / 1e6)


@settings(max_examples=300, deadline=None)
@given(trajectories)
def test_entry_and_tip_are_iblatlas_insertion(t):
    ins = insertion(t)
    np.testing.assert_allclose(t.entry, ins.entry * 1e6, atol=1e-6)
    np.testing.assert_allclose(t.tip, ins.tip * 1e6, atol=1e-6)
    np.testing.assert_allclose(np.c_[t.entry, t.tip].T, ins.xyz * 1e6, atol=1e-6)  # (entry, tip)
    np.testing.assert_allclose(t.tip, t.entry + np.array(sph2cart(-t.depth, t.theta, t.phi)), atol=1e-6)
    # IBL's spherical coordinates of entry - tip give back depth, theta and phi (mod 360)
    r, theta, phi = cart2sph(*(ins.entry - ins.tip))
    assert r * 1e6 == pytest.approx(t.depth, rel=1e-9)
    assert theta == pytest.approx(t.theta, abs=1e-5)
    if np.sin(np.deg2rad(t.theta)) * t.depth > 1e-3:  # phi is undefined for a vertical track
        assert np.cos(np.deg2rad(phi - t.phi)) == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(trajectories, st.lists(st.floats(0, 3840), min_size=1, max_size=20))
def test_sites_are_on_ibls_track_where_ibl_interpolates_them(t, y_local):
    """IBL: ``interpolate_along_track(ins.xyz[::-1], (localCoordinates y + TIP_SIZE_UM) / 1e6)``,
    linear along the track from the tip; localCoordinates y = the stores' y + 20 µm."""
    ins = insertion(t)
    y = np.asarray(y_local)
    ours = t.to_ccf(y) / 1e6
    distance = (y + SITE_OFFSET_UM + TIP_LENGTH_UM) / 1e6
    track = np.c_[ins.tip, ins.entry].T  # from the tip up
    expected = track[0] + distance[:, None] / ins.depth * (track[1] - track[0])
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    # and on the line iblatlas fits to the insertion (Insertion.trajectory)
    line = ins.trajectory
    scale = max(1.0, float(np.abs(track).max()) * 1e6 / 1000)
    assert np.all(line.mindist(ours) * 1e6 < 1e-6 * scale)
    assert np.allclose(np.linalg.norm(line.project(ours) - ins.tip, axis=1), distance, atol=1e-12)


def test_site_offset_is_ibls_local_coordinates_origin(tmp_path):
    """IBL's localCoordinates (ibl-neuropixel's geometry from the same .meta) are the y that
    neuropool's SpikeGLX reader gives, plus SITE_OFFSET_UM; and TIP_LENGTH_UM is TIP_SIZE_UM."""
    neuropixel = pytest.importorskip("neuropixel")
    spikeglx = pytest.importorskip("spikeglx")
    from neuropool.io.readers.spikeglx import channel_layout, make_np1_meta, read_meta, write_meta

    meta = tmp_path / "rec_g0_t0.imec0.ap.meta"
    write_meta(str(meta), make_np1_meta(3000, 30000.0, file_size_bytes=3000 * 385 * 2))
    ours = channel_layout(read_meta(str(meta)), str(meta))
    ibl = spikeglx.geometry_from_meta(spikeglx.read_meta_data(meta), sort=False)
    neural = ~np.asarray(ours.is_sync)
    np.testing.assert_allclose(ours.positions[neural, 1] + SITE_OFFSET_UM, ibl["y"])
    assert TIP_LENGTH_UM == neuropixel.TIP_SIZE_UM


def test_trajectories_from_alyx_keep_roll_and_snap_only_moves_z():
    t = Trajectory.model_validate({"x": 544.0, "y": 1285.0, "z": 0.0, "phi": 0.0, "theta": 5.0,
                                   "depth": 4501.0, "roll": 90.0})
    s = t.with_entry_z(-300.0)
    assert (s.x, s.y, s.depth, s.theta, s.phi, s.roll) == (t.x, t.y, t.depth, t.theta, t.phi, t.roll)
    np.testing.assert_allclose(s.tip - t.tip, [0, 0, -300])
    np.testing.assert_allclose(s.to_ccf(np.array([100.0])) - t.to_ccf(np.array([100.0])), [[0, 0, -300]])
