"""SpikeGLX reader: real metas against probeinterface/spikeinterface, generated files, errors."""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from neuropool.errors import (
    ChecksumError,
    MetadataError,
    RawDataError,
    SourceNotFoundError,
    TruncatedFileError,
)
from neuropool.io.readers.spikeglx import (
    SpikeGLXReader,
    _geometry,
    channel_layout,
    make_np1_meta,
    probe_table,
    read_meta,
    write_meta,
)

REAL_METAS = [
    "sample3A_g0_t0.imec.ap.meta",
    "sample3B_g0_t0.imec1.ap.meta",
    "sample3B_g0_t0.imec1.lf.meta",
    "sampleNP2.1_g0_t0.imec.ap.meta",
    "sampleNP2.4_1shank_g0_t0.imec.ap.meta",
    "np2split/_spikeglx_ephysData_g0_t0.imec0.ap.meta",
]
EXPECTED = {  # name: (probe type, part number, µV per bit of the neural channels)
    "sample3A_g0_t0.imec.ap.meta": ("3A", "NP1010", 0.6 / 512 / 500 * 1e6),
    "sample3B_g0_t0.imec1.ap.meta": ("NP1", "PRB_1_4_0480_1", 2.34375),
    "sample3B_g0_t0.imec1.lf.meta": ("NP1", "PRB_1_4_0480_1", 4.6875),
    "sampleNP2.1_g0_t0.imec.ap.meta": ("NP2", "PRB2_1_2_0640_0", 0.5 / 8192 / 80 * 1e6),
    "sampleNP2.4_1shank_g0_t0.imec.ap.meta": ("NP2.4", "NP2010", 0.762939453125),
    "np2split/_spikeglx_ephysData_g0_t0.imec0.ap.meta": ("NP2.4", "NP2010", 0.762939453125),
}


