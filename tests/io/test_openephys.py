"""Open Ephys binary reader: the real 16-channel recording, stream choice, errors."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from neuropool.errors import MetadataError, RawDataError, SourceNotFoundError
from neuropool.io.readers.openephys import OpenEphysReader, find_oebin

RECORDING = "openephys-cortex-16ch/Record Node 101/experiment1/recording1"
DAT = "continuous/File_Reader-100.example_data/continuous.dat"


def write_recording(root: Path, streams: dict[str, np.ndarray], units: str = "uV") -> Path:
    """A minimal Open Ephys binary recording folder with one ``continuous.dat`` per stream."""
    entries = []
    for name, data in streams.items():
        folder = f"Acq-100.{name}"
        (root / "continuous" / folder).mkdir(parents=True)
        data.astype("<i2").tofile(root / "continuous" / folder / "continuous.dat")
        channels = [
            {"channel_name": f"CH{i + 1}", "bit_volts": 0.195, "units": units} for i in range(data.shape[1])
        ]
        entries.append({
            "folder_name": f"{folder}/", "sample_rate": 30000.0, "stream_name": name,
            "num_channels": data.shape[1], "channels": channels,
        })
    (root / "structure.oebin").write_text(json.dumps({"GUI version": "0.6.7", "continuous": entries}))
    return root


@pytest.fixture
def real(shared_data) -> Path:
    return shared_data / RECORDING


@pytest.mark.parametrize(
    "relative",
    ["openephys-cortex-16ch", "openephys-cortex-16ch/Record Node 101", RECORDING,
     f"{RECORDING}/structure.oebin", f"{RECORDING}/{DAT}"],
)
def test_real_recording_opens_from_any_level(shared_data, real, relative):
    reader = OpenEphysReader(str(shared_data / relative))
    info = reader.info
    assert (info.n_channels, info.sampling_frequency, info.n_samples) == (16, 40000.0, 131_362)
    assert info.channel_ids == [f"CH{i}" for i in range(1, 17)]
    assert info.url == str(real / DAT) and info.format == "openephys"
    np.testing.assert_allclose(info.gains_uv, 0.05, rtol=1e-7)
    assert np.isnan(info.positions).all() and not info.adc_shifts.any() and not info.is_sync.any()
    assert reader.stream == "example_data" and info.metadata["GUI version"] == "0.6.7"


def test_real_data_identical_to_memmap_and_spikeinterface(real):
    import spikeinterface.extractors as se

    reader = OpenEphysReader(str(real))
    expected = np.memmap(real / DAT, dtype="<i2", mode="r").reshape(-1, 16)
    np.testing.assert_array_equal(reader.read(0, 131_362), expected)
    for start, stop in [(0, 10), (40_000, 80_123), (131_000, 140_000), (-5, 3)]:
        np.testing.assert_array_equal(reader.read(start, stop), expected[max(start, 0) : stop])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recording = se.read_openephys(real.parents[1], stream_id="0")
    traces = recording.get_traces(return_in_uV=False)
    np.testing.assert_array_equal(reader.read(0, 131_362), traces)
    np.testing.assert_allclose(reader.info.gains_uv, recording.get_channel_gains())
    assert recording.get_sampling_frequency() == reader.info.sampling_frequency


def test_pickle(real):
    reader = OpenEphysReader(str(real))
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(1000, 1100), reader.read(1000, 1100))


def test_stream_choice(tmp_path):
    a, b = np.arange(60).reshape(20, 3), -np.arange(40).reshape(10, 4)
    root = write_recording(tmp_path / "rec", {"ProbeA": a, "ProbeB": b})
    first = OpenEphysReader(str(root))
    assert first.stream == "ProbeA" and first.info.n_channels == 3
    second = OpenEphysReader(str(root), stream="ProbeB")
    np.testing.assert_array_equal(second.read(0, 10), b)
    by_folder = OpenEphysReader(str(root / "structure.oebin"), stream="Acq-100.ProbeB")
    assert by_folder.info.n_samples == 10
    by_dat = OpenEphysReader(str(root / "continuous/Acq-100.ProbeB/continuous.dat"))
    assert by_dat.stream == "ProbeB"
    with pytest.raises(MetadataError) as err:
        OpenEphysReader(str(root), stream="ProbeC")
    assert "ProbeC" in str(err.value) and "ProbeA" in str(err.value) and "ProbeB" in str(err.value)


def test_adc_channels_in_volts_are_scaled_to_microvolts(tmp_path):
    root = write_recording(tmp_path / "rec", {"ADC": np.zeros((5, 2))}, units="V")
    np.testing.assert_allclose(OpenEphysReader(str(root)).info.gains_uv, 0.195e6)


def test_dat_not_a_whole_number_of_rows(tmp_path):
    root = write_recording(tmp_path / "rec", {"A": np.zeros((10, 3))})
    dat = root / "continuous/Acq-100.A/continuous.dat"
    with dat.open("ab") as f:
        f.write(b"\0\0\0")
    with pytest.raises(RawDataError) as err:
        OpenEphysReader(str(root))
    assert str(dat) in str(err.value) and "63 bytes" in str(err.value) and "6-byte rows" in str(err.value)


def test_missing_and_malformed(tmp_path, real):
    with pytest.raises(SourceNotFoundError, match="nowhere"):
        OpenEphysReader(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFoundError, match="structure.oebin"):
        OpenEphysReader(str(tmp_path / "empty"))
    root = write_recording(tmp_path / "rec", {"A": np.zeros((10, 3))})
    (root / "continuous/Acq-100.A/continuous.dat").unlink()
    with pytest.raises(SourceNotFoundError, match="continuous.dat"):
        OpenEphysReader(str(root))
    (root / "structure.oebin").write_text("{broken")
    with pytest.raises(MetadataError, match=str(root / "structure.oebin")):
        OpenEphysReader(str(root / "structure.oebin"))


def test_several_recordings_are_listed(tmp_path, real):
    for name in ("recording1", "recording2"):
        shutil.copytree(real, tmp_path / "experiment1" / name)
    assert len(find_oebin(str(tmp_path))) == 2
    with pytest.raises(MetadataError) as err:
        OpenEphysReader(str(tmp_path))
    assert "recording1" in str(err.value) and "recording2" in str(err.value)
    assert OpenEphysReader(str(tmp_path / "experiment1/recording2")).info.n_samples == 131_362
