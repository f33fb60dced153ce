"""The reader registry: lazy entries, guessing by name, folders, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import neuropool.io.readers as readers
from neuropool.errors import MissingDependencyError, SourceNotFoundError, UnknownFormatError
from neuropool.io.readers import (
    READERS,
    available_formats,
    get_reader_class,
    guess_format,
    open_raw,
    register_reader,
)
from neuropool.io.readers.mtscomp import MtscompReader
from neuropool.io.readers.openephys import OpenEphysReader
from neuropool.io.readers.spikeglx import SpikeGLXReader

from .test_mtscomp import compress, make_data
from .test_openephys import write_recording
from .test_spikeglx import write_np1


def test_registry_is_one_lazy_table():
    assert set(READERS) == {"spikeglx", "mtscomp", "openephys"}
    for entry in READERS.values():
        assert isinstance(entry["class"], str) and ":" in entry["class"]
        assert entry["suffixes"] and entry["err"]
    code = "import sys, neuropool.io.readers; print(any(m.endswith(('spikeglx', 'mtscomp', 'openephys')) for m in sys.modules if m.startswith('neuropool')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    assert get_reader_class("spikeglx") is SpikeGLXReader
    assert available_formats()["mtscomp"] == (".cbin", ".ch")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("run_g0_t0.imec0.ap.bin", "spikeglx"),
        ("s3://bucket/run_g0_t0.imec0.lf.bin", "spikeglx"),
        ("run.ap.meta", "spikeglx"),
        ("/data/run.ap.cbin", "mtscomp"),
        ("memory://x/run.ap.ch", "mtscomp"),
        ("/rec/structure.oebin", "openephys"),
        ("/rec/continuous/Acq-100.A/continuous.dat", "openephys"),
    ],
)
def test_guess_format(url, name):
    assert guess_format(url) == name


def test_unknown_format_lists_what_is_supported(tmp_path):
    with pytest.raises(UnknownFormatError) as err:
        guess_format("session.nwb")
    message = str(err.value)
    assert "session.nwb" in message
    for name, suffixes in available_formats().items():
        assert name in message and all(s in message for s in suffixes)
    (tmp_path / "session.nwb").write_bytes(b"x")
    with pytest.raises(UnknownFormatError, match="session.nwb"):
        open_raw(tmp_path / "session.nwb")
    with pytest.raises(UnknownFormatError, match="nwb"):
        open_raw(tmp_path / "session.nwb", format="nwb")


def test_missing_source_names_the_url(tmp_path):
    url = str(tmp_path / "absent.ap.bin")
    with pytest.raises(SourceNotFoundError) as err:
        open_raw(url)
    assert url in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_open_each_format_by_file_and_by_folder(tmp_path, shared_data):
    bin_path, data = write_np1(tmp_path / "sglx" / "run_g0" / "run_g0_imec0", n_samples=600)
    reader = open_raw(str(bin_path))
    assert isinstance(reader, SpikeGLXReader)
    assert isinstance(open_raw(str(bin_path.with_suffix(".meta"))), SpikeGLXReader)
    by_folder = open_raw(str(tmp_path / "sglx"))  # run folder -> probe folder -> .ap.bin
    assert isinstance(by_folder, SpikeGLXReader) and by_folder.info.url == str(bin_path)
    np.testing.assert_array_equal(by_folder.read(0, 600), data)

    cbin = compress(tmp_path / "cbin", make_data(900, 16), name="run_g0_t0.imec0.ap", chunk_duration=0.01)
    assert isinstance(open_raw(str(cbin)), MtscompReader)
    assert isinstance(open_raw(str(tmp_path / "cbin")), MtscompReader)
    assert isinstance(open_raw(str(cbin.with_suffix(".ch"))), MtscompReader)

    oe = open_raw(shared_data / "openephys-cortex-16ch")
    assert isinstance(oe, OpenEphysReader) and oe.info.n_samples == 131_362
    assert isinstance(open_raw(str(tmp_path / "sglx"), format="spikeglx"), SpikeGLXReader)


def test_meta_beside_a_cbin_opens_the_cbin(tmp_path):
    from neuropool.io.readers.spikeglx import make_np1_meta, write_meta

    data = make_data(300, 385)
    cbin = compress(tmp_path, data, name="run_g0_t0.imec0.ap", chunk_duration=0.005)
    write_meta(str(cbin.with_suffix(".meta")), make_np1_meta(300, file_size_bytes=data.nbytes))
    reader = open_raw(str(cbin.with_suffix(".meta")))
    assert isinstance(reader, MtscompReader) and reader.info.probe_type == "NP1"


def test_folder_with_several_recordings_lists_them(tmp_path):
    write_np1(tmp_path / "a", n_samples=50, name="one_g0_t0.imec0.ap")
    write_np1(tmp_path / "a", n_samples=50, name="two_g0_t0.imec1.ap")
    with pytest.raises(UnknownFormatError) as err:
        open_raw(str(tmp_path / "a"))
    assert "one_g0_t0.imec0.ap.bin" in str(err.value) and "two_g0_t0.imec1.ap.bin" in str(err.value)
    (tmp_path / "b").mkdir()
    with pytest.raises(UnknownFormatError, match="no recording found"):
        open_raw(str(tmp_path / "b"))


def test_folder_with_only_a_header_names_the_missing_data(shared_data):
    with pytest.raises(SourceNotFoundError, match=r"imec0\.ap\.cbin"):
        open_raw(str(shared_data / "spikeglx" / "np2split"))


def test_memory_url_and_open_ephys_folder_in_memory(tmp_path):
    import fsspec

    root = write_recording(tmp_path / "rec", {"A": np.arange(30).reshape(10, 3)})
    fs = fsspec.filesystem("memory")
    fs.put(str(root), "/oe/rec", recursive=True)
    try:
        reader = open_raw("memory://oe")
        assert isinstance(reader, OpenEphysReader)
        np.testing.assert_array_equal(reader.read(0, 10), np.arange(30).reshape(10, 3))
    finally:
        fs.rm("/oe", recursive=True)


def test_register_reader_and_missing_dependency(monkeypatch):
    monkeypatch.setattr(readers, "READERS", dict(READERS))
    register_reader("fancy", "neuropool_no_such_module:Reader", (".fancy",), "pip install fancy-format")
    with pytest.raises(ValueError, match="already registered"):
        register_reader("fancy", "x:y")
    register_reader("fancy", "neuropool_no_such_module:Reader", (".fancy",), "pip install fancy-format", clobber=True)
    with pytest.raises(MissingDependencyError, match="pip install fancy-format"):
        guess_format("data.fancy")
    assert guess_format("data.ap.bin") == "spikeglx"  # a broken entry does not block the others