def write_np1(folder: Path, n_samples: int = 3000, name: str = "demo_g0_t0.imec0.ap", seed: int = 0):
    """Write a NP1.0 ``.bin`` (noise + spikes + a sync square wave) and its ``.meta``."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 12, (n_samples, 385)).astype(np.int16)
    for t in rng.integers(20, n_samples - 20, 8):
        data[t : t + 10, rng.integers(0, 380) : 384] -= (np.hanning(10)[:, None] * 80).astype(np.int16)
    data[:, 384] = (np.arange(n_samples) // 300 % 2).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    bin_path = folder / f"{name}.bin"
    data.tofile(bin_path)
    raw = bin_path.read_bytes()
    meta = make_np1_meta(
        n_samples, file_size_bytes=len(raw), sha1=hashlib.sha1(raw).hexdigest(),
        file_name=f"D:/run/{name}.bin",
    )
    write_meta(str(folder / f"{name}.meta"), meta)
    return bin_path, data


def _probe(shared_data: Path, name: str):
    import probeinterface

    # probeinterface cannot read an LF meta alone (it keeps no saved channel): SpikeInterface
    # reads the AP meta of the same probe for an LF stream; so do we here.
    return probeinterface.read_spikeglx(shared_data / "spikeglx" / name.replace(".lf.", ".ap."))


def _reference_shifts(probe) -> np.ndarray:
    shifts = probe.contact_annotations.get("inter_sample_shift")
    if shifts is None:  # probeinterface 0.4 stores the ADC order; spikeinterface divides it
        from spikeinterface.extractors.neuropixels_utils import (
            get_neuropixels_sample_shifts_from_probe,
        )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shifts = get_neuropixels_sample_shifts_from_probe(probe)
    return np.asarray(shifts, dtype=float)


# -- real metas --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_METAS)
def test_real_meta_parses(shared_data, name):
    meta = read_meta(str(shared_data / "spikeglx" / name))
    assert meta["nSavedChans"] == "385" and isinstance(meta["imSampRate"], str)
    assert meta["imroTbl"].startswith("(") and "snsChanMap" in meta  # "~" stripped
    assert not any(k.startswith("~") for k in meta)
    layout = channel_layout(meta, name)
    ptype, part, gain = EXPECTED[name]
    assert (layout.probe_type, layout.part_number) == (ptype, part)
    assert len(layout.channel_ids) == 385 and layout.channel_ids[-1] == "SY0"
    assert layout.is_sync.sum() == 1 and layout.is_sync[-1]
    np.testing.assert_allclose(layout.gains_uv[:-1], gain, rtol=1e-12)
    assert layout.gains_uv[-1] == 1.0 and np.isnan(layout.positions[-1]).all()


@pytest.mark.parametrize("name", REAL_METAS)
def test_real_geometry_and_shifts_match_probeinterface(shared_data, name):
    layout = channel_layout(read_meta(str(shared_data / "spikeglx" / name)), name)
    probe = _probe(shared_data, name)
    neural = ~layout.is_sync
    np.testing.assert_array_equal(layout.positions[neural], probe.contact_positions)
    pi_shanks = probe.shank_ids.astype(int) if probe.shank_ids is not None else 0
    np.testing.assert_array_equal(layout.shank_ids[neural], pi_shanks)
    np.testing.assert_allclose(layout.adc_shifts[neural], _reference_shifts(probe), atol=1e-12)
    assert layout.adc_shifts.max() < 1
    kind = "NP2" if layout.probe_type.startswith("NP2") else "NP1"
    n_cycles, per_adc = (16, 16) if kind == "NP2" else (13, 12)
    readout = np.arange(384)
    np.testing.assert_allclose(layout.adc_shifts[:384], (readout // 2 % per_adc) / n_cycles)


@pytest.mark.parametrize("name", [n for n in REAL_METAS if ".lf." not in n])
def test_shank_map_gives_the_same_positions(shared_data, name):
    """The snsShankMap fallback (used for IMRO formats we do not decode) agrees with imroTbl."""
    meta = read_meta(str(shared_data / "spikeglx" / name))
    layout = channel_layout(meta, name)
    feat = probe_table()["neuropixels_probes"][layout.part_number]
    pos, shank, source = _geometry(meta, feat, {}, None, 384)
    assert source == "snsShankMap"
    np.testing.assert_array_equal(pos, layout.positions[:384])
    np.testing.assert_array_equal(shank, layout.shank_ids[:384])


@pytest.mark.parametrize("name", [n for n in REAL_METAS if "np2split" not in n])
def test_real_meta_matches_spikeinterface(shared_data, tmp_path, name):
    """Pair a real meta with a short generated .bin; compare gains, positions and shifts."""
    import spikeinterface.extractors as se

    n = 200
    for meta_name in {name, name.replace(".lf.", ".ap.")}:
        text = (shared_data / "spikeglx" / meta_name).read_text()
        text = re.sub(r"fileSizeBytes=\d+", f"fileSizeBytes={n * 385 * 2}", text)
        (tmp_path / meta_name).write_text(text)
        (tmp_path / meta_name.replace(".meta", ".bin")).write_bytes(bytes(n * 385 * 2))
    reader = SpikeGLXReader(str(tmp_path / name.replace(".meta", ".bin")))
    assert reader.info.n_samples == n and reader.info.format == "spikeglx"
    band = ".lf" if ".lf." in name else ".ap"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streams = [s for s in se.get_neo_streams("spikeglx", tmp_path)[0] if s.endswith(band)]
        recording = se.read_spikeglx(tmp_path, stream_id=streams[0])
    info = reader.info
    np.testing.assert_allclose(info.gains_uv[:-1], recording.get_channel_gains(), rtol=1e-12)
    np.testing.assert_array_equal(info.positions[:-1], recording.get_channel_locations())
    np.testing.assert_allclose(info.adc_shifts[:-1], recording.get_property("inter_sample_shift"))
    assert info.sampling_frequency == recording.get_sampling_frequency()


def test_np2split_meta_without_tilde(shared_data):
    """This real meta has its table keys without '~' (rewritten by a tool): same result."""
    meta = read_meta(str(shared_data / "spikeglx/np2split/_spikeglx_ephysData_g0_t0.imec0.ap.meta"))
    layout = channel_layout(meta)
    assert sorted(set(layout.shank_ids[:-1])) == [0, 1, 2, 3]
    assert float(meta["imSampRate"]) == pytest.approx(29999.757983)


# -- generated files -----------------------------------------------------------------------------


def test_make_np1_meta_keys_and_order(tmp_path, shared_data):
    meta = make_np1_meta(1000, file_size_bytes=770_000, sha1="ab" * 20)
    real = list(read_meta(str(shared_data / "spikeglx/sample3B_g0_t0.imec1.ap.meta")))
    ours = list(meta)
    common = [k for k in real if k in ours]
    assert common == [k for k in ours if k in real]  # same relative order as SpikeGLX
    for key in ("acqApLfSy", "fileSHA1", "fileSizeBytes", "imDatPrb_type", "nSavedChans", "typeThis"):
        assert key in meta
    assert ours[-4:] == ["imroTbl", "snsChanMap", "snsGeomMap", "snsShankMap"]
    assert meta["fileSHA1"] == "AB" * 20 and meta["fileTimeSecs"] == "0.0333333333333333"
    write_meta(str(tmp_path / "x.meta"), meta)
    lines = (tmp_path / "x.meta").read_text().splitlines()
    assert lines[0] == "acqApLfSy=384,384,1"
    assert [ln.split("=")[0] for ln in lines[-4:]] == ["~imroTbl", "~snsChanMap", "~snsGeomMap", "~snsShankMap"]
    assert read_meta(str(tmp_path / "x.meta")) == meta
    assert "fileSHA1" not in make_np1_meta(10, file_size_bytes=7700)


def test_generated_meta_agrees_with_probeinterface_and_spikeinterface(tmp_path):
    import probeinterface
    import spikeinterface.extractors as se

    bin_path, data = write_np1(tmp_path)
    reader = SpikeGLXReader(str(bin_path))
    meta = reader.info.metadata
    assert channel_layout(meta).geometry_source == "snsGeomMap"
    without_geom = {k: v for k, v in meta.items() if k != "snsGeomMap"}
    assert channel_layout(without_geom).geometry_source == "imroTbl"
    np.testing.assert_array_equal(channel_layout(without_geom).positions, reader.info.positions)
    probe = probeinterface.read_spikeglx(bin_path.with_suffix(".meta"))
    np.testing.assert_array_equal(reader.info.positions[:-1], probe.contact_positions)
    np.testing.assert_allclose(reader.info.adc_shifts[:-1], _reference_shifts(probe))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recording = se.read_spikeglx(tmp_path, stream_id="imec0.ap")
    np.testing.assert_array_equal(reader.info.positions[:-1], recording.get_channel_locations())
    np.testing.assert_allclose(reader.info.gains_uv[:-1], recording.get_channel_gains())
    np.testing.assert_array_equal(reader.read(0, 3000)[:, :-1], recording.get_traces())
    assert reader.info.probe_type == "NP1" and reader.info.gains_uv[0] == 2.34375


def test_reader_reads_exactly_and_pickles(tmp_path):
    bin_path, data = write_np1(tmp_path)
    reader = SpikeGLXReader(str(bin_path))
    info = reader.info
    assert (info.n_samples, info.n_channels, info.sampling_frequency) == (3000, 385, 30000.0)
    assert info.channel_ids[:2] == ["AP0", "AP1"] and info.channel_ids[-1] == "SY0"
    np.testing.assert_array_equal(reader.read(0, 3000), data)
    rng = np.random.default_rng(1)
    for start, stop in rng.integers(-50, 3050, (20, 2)):
        np.testing.assert_array_equal(reader.read(start, stop), data[max(start, 0) : max(stop, 0)])
    assert reader.read(10, 5).shape == (0, 385)
    out = reader.read(5, 10)
    out[:] = 0  # a writable copy
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(100, 200), data[100:200])
    reader.verify()
    assert SpikeGLXReader(str(bin_path.with_suffix(".meta"))).info.url == str(bin_path)
    assert "385 channels" in repr(reader)


def test_reader_through_memory_filesystem(tmp_path):
    import fsspec

    bin_path, data = write_np1(tmp_path, n_samples=500)
    fs = fsspec.filesystem("memory")
    fs.pipe("/sglx/demo_g0_t0.imec0.ap.bin", bin_path.read_bytes())
    fs.pipe("/sglx/demo_g0_t0.imec0.ap.meta", bin_path.with_suffix(".meta").read_bytes())
    reader = SpikeGLXReader("memory://sglx/demo_g0_t0.imec0.ap.bin")
    np.testing.assert_array_equal(reader.read(100, 400), data[100:400])
    fs.rm("/sglx", recursive=True)


# -- errors --------------------------------------------------------------------------------------


def test_file_size_disagrees_with_meta(tmp_path):
    bin_path, _ = write_np1(tmp_path)
    meta = read_meta(str(bin_path.with_suffix(".meta")))
    size = bin_path.stat().st_size
    write_meta(str(bin_path.with_suffix(".meta")), {**meta, "fileSizeBytes": str(size + 770)})
    with pytest.raises(TruncatedFileError) as err:
        SpikeGLXReader(str(bin_path))
    assert str(bin_path) in str(err.value) and str(size) in str(err.value)
    assert str(size + 770) in str(err.value) and "copy it again" in str(err.value)
    write_meta(str(bin_path.with_suffix(".meta")), {**meta, "fileSizeBytes": str(size - 770)})
    with pytest.raises(RawDataError) as err:
        SpikeGLXReader(str(bin_path))
    assert not isinstance(err.value, TruncatedFileError)
    assert str(size - 770) in str(err.value) and "fileSizeBytes" in str(err.value)


def test_size_not_a_whole_number_of_rows(tmp_path):
    bin_path, _ = write_np1(tmp_path)
    with bin_path.open("ab") as f:
        f.write(b"\0" * 100)
    meta = read_meta(str(bin_path.with_suffix(".meta")))
    size = bin_path.stat().st_size
    write_meta(str(bin_path.with_suffix(".meta")), {**meta, "fileSizeBytes": str(size)})
    with pytest.raises(RawDataError) as err:
        SpikeGLXReader(str(bin_path))
    message = str(err.value)
    assert str(bin_path) in message and str(size) in message and "770-byte rows" in message
    assert "100 stray bytes" in message


def test_missing_files(tmp_path):
    bin_path, _ = write_np1(tmp_path)
    with pytest.raises(SourceNotFoundError, match=re.escape(str(tmp_path / "nope.bin"))):
        SpikeGLXReader(str(tmp_path / "nope.bin"))
    bin_path.with_suffix(".meta").unlink()
    with pytest.raises(MetadataError) as err:
        SpikeGLXReader(str(bin_path))
    assert str(bin_path.with_suffix(".meta")) in str(err.value) and "no such file" in str(err.value)
    with pytest.raises(SourceNotFoundError, match="x.meta"):
        read_meta(str(tmp_path / "x.meta"))


def test_malformed_meta_line(tmp_path):
    path = tmp_path / "bad.meta"
    path.write_text("nSavedChans=385\nthis line has no equals sign\n")
    with pytest.raises(MetadataError) as err:
        read_meta(str(path))
    assert str(path) in str(err.value) and "line 2" in str(err.value)
    path.write_text("\n\n")
    with pytest.raises(MetadataError, match="empty"):
        read_meta(str(path))


def test_checksum_mismatch(tmp_path):
    bin_path, data = write_np1(tmp_path)
    data[7, 7] += 1
    data.tofile(bin_path)
    with pytest.raises(ChecksumError) as err:
        SpikeGLXReader(str(bin_path)).verify()
    assert str(bin_path) in str(err.value) and "fileSHA1" in str(err.value)


def test_copy_of_real_meta_without_bin_names_the_bin(shared_data, tmp_path):
    shutil.copy(shared_data / "spikeglx/sample3B_g0_t0.imec1.ap.meta", tmp_path)
    with pytest.raises(SourceNotFoundError, match="sample3B_g0_t0.imec1.ap.bin"):
        SpikeGLXReader(str(tmp_path / "sample3B_g0_t0.imec1.ap.meta"))
