"""Allen CCF annotation volumes (neuropool.io.atlas) and brain regions in the localize task,
against IBL's iblatlas on the same synthetic volumes (no atlas ships here; AllenAtlas would
download one).

The synthetic volume spans the real CCF (13.2 x 8 x 11.4 mm) in 200 µm voxels, stored AP, DV,
ML as the Allen NRRDs are: void above a surface whose depth varies with AP and ML, then layers
of known regions, a different cortex on each side of the midline, void below.
"""

from __future__ import annotations

import json
from pathlib import Path

import nrrd
import numpy as np
import pandas as pd
import pytest
from iblatlas.atlas import AllenAtlas, BrainAtlas, Insertion
from iblatlas.regions import BrainRegions

from neuropool.errors import AtlasError, SourceNotFoundError
from neuropool.io import atlas
from neuropool.io.atlas import IBL_BREGMA_UM, AnnotationVolume, read_annotation, xyz_to_ccf
from neuropool.tasks.base import TaskContext
from neuropool.tasks.localize import Localize

VOXEL = 200.0
SHAPE = (66, 40, 57)  # AP, DV, ML: the 25 µm volume's extent (528 x 320 x 456 voxels)
REGIONS = BrainRegions()
LAYERS = [("VISp", 5), ("CA1", 5), ("DG", 5), ("TH", 10)]  # top to bottom, then root


ACRONYM_IDS = {a: int(REGIONS.acronym2id(a)[0]) for a in ("VISp", "MOp", "CA1", "DG", "TH", "root")}


def rid(acronym: str) -> int:
    return ACRONYM_IDS[acronym]


def synthetic_ids() -> np.ndarray:
    """(AP, DV, ML) uint32 Allen ids; the left cortex (ML index < bregma's) is MOp, not VISp."""
    ids = np.zeros(SHAPE, dtype=np.uint32)
    left = np.arange(SHAPE[2]) < np.floor(IBL_BREGMA_UM[0] / VOXEL)
    for iap in range(3, SHAPE[0] - 3):  # the first and last AP slices hold no brain
        for iml in range(2, SHAPE[2] - 2):
            depth = 3 + (iap + 2 * iml) % 5  # the surface's DV index
            for acronym, n in LAYERS:
                region = "MOp" if acronym == "VISp" and left[iml] else acronym
                ids[iap, depth:depth + n, iml] = rid(region)
                depth += n
            ids[iap, depth:SHAPE[1] - 3, iml] = rid("root")
    ids[SHAPE[0] - 3, :10, 20] = rid("root")  # a column where the brain touches the top
    return ids


def write_nrrd(path: Path, ids: np.ndarray, voxel: float = VOXEL, **header) -> Path:
    nrrd.write(str(path), ids, {"space directions": np.diag([voxel] * 3), "encoding": "gzip",
                                "space": "left-posterior-superior", **header})
    return path


def ibl_atlas(ids: np.ndarray, voxel: float = VOXEL,
              bregma: tuple[float, float, float] = IBL_BREGMA_UM) -> BrainAtlas:
    """The same volume as iblatlas holds the Allen one: AP, ML, DV indices into BrainRegions,
    left hemisphere lateralised (negative ids), bregma as the origin, y and z axes flipped."""
    lab = np.transpose(ids.astype(np.int64), (0, 2, 1))
    side = np.where(np.arange(lab.shape[1]) < np.floor(bregma[0] / voxel), -1, 1)
    lab = lab * side[None, :, None]
    order = np.argsort(REGIONS.id)
    index = order[np.searchsorted(REGIONS.id, lab, sorter=order)]
    assert np.all(REGIONS.id[index] == lab)
    return BrainAtlas(index, index, voxel * 1e-6 * np.array([1, -1, -1]), REGIONS,
                      iorigin=np.asarray(bregma) / voxel, dims2xyz=[1, 0, 2], xyz2dims=[1, 0, 2])


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    return synthetic_ids()


@pytest.fixture(scope="module")
def nrrd_file(ids, tmp_path_factory) -> Path:
    return write_nrrd(tmp_path_factory.mktemp("atlas") / "annotation_200.nrrd", ids)


