"""mtscomp reader: sample-exact parity with the mtscomp package, S3, errors, the real header."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import mtscomp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropool.errors import (
    ChecksumError,
    MetadataError,
    RawDataError,
    SourceNotFoundError,
    TruncatedFileError,
)
from neuropool.io.readers.mtscomp import MtscompReader, read_header
from neuropool.io.readers.spikeglx import channel_layout, make_np1_meta, write_meta

N_SAMPLES, N_CHANNELS, RATE = 12_000, 385, 30_000.0
CHUNK = 0.09  # s: chunks of 2700 samples, the last one short (1200)


def make_data(n_samples: int, n_channels: int, seed: int = 0) -> np.ndarray:
    """Low-amplitude noise, a few spikes, a sync square wave and int16 extremes."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 4, (n_samples, n_channels)).astype(np.int16)
    wave = (np.sin(np.linspace(0, np.pi, 24)) * -90).astype(np.int16)
    for t in rng.integers(0, n_samples - 24, 40):
        c = int(rng.integers(0, n_channels - 8))
        data[t : t + 24, c : c + 8] += wave[:, None]
    data[:, -1] = (np.arange(n_samples) // 700 % 2) * 64
    data[5, :3] = [32767, -32768, 32767]  # differences that wrap around in int16
    data[6, :3] = [-32768, 32767, -32768]
    return data


def compress(folder: Path, data: np.ndarray, name: str = "rec.ap", **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{name}.bin"
    data.tofile(raw)
    mtscomp.compress(
        raw, folder / f"{name}.cbin", folder / f"{name}.ch", sample_rate=RATE,
        n_channels=data.shape[1], dtype=data.dtype, chunk_duration=kwargs.pop("chunk_duration", CHUNK),
        n_threads=1, check_after_compress=False, quiet=True, **kwargs,
    )
    raw.unlink()
    return folder / f"{name}.cbin"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    data = make_data(N_SAMPLES, N_CHANNELS)
    return compress(tmp_path_factory.mktemp("mtscomp"), data), data


@pytest.fixture(scope="module")
def reader(recording):
    return MtscompReader(str(recording[0]))


def test_layout_has_several_chunks_and_a_short_last_one(recording, reader):
    header = json.loads(recording[0].with_suffix(".ch").read_text())
    assert header["chunk_order"] == "F" and header["do_time_diff"] is True
    assert header["chunk_bounds"] == [0, 2700, 5400, 8100, 10800, 12000]
    assert reader.n_chunks == 5 and reader.info.n_samples == N_SAMPLES


def test_whole_file_matches_mtscomp(recording, reader):
    cbin, data = recording
    theirs = mtscomp.decompress(cbin, cbin.with_suffix(".ch"))
    try:
        expected = theirs[:]
    finally:
        theirs.close()
    ours = reader.read(0, N_SAMPLES)
    assert ours.dtype == np.int16 and ours.shape == (N_SAMPLES, N_CHANNELS)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(ours, data)


@settings(max_examples=60, deadline=None)
@given(start=st.integers(-100, N_SAMPLES + 100), length=st.integers(0, 6000))
def test_random_ranges_match_mtscomp(recording, reader, start, length):
    cbin, data = recording
    stop = start + length
    expected = data[max(start, 0) : max(stop, 0)]
    np.testing.assert_array_equal(reader.read(start, stop), expected)


@pytest.mark.parametrize("bound", [2700, 5400, 8100, 10800, 12000])
def test_ranges_straddling_each_chunk_bound(recording, reader, bound):
    cbin, data = recording
    theirs = mtscomp.Reader(check_after_decompress=False)
    theirs.open(cbin, cbin.with_suffix(".ch"))
    try:
        for a, b in [(bound - 1, bound + 1), (bound - 2700, bound), (bound, bound + 3000), (bound - 1, bound)]:
            np.testing.assert_array_equal(reader.read(a, b), theirs[max(a, 0) : b])
    finally:
        theirs.close()


def test_only_needed_chunks_are_read_and_last_is_cached(recording):
    reader = MtscompReader(str(recording[0]))
    calls = []
    original = reader._data.read
    reader._data.read = lambda offset, length: calls.append(offset) or original(offset, length)
    reader.read(3000, 3100)  # chunk 1 only
    reader.read(3200, 3300)  # chunk 1 again: cached
    assert calls == [reader._offsets[1]]
    reader.read(5300, 5500)  # chunks 1 (cached) and 2
    assert calls == [reader._offsets[1], reader._offsets[2]]


def test_other_options_spatial_diff_and_c_order(tmp_path):
    data = make_data(3000, 64, seed=3)
    cbin = compress(tmp_path, data, do_spatial_diff=True, do_time_diff=False, chunk_order="C", chunk_duration=0.03)
    reader = MtscompReader(str(cbin))
    np.testing.assert_array_equal(reader.read(0, 3000), data)
    np.testing.assert_array_equal(reader.read(850, 1950), data[850:1950])


def test_pickle_and_verify(recording, reader):
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(2600, 2800), recording[1][2600:2800])
    reader.verify(uncompressed=True)
    assert reader.info.channel_ids[0] == "CH0" and np.isnan(reader.info.positions).all()
    assert (reader.info.gains_uv == 1).all() and not reader.info.adc_shifts.any()
    assert MtscompReader(str(recording[0].with_suffix(".ch"))).info.url == str(recording[0])


def test_geometry_from_a_spikeglx_meta_beside_it(recording, tmp_path):
    cbin, data = recording
    for suffix in (".cbin", ".ch"):
        shutil.copy(cbin.with_suffix(suffix), tmp_path / f"rec.ap{suffix}")
    meta = make_np1_meta(N_SAMPLES, 30000.39, file_size_bytes=data.nbytes)
    write_meta(str(tmp_path / "rec.ap.meta"), meta)
    info = MtscompReader(str(tmp_path / "rec.ap.cbin")).info
    layout = channel_layout(meta)
    assert info.sampling_frequency == 30000.39 and info.probe_type == "NP1"
    np.testing.assert_array_equal(info.positions, layout.positions)
    np.testing.assert_array_equal(info.adc_shifts, layout.adc_shifts)
    assert info.gains_uv[0] == 2.34375 and info.channel_ids[-1] == "SY0" and info.is_sync[-1]

    write_meta(str(tmp_path / "rec.ap.meta"), {**meta, "nSavedChans": "384"})
    with pytest.raises(MetadataError) as err:
        MtscompReader(str(tmp_path / "rec.ap.cbin"))
    assert "rec.ap.meta" in str(err.value) and "384" in str(err.value) and "385" in str(err.value)


def test_reads_through_s3(recording, monkeypatch):
    """The same data through a local moto S3 server and s3fs."""
    import s3fs
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}, "key": "x", "secret": "x"}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("bucket")
        cbin, data = recording
        fs.put(str(cbin), "bucket/x.cbin")
        fs.put(str(cbin.with_suffix(".ch")), "bucket/x.ch")
        remote = MtscompReader("s3://bucket/x.cbin", storage_options=options)
        np.testing.assert_array_equal(remote.read(0, N_SAMPLES), data)
        np.testing.assert_array_equal(remote.read(2650, 5450), data[2650:5450])
        clone = pickle.loads(pickle.dumps(remote))
        np.testing.assert_array_equal(clone.read(11_990, 12_010), data[11_990:])
        remote.verify()
        with pytest.raises(SourceNotFoundError, match="s3://bucket/y.cbin"):
            MtscompReader("s3://bucket/y.cbin", storage_options=options)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


