"""open_session: session.json, discovery of recordings, single files, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuropool.errors import ConfigError, SourceNotFoundError, UnknownFormatError
from neuropool.io.session import open_session

OPENEPHYS = "openephys-cortex-16ch"
OE_RECORDING = "Record Node 101/experiment1/recording1"


def touch(root: Path, *names: str) -> None:
    """Create empty files (discovery looks at names only)."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


# -- session.json ------------------------------------------------------------------------------


def test_session_json_gives_probes_and_metadata(tmp_path):
    session = tmp_path / "mouse_2024-01-01_001"
    touch(session, "ephys/a/rec.ap.cbin", "ephys/b/rec.ap.bin", "ephys/c/ignored.ap.cbin")
    trajectory = {"x": -2243.0, "y": -2000.0, "z": 0.0, "depth": 4000.0, "theta": 15.0, "phi": 180.0}
    doc = {"subject": "mouse", "probes": {
        "probe01": {"raw": "ephys/a/rec.ap.cbin", "trajectory": trajectory},
        "probe00": {"raw": "ephys/b/rec.ap.bin"},
    }}
    (session / "session.json").write_text(json.dumps(doc))
    s = open_session(str(session))
    assert s.name == "mouse_2024-01-01_001" and s.url == str(session)
    # session.json wins over discovery: the third recording is not a probe
    assert s.probes == {"probe01": f"{session}/ephys/a/rec.ap.cbin", "probe00": f"{session}/ephys/b/rec.ap.bin"}
    assert s.metadata == doc
    assert s.probe_info("probe01") == {"raw": "ephys/a/rec.ap.cbin", "trajectory": trajectory}
    assert s.probe_info("probe00") == {"raw": "ephys/b/rec.ap.bin"}
    assert s.probe_info("probe07") == {}


def test_session_json_paths_are_not_checked_here(tmp_path):
    """A recording named in session.json need not exist yet: decompress says so, naming it."""
    (tmp_path / "session.json").write_text(json.dumps({"probes": {"probe00": {"raw": "gone.ap.cbin"}}}))
    assert open_session(str(tmp_path)).probes == {"probe00": f"{tmp_path}/gone.ap.cbin"}


def test_session_json_probe_without_raw_names_the_file(tmp_path):
    (tmp_path / "session.json").write_text(json.dumps({"probes": {"probe00": {"model": "NP1"}}}))
    with pytest.raises(SourceNotFoundError, match=r"session\.json: probe probe00 has no 'raw'") as err:
        open_session(str(tmp_path))
    assert str(tmp_path / "session.json") in str(err.value)


def test_session_json_bad_probe_name(tmp_path):
    (tmp_path / "session.json").write_text(json.dumps({"probes": {"imec0": {"raw": "x.ap.cbin"}}}))
    with pytest.raises(ConfigError, match="imec0"):
        open_session(str(tmp_path))


# -- discovery ---------------------------------------------------------------------------------


def test_cbin_preferred_over_bin_of_the_same_stem(tmp_path):
    touch(tmp_path, "raw/rec_g0_t0.imec0.ap.bin", "raw/rec_g0_t0.imec0.ap.cbin",
          "raw/rec_g0_t0.imec0.ap.ch", "raw/rec_g0_t0.imec0.ap.meta")
    assert open_session(str(tmp_path)).probes == {"probe00": f"{tmp_path}/raw/rec_g0_t0.imec0.ap.cbin"}


def test_bin_of_another_stem_is_kept(tmp_path):
    touch(tmp_path, "a/one.ap.cbin", "a/one.ap.bin", "b/two.ap.bin")
    assert open_session(str(tmp_path)).probes == {
        "probe00": f"{tmp_path}/a/one.ap.cbin", "probe01": f"{tmp_path}/b/two.ap.bin"}


def test_lf_streams_and_sidecars_are_not_probes(tmp_path):
    touch(tmp_path, "r/x.imec0.ap.cbin", "r/x.imec0.ap.ch", "r/x.imec0.ap.meta",
          "r/x.imec0.lf.cbin", "r/x.imec0.lf.bin", "r/x.nidq.bin")
    session = open_session(str(tmp_path))
    assert session.probes == {"probe00": f"{tmp_path}/r/x.imec0.ap.cbin"}
    # ... but the LF stream beside an AP stream is that probe's (the .cbin preferred)
    assert session.lf == {"probe00": f"{tmp_path}/r/x.imec0.lf.cbin"}