@pytest.fixture(scope="module")
def ba(ids) -> BrainAtlas:
    return ibl_atlas(ids)


@pytest.fixture(autouse=True)
def _fresh_cache():
    atlas.clear_cache()
    yield
    atlas.clear_cache()


def away_from_voxel_edges(xyz: np.ndarray, voxel: float = VOXEL) -> np.ndarray:
    """Points not within a hair of a half-voxel (where rounding in metres or µm may differ)."""
    frac = xyz_to_ccf(xyz) / voxel
    return np.all(np.abs(frac - np.floor(frac) - 0.5) > 1e-6, axis=1)


def inside_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points (µm from bregma) inside the synthetic volume, away from voxel edges."""
    ccf_ml_ap_dv = rng.uniform(0, (np.array(SHAPE)[[2, 0, 1]] - 0.5) * VOXEL, (n, 3))
    xyz = atlas.ccf_to_xyz(ccf_ml_ap_dv)
    return xyz[away_from_voxel_edges(xyz)]


# -- reading ------------------------------------------------------------------------------------


def test_reads_an_nrrd_as_ap_dv_ml_and_caches_it_per_url(nrrd_file, ids):
    vol = read_annotation(nrrd_file.as_uri())
    assert vol.shape == SHAPE and vol.voxel_um == (VOXEL,) * 3
    np.testing.assert_array_equal(vol.ids, ids)
    assert read_annotation(nrrd_file.as_uri()) is vol  # read once per process
    assert read_annotation(str(nrrd_file)) is not vol  # another URL
    atlas.clear_cache()
    assert read_annotation(nrrd_file.as_uri()) is not vol


def test_raw_encoding_and_spacings_header(tmp_path, ids):
    path = tmp_path / "raw.nrrd"
    nrrd.write(str(path), ids.astype(np.int32), {"spacings": [VOXEL] * 3, "encoding": "raw"})
    vol = read_annotation(str(path))
    np.testing.assert_array_equal(vol.ids, ids)
    assert vol.voxel_um == (VOXEL,) * 3


# -- geometry and lookups against iblatlas -------------------------------------------------------


def test_xyz_to_ccf_is_allen_atlas_xyz2ccf_without_scaling():
    # AllenAtlas(mock=True) has the real 25 µm geometry (bregma, axis flips) and a zero volume
    allen = AllenAtlas(res_um=25, mock=True)
    xyz = np.random.default_rng(0).uniform([-5700, -7800, -7600], [5600, 5300, 300], (500, 3))
    np.testing.assert_allclose(xyz_to_ccf(xyz), allen.xyz2ccf(xyz / 1e6), atol=1e-6)
    np.testing.assert_allclose(atlas.ccf_to_xyz(xyz_to_ccf(xyz)), xyz, atol=1e-9)
    # same voxels as AllenAtlas: its mock "retina" slab is DV voxels 100..104 everywhere
    ids = np.transpose(REGIONS.id[allen.label[::8, ::8, :]], (0, 2, 1)).astype(np.uint32)
    vol = AnnotationVolume("mock", ids, (200.0, 25.0, 200.0))
    inside = away_from_voxel_edges(xyz, 25.0)
    labels = allen.get_labels(xyz[inside] / 1e6)
    ours = vol.region_ids(xyz[inside])
    assert (labels != 0).any()
    np.testing.assert_array_equal(ours[labels != 0], labels[labels != 0])


def test_region_ids_match_brain_atlas_get_labels(nrrd_file, ba):
    vol = read_annotation(str(nrrd_file))
    xyz = inside_points(np.random.default_rng(1), 5000)
    ours = vol.region_ids(xyz)
    np.testing.assert_array_equal(ours, ba.get_labels(xyz / 1e6))
    assert len(np.unique(ours)) >= 6  # void, root, and the layers
    # IBL's lateralised labels are negative on the left (x < 0): where our volume holds the
    # left-hemisphere cortex (MOp, ML indices below bregma's) and nowhere else
    lr = ba.get_labels(xyz / 1e6, mapping="Allen-lr")
    mop, visp = ours == rid("MOp"), ours == rid("VISp")
    assert mop.any() and visp.any()
    assert np.all(lr[mop] < 0) and np.all(lr[visp] > 0)
    assert np.all(xyz[mop, 0] < 0) and np.all(lr[(ours != 0) & (xyz[:, 0] < -2 * VOXEL)] < 0)
    assert np.all(lr[(ours != 0) & (xyz[:, 0] > 0)] > 0)


def test_outside_the_volume_and_nan_are_void(nrrd_file):
    vol = read_annotation(str(nrrd_file))
    xyz = np.array([[0, 0, -3000], [0, 0, 5000], [9000, 0, -3000], [0, -9000, -3000],
                    [np.nan, 0, -3000], [0, 0, -30000]])
    ids = vol.region_ids(xyz)
    assert ids[0] != 0
    np.testing.assert_array_equal(ids[1:], 0)


def test_acronyms_and_names_are_brain_regions(ids):
    found = np.unique(ids)
    np.testing.assert_array_equal(atlas.acronyms(found), REGIONS.id2acronym(found))
    np.testing.assert_array_equal(atlas.names(found), REGIONS.get(found)["name"])
    assert list(atlas.acronyms(np.array([0, 997, -382, 123456789]))) == ["void", "root", "CA1", "unknown"]
    assert atlas.unknown_ids(np.array([0, 997, 123456789])) == [123456789]
    assert atlas.region_counts(np.array([0, 382, 382, 997])) == {"CA1": 2, "root": 1, "void": 1}


def test_surface_z_is_insertion_from_dict(nrrd_file, ba):
    """IBL's Insertion.from_dict(d, brain_atlas) replaces z by the brain surface at (x, y)."""
    vol = read_annotation(str(nrrd_file))
    rng = np.random.default_rng(2)
    xy = rng.uniform([-5500, -7700], [5500, 5300], (400, 2))
    xy = np.r_[xy, [[-5739 + 20 * VOXEL, 5400 - (SHAPE[0] - 3) * VOXEL]],  # brain at the top
               [[0, 5400 - VOXEL]], [[-5739 + 0.4 * VOXEL, 0]]]  # no brain in the column
    n_kept = 0
    for x, y in xy:
        if not away_from_voxel_edges(np.array([[x, y, 0.0]]))[0]:
            continue
        d = {"x": x, "y": y, "z": 123.0, "depth": 4000.0, "theta": 10.0, "phi": 45.0}
        ibl_z = Insertion.from_dict(d, ba).z * 1e6
        ours = vol.surface_z(x, y)
        if ours is None:
            n_kept += 1
            assert ibl_z == pytest.approx(123.0)
        else:
            assert ours == pytest.approx(ibl_z, abs=1e-6)
    assert 0 < n_kept < len(xy) / 2
    assert vol.surface_z(20000.0, 0.0) is None  # outside the volume (IBL raises there)