# -- errors --------------------------------------------------------------------------------------


@pytest.fixture
def copy(recording, tmp_path):
    for suffix in (".cbin", ".ch"):
        shutil.copy(recording[0].with_suffix(suffix), tmp_path / f"x{suffix}")
    return tmp_path / "x.cbin"


def test_truncated_cbin(copy):
    size = copy.stat().st_size
    with copy.open("r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(TruncatedFileError) as err:
        MtscompReader(str(copy))
    message = str(err.value)
    assert str(copy) in message and str(size) in message and str(size - 1000) in message


def test_cbin_longer_than_header(copy):
    size = copy.stat().st_size
    with copy.open("ab") as f:
        f.write(b"extra")
    with pytest.raises(RawDataError) as err:
        MtscompReader(str(copy))
    assert not isinstance(err.value, TruncatedFileError)
    assert str(copy) in str(err.value) and str(size) in str(err.value) and str(size + 5) in str(err.value)


def test_header_offsets_disagree(copy):
    ch = copy.with_suffix(".ch")
    header = json.loads(ch.read_text())
    header["chunk_offsets"][-1] += 10
    ch.write_text(json.dumps(header))
    with pytest.raises(TruncatedFileError, match="chunks end at byte"):
        MtscompReader(str(copy))
    header["chunk_offsets"][-1] -= 20
    ch.write_text(json.dumps(header))
    with pytest.raises(RawDataError, match=str(copy)):
        MtscompReader(str(copy))
    header["chunk_offsets"][2], header["chunk_offsets"][3] = header["chunk_offsets"][3], header["chunk_offsets"][2]
    ch.write_text(json.dumps(header))
    with pytest.raises(MetadataError) as err:
        MtscompReader(str(copy))
    assert str(ch) in str(err.value) and "monotonic" in str(err.value)


def test_corrupted_chunk(copy, recording):
    reader = MtscompReader(str(copy))
    start = int(reader._offsets[2])
    with copy.open("r+b") as f:
        f.seek(start + 5000)
        block = bytearray(f.read(64))
        f.seek(start + 5000)
        f.write(bytes(b ^ 0xFF for b in block))
    reader = MtscompReader(str(copy))
    np.testing.assert_array_equal(reader.read(0, 5400), recording[1][:5400])  # chunks 0 and 1
    with pytest.raises(RawDataError) as err:
        reader.read(5000, 6000)
    assert str(copy) in str(err.value) and "chunk 2" in str(err.value)
    with pytest.raises(ChecksumError, match="sha1_compressed"):
        reader.verify()


def test_missing_or_malformed_header(copy, tmp_path):
    ch = copy.with_suffix(".ch")
    text = ch.read_text()
    ch.write_text("{not json")
    with pytest.raises(MetadataError, match=str(ch)):
        MtscompReader(str(copy))
    ch.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "chunk_offsets"}))
    with pytest.raises(MetadataError, match="chunk_offsets"):
        MtscompReader(str(copy))
    ch.unlink()
    with pytest.raises(MetadataError) as err:
        MtscompReader(str(copy))
    assert str(ch) in str(err.value) and "no such file" in str(err.value)
    with pytest.raises(SourceNotFoundError, match=str(tmp_path / "none.cbin")):
        MtscompReader(str(tmp_path / "none.cbin"))


def test_real_header_parses_and_missing_cbin_is_named(shared_data):
    ch = shared_data / "spikeglx/np2split/_spikeglx_ephysData_g0_t0.imec0.ap.ch"
    header = read_header(str(ch))
    assert header["n_channels"] == 385 and header["dtype"] == "int16"
    assert list(header["chunk_bounds"]) == [0, 30000] and list(header["chunk_offsets"]) == [0, 12028183]
    assert header["chunk_order"] == "F" and header["do_time_diff"] is True
    cbin = str(ch.with_suffix(".cbin"))
    with pytest.raises(SourceNotFoundError) as err:
        MtscompReader(cbin)
    assert cbin in str(err.value) and "no such file" in str(err.value)