def test_lf_stream_found_beside_its_ap_stream_only(tmp_path):
    touch(tmp_path, "probe00/x.imec0.ap.bin", "probe00/x.imec0.lf.bin", "probe01/y.imec1.ap.cbin",
          "probe01/other.imec1.lf.bin")
    session = open_session(str(tmp_path))
    assert session.lf == {"probe00": f"{tmp_path}/probe00/x.imec0.lf.bin"}  # not another stem's


def test_session_json_names_the_lf_stream(tmp_path):
    doc = {"probes": {"probe00": {"raw": "a/x.ap.cbin", "lf": "a/x.lf.cbin"}, "probe01": {"raw": "b/y.ap.cbin"}}}
    (tmp_path / "session.json").write_text(json.dumps(doc))
    assert open_session(str(tmp_path)).lf == {"probe00": f"{tmp_path}/a/x.lf.cbin"}


def test_probe_folder_names_are_honoured(tmp_path):
    touch(tmp_path, "raw_ephys_data/probe01/a.ap.cbin", "raw_ephys_data/probe00/z.ap.cbin",
          "raw_ephys_data/probe03/b.ap.bin")
    assert open_session(str(tmp_path)).probes == {
        "probe00": f"{tmp_path}/raw_ephys_data/probe00/z.ap.cbin",
        "probe01": f"{tmp_path}/raw_ephys_data/probe01/a.ap.cbin",
        "probe03": f"{tmp_path}/raw_ephys_data/probe03/b.ap.bin",
    }


def test_unnamed_recordings_take_the_free_numbers_in_sorted_order(tmp_path):
    touch(tmp_path, "b/x.ap.cbin", "a/y.ap.cbin", "probe00/w.ap.cbin", "probe02/v.ap.bin")
    assert open_session(str(tmp_path)).probes == {
        "probe00": f"{tmp_path}/probe00/w.ap.cbin",
        "probe01": f"{tmp_path}/a/y.ap.cbin",
        "probe02": f"{tmp_path}/probe02/v.ap.bin",
        "probe03": f"{tmp_path}/b/x.ap.cbin",
    }


def test_innermost_probe_folder_wins(tmp_path):
    touch(tmp_path, "probe05/probe01/a.ap.cbin")
    assert open_session(str(tmp_path)).probes == {"probe01": f"{tmp_path}/probe05/probe01/a.ap.cbin"}


def test_two_recordings_in_one_probe_folder(tmp_path):
    touch(tmp_path, "probe01/a.ap.cbin", "probe01/b.ap.cbin")
    assert open_session(str(tmp_path)).probes == {
        "probe00": f"{tmp_path}/probe01/b.ap.cbin", "probe01": f"{tmp_path}/probe01/a.ap.cbin"}


def test_openephys_recording_is_found_as_its_folder(tmp_path):
    touch(tmp_path, "Record Node 101/experiment1/recording1/structure.oebin",
          "Record Node 101/experiment1/recording1/continuous/Acq-100.x/continuous.dat",
          "Record Node 101/experiment1/recording2/structure.oebin")
    assert open_session(str(tmp_path)).probes == {
        "probe00": f"{tmp_path}/Record Node 101/experiment1/recording1",
        "probe01": f"{tmp_path}/Record Node 101/experiment1/recording2",
    }


def test_real_openephys_folder(shared_data):
    folder = shared_data / OPENEPHYS
    s = open_session(str(folder))
    assert s.name == OPENEPHYS and s.metadata == {}
    assert s.probes == {"probe00": f"{folder}/{OE_RECORDING}"}


# -- single files and errors --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rec.ap.cbin", "rec.ap.bin", "structure.oebin"])
def test_single_file_is_one_probe(tmp_path, name):
    touch(tmp_path, f"mouse_2024-01-01_001/{name}")
    path = tmp_path / "mouse_2024-01-01_001" / name
    s = open_session(str(path))
    assert s.probes == {"probe00": str(path)}
    assert s.name == "mouse_2024-01-01_001" and s.url == str(path)


def test_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_session"
    with pytest.raises(SourceNotFoundError) as err:
        open_session(str(missing))
    assert str(missing) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_empty_folder(tmp_path):
    with pytest.raises(UnknownFormatError) as err:
        open_session(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "no recording found" in str(err.value)


def test_folder_without_recordings(tmp_path):
    touch(tmp_path, "notes.txt", "raw/x.lf.bin", "raw/x.ap.meta")
    with pytest.raises(UnknownFormatError, match=r"\*\.ap\.cbin"):
        open_session(str(tmp_path))