# -- errors -----------------------------------------------------------------------------------


def test_errors_name_the_url_and_the_problem(tmp_path, ids):
    missing = tmp_path / "nope.nrrd"
    with pytest.raises(SourceNotFoundError, match=r"nope\.nrrd.*not found"):
        read_annotation(str(missing))
    with pytest.raises(SourceNotFoundError, match=r"127\.0\.0\.1:1.*(not reachable|Connect)"):
        read_annotation("http://127.0.0.1:1/annotation_25.nrrd")
    text = tmp_path / "annotation.nrrd"
    text.write_text("id,acronym\n997,root\n")
    with pytest.raises(AtlasError, match=r"annotation\.nrrd: not an NRRD"):
        read_annotation(str(text))
    flat = write_nrrd(tmp_path / "flat.nrrd", ids[:, :, 0], voxel=VOXEL,
                      **{"space directions": np.diag([VOXEL] * 2)})
    with pytest.raises(AtlasError, match=r"flat\.nrrd: expected a 3-D .* found 2 dimensions"):
        read_annotation(str(flat))
    template = write_nrrd(tmp_path / "average_template.nrrd", ids.astype(np.float32))
    with pytest.raises(AtlasError, match=r"average_template\.nrrd: expected integer .* 'float'"):
        read_annotation(str(template))
    oblique = write_nrrd(tmp_path / "oblique.nrrd", ids,
                         **{"space directions": np.array([[0, VOXEL, 0], [VOXEL, 0, 0], [0, 0, VOXEL]])})
    with pytest.raises(AtlasError, match=r"oblique\.nrrd: expected axis-aligned"):
        read_annotation(str(oblique))
    cut = tmp_path / "cut.nrrd"
    whole = write_nrrd(tmp_path / "whole.nrrd", ids).read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AtlasError, match=r"cut\.nrrd"):
        read_annotation(str(cut))


# -- S3 -----------------------------------------------------------------------------------------


#: The bucket the ``s3`` fixture (tests/tasks/conftest.py) creates for this module.
S3_BUCKET = "atlases"


def test_reads_through_s3(s3, nrrd_file, ids):
    fs, options = s3
    fs.put(str(nrrd_file), "atlases/allen/annotation_200.nrrd")
    vol = read_annotation("s3://atlases/allen/annotation_200.nrrd", options)
    np.testing.assert_array_equal(vol.ids, ids)
    with pytest.raises(SourceNotFoundError, match="s3://atlases/allen/missing.nrrd"):
        read_annotation("s3://atlases/allen/missing.nrrd", options)


# -- the localize task ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def localize_inputs(tmp_path_factory) -> dict[str, str]:
    """A preprocessed store (32 sites, NP1 rows, first at y = 0) and a QC folder holding a
    SortingAnalyzer with unit locations, as the qc task leaves them."""
    from spikeinterface.core import create_sorting_analyzer, generate_ground_truth_recording

    from neuropool.io import timeseries

    root = tmp_path_factory.mktemp("localize")
    rec, sorting = generate_ground_truth_recording(durations=[2.0], num_channels=32, num_units=5,
                                                   seed=0)
    positions = rec.get_channel_locations()
    n = len(positions)
    store = str(root / "preprocessed.zarr")
    timeseries.create(store, n_samples=100, channel_ids=[str(c) for c in rec.channel_ids],
                      dtype="float32", chunk_samples=100,
                      coords={"x": positions[:, 0], "y": positions[:, 1] - positions[:, 1].min(),
                              "shank": np.zeros(n), "gain_uv": np.ones(n), "adc_shift": np.zeros(n),
                              "is_sync": np.zeros(n, bool)},
                      attrs={"sampling_frequency": 30000.0})
    timeseries.finalize(store)
    analyzer = create_sorting_analyzer(sorting, rec, format="zarr", folder=str(root / "qc" / "analyzer"),
                                       sparse=False)
    analyzer.compute(["random_spikes", "templates", "unit_locations"])
    return {"ephys.preprocessed": store, "units.metrics": str(root / "qc")}


def run_localize(inputs: dict[str, str], out: Path, params: dict, trajectory: dict | None):
    ctx = TaskContext(node="localize[probe00]", probe="probe00", inputs=inputs,
                      outputs={"units.locations": str(out)},
                      info={"probe": {"trajectory": trajectory} if trajectory else {}})
    summary = Localize(params).run_block(ctx, None)
    json.dumps(summary)  # goes into processing.json
    return summary, pd.read_parquet(out / "channels.pqt"), pd.read_parquet(out / "units.pqt")


def test_localize_adds_regions_with_an_atlas(localize_inputs, nrrd_file, ba, tmp_path):
    # vertical, at (-1000, -2000): the entry is snapped from z = 0 to the surface as IBL's; the
    # sites (0-300 µm on the shank, 220-520 µm above the tip) are 850-1150 µm below the surface,
    # across the boundary of the left cortex (MOp, down to 900 µm) and CA1
    traj = {"x": -1000.0, "y": -2000.0, "z": 0.0, "depth": 1370.0, "theta": 0.0, "phi": 0.0}
    url = nrrd_file.as_uri()
    summary, channels, units = run_localize(localize_inputs, tmp_path / "loc", {"atlas": {"url": url}}, traj)
    ibl = Insertion.from_dict(traj, ba)
    assert summary["entry_z_um"]["used"] == pytest.approx(ibl.z * 1e6)
    assert summary["trajectory"]["z"] == pytest.approx(ibl.z * 1e6)
    # channels at IBL's track positions: (localCoordinates y + TIP_SIZE_UM) from the tip
    ibl_y = channels["y"].to_numpy() + 20.0
    expected = ibl.tip + (ibl_y + 200.0)[:, None] / 1e6 / ibl.depth * (ibl.entry - ibl.tip)
    np.testing.assert_allclose(channels[["ml", "ap", "dv"]].to_numpy(), expected * 1e6, atol=1e-6)
    for table in (channels, units):
        assert table["atlas_id"].dtype == np.int64
        xyz = table[["ml", "ap", "dv"]].to_numpy()
        ok = away_from_voxel_edges(xyz)
        np.testing.assert_array_equal(table["atlas_id"].to_numpy()[ok], ba.get_labels(xyz[ok] / 1e6))
        assert list(table["acronym"]) == list(atlas.acronyms(table["atlas_id"].to_numpy()))
    assert set(channels["acronym"]) == {"MOp", "CA1"}
    assert summary["atlas"]["url"] == url
    counts = summary["region_counts"]
    assert sum(counts["channels"].values()) == len(channels)
    assert sum(counts["units"].values()) == len(units)
    assert counts["channels"] == channels["acronym"].value_counts().to_dict()
    assert url in summary["regions"] and "units by region" in summary["regions"]
    # keeping the given z: the track is 0 - surface higher, and regions follow
    summary2, channels2, _ = run_localize(localize_inputs, tmp_path / "loc2",
                                          {"atlas": {"url": url, "snap_entry_to_surface": False}}, traj)
    assert "entry_z_um" not in summary2 and summary2["trajectory"]["z"] == 0.0
    shift = channels2["dv"].to_numpy() - channels["dv"].to_numpy()
    np.testing.assert_allclose(shift, 0.0 - ibl.z * 1e6)


def test_localize_without_an_atlas_or_a_trajectory_says_why(localize_inputs, nrrd_file, tmp_path):
    traj = {"x": 1000.0, "y": -2000.0, "depth": 3000.0}
    summary, channels, units = run_localize(localize_inputs, tmp_path / "a", {}, traj)
    assert summary["regions"].startswith("left out: no atlas configured")
    assert "atlas_id" not in channels and "acronym" not in units
    assert np.isfinite(channels["dv"]).all()
    summary, channels, _ = run_localize(localize_inputs, tmp_path / "b",
                                        {"atlas": {"url": str(nrrd_file)}}, None)
    assert summary["regions"].startswith("left out: no probe trajectory")
    assert "atlas_id" not in channels and channels["dv"].isna().all()
    summary, _, _ = run_localize(localize_inputs, tmp_path / "c", {}, None)
    assert "no probe trajectory and no atlas" in summary["regions"]


def test_localize_atlas_errors_and_params(localize_inputs, tmp_path):
    from neuropool.errors import ConfigError

    traj = {"x": 1000.0, "y": -2000.0, "depth": 3000.0}
    with pytest.raises(SourceNotFoundError, match="missing.nrrd"):
        run_localize(localize_inputs, tmp_path / "a", {"atlas": {"url": str(tmp_path / "missing.nrrd")}}, traj)
    with pytest.raises(ConfigError, match="localize.atlas.bregma_um"):
        Localize({"atlas": {"url": "x.nrrd", "bregma_um": [1, 2]}})
    with pytest.raises(ConfigError, match="localize.atlas.snap"):
        Localize({"atlas": {"url": "x.nrrd", "snap": True}})
    # where the atlas's storage options live does not change what is computed
    a = Localize({"atlas": {"url": "s3://b/a.nrrd"}}).params.fingerprint_fields()
    b = Localize({"atlas": {"url": "s3://b/a.nrrd", "storage_options": {"anon": True}}}).params.fingerprint_fields()
    assert a == b
