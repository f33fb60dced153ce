"""Storage codecs of the time x channel stores: lossless round trips, C-ordered reads, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import zarr

from neuropool.errors import ConfigError, MissingDependencyError
from neuropool.io import timeseries
from neuropool.io.codecs import CODECS, encoding
from neuropool.tasks.decompress import Decompress

HAVE_WAVPACK = True
try:
    import wavpack_numcodecs  # noqa: F401
except ImportError:
    HAVE_WAVPACK = False


def _codecs() -> list:
    return [pytest.param(c, marks=pytest.mark.skipif(c == "wavpack" and not HAVE_WAVPACK,
                                                     reason="wavpack-numcodecs not installed"))
            for c in CODECS]


def _coords(n: int) -> dict[str, np.ndarray]:
    return {"x": np.zeros(n), "y": np.arange(n) * 20.0, "shank": np.zeros(n, int),
            "gain_uv": np.ones(n), "adc_shift": np.zeros(n), "is_sync": np.zeros(n, bool)}


def _write(url: str, data: np.ndarray, compression: str, chunk: int = 1000) -> timeseries.TimeseriesStore:
    n_samples, n_channels = data.shape
    timeseries.create(url, n_samples=n_samples, channel_ids=[f"AP{i}" for i in range(n_channels)],
                      dtype=data.dtype, chunk_samples=chunk, coords=_coords(n_channels),
                      attrs={"sampling_frequency": 30000.0}, compression=compression)
    for start, stop in timeseries.block_ranges(n_samples, chunk):
        timeseries.write_block(url, start, data[start:stop])
    timeseries.finalize(url)
    return timeseries.TimeseriesStore(url)


def _wide_band(n_samples: int, n_channels: int, seed: int = 0) -> np.ndarray:
    """Wide-band-like int16: slow waves of ~300 LSB rms (LFP) plus white noise of 5 LSB rms."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples)[:, None] / 30000.0
    freqs = rng.uniform(2, 40, size=8)
    phases = rng.uniform(0, 2 * np.pi, size=(8, n_channels))
    slow = sum(150 * np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases, strict=True))
    data = slow + rng.normal(0, 5, size=(n_samples, n_channels))
    return np.clip(np.round(data), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("name", _codecs())
def test_every_codec_is_lossless_and_reads_time_major(name, tmp_path):
    data = _wide_band(2500, 9, seed=1)  # the last chunk is partial
    data[100:200:2] = 32767
    data[101:201:2] = -32768  # time deltas wrap around int16 both ways
    # (not full-scale noise everywhere: wavpack-numcodecs 0.3 raises on a chunk that does not
    # compress, as its output buffer is the input's size)
    store = _write(f"memory://{tmp_path.name}/{name}", data, name)
    assert store.traces.order == ("F" if name == "zstd-delta" else "C")
    whole = store.read(0, 2500)
    assert whole.flags.c_contiguous and np.array_equal(whole, data)
    part = store.read(900, 2100, np.arange(2, 6))  # contiguous channels: zarr's basic selection
    assert part.flags.c_contiguous and np.array_equal(part, data[900:2100, 2:6])
    picked = store.read(1999, 2500, np.array([7, 0]))  # orthogonal selection
    assert picked.flags.c_contiguous and np.array_equal(picked, data[1999:2500, [7, 0]])
    assert np.array_equal(timeseries.open_dataset(store.url).traces.values, data)
    # a plain zarr reader decodes it with standard numcodecs, without neuropool
    plain = zarr.open_array(store=zarr.storage.FSStore(store.url), path="traces", mode="r")
    assert np.array_equal(plain[:], data)


def test_time_delta_shrinks_wide_band_data():
    """On slow-wave-dominated data the delta along time pays: measured ratios on this signal
    zstd 1.43, lz4 1.76, zstd-delta 2.84, wavpack 3.08 (the delta must run along time: across
    channels it would not help, the waves' phases differ between channels)."""
    data = _wide_band(30000, 64)

    def ratio(name: str) -> float:
        arr = zarr.zeros(data.shape, chunks=(30000, 64), dtype="int16", store=zarr.MemoryStore(),
                         **encoding(name).zarr_kwargs())
        arr[:] = data
        return data.nbytes / sum(len(v) for k, v in arr.store.items() if not k.startswith("."))

    zstd, delta = ratio("zstd"), ratio("zstd-delta")
    assert delta > 1.6 * zstd, (zstd, delta)


def test_unknown_codec_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown compression 'gzip'.*zstd-delta.*wavpack"):
        encoding("gzip")
    with pytest.raises(ConfigError, match="unknown compression 'brotli'"):
        timeseries.create("memory://never", n_samples=10, channel_ids=["a"], dtype="int16",
                          chunk_samples=10, coords=_coords(1), attrs={}, compression="brotli")
    with pytest.raises(ConfigError, match="integer samples.*float32.*zstd, lz4, none"):
        encoding("zstd-delta", "float32")
    with pytest.raises(ConfigError, match="decompress.compression.*gzip"):
        Decompress({"compression": "gzip"})
    assert Decompress({}).params.compression == "zstd-delta"


def test_wavpack_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wavpack_numcodecs", None)  # import now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'neuropool\[wavpack\]'.*libwavpack-dev"):
        encoding("wavpack")
    assert encoding("zstd").compressor is not None  # the others need nothing more


def _decompress(cbin, out: str) -> list:
    from neuropool.tasks.base import TaskContext

    task = Decompress({"compression": "zstd-delta", "verify_checksum": False})
    ctx = TaskContext(node="decompress[p]", probe="p", inputs={"ephys.source": str(cbin)},
                      outputs={"ephys.raw": out})
    results = [task.run_block(ctx, block) for block in task.setup(ctx)]
    task.finish(ctx, results)
    return results


def test_mtscomp_chunks_go_into_zstd_delta_without_a_round_trip(tmp_path, monkeypatch):
    """decompress hands mtscomp's time differences straight to the zstd-delta store (no cumulative
    sum, no re-differencing): the stored chunks are byte for byte those of the sample path."""
    import mtscomp

    from neuropool.io.readers.mtscomp import MtscompReader

    data = _wide_band(3500, 6, seed=2)  # 3 whole 1-s chunks and a partial one, at 1 kHz
    data[10:20:2], data[11:21:2] = 32767, -32768
    data[:, 3] = np.arange(3500) * 37  # wraps around int16 several times
    raw = tmp_path / "rec.bin"
    data.tofile(raw)
    cbin = tmp_path / "rec.cbin"
    mtscomp.compress(str(raw), str(cbin), str(tmp_path / "rec.ch"), sample_rate=1000.0, n_channels=6,
                     dtype=np.int16, n_threads=1, check_after_compress=False, quiet=True)
    reader = MtscompReader(str(cbin))
    assert reader.time_diffs(0, 1000).shape == (6, 1000)
    assert reader.time_diffs(0, 999) is None and reader.time_diffs(500, 1500) is None

    fast = str(tmp_path / "fast.zarr")
    taken, write = [], timeseries.write_time_diffs
    monkeypatch.setattr(timeseries, "write_time_diffs", lambda *a: taken.append(write(*a)) or taken[-1])
    _decompress(cbin, fast)
    assert taken == [True, True, True, False]  # the partial last chunk: the sample path
    monkeypatch.setattr(MtscompReader, "time_diffs", lambda self, a, b: None)
    slow = str(tmp_path / "slow.zarr")
    _decompress(cbin, slow)
    for url in (fast, slow):
        assert np.array_equal(timeseries.TimeseriesStore(url).read(0, 3500), data)
    for key in ("0.0", "1.0", "2.0", "3.0"):
        assert (tmp_path / "fast.zarr" / "traces" / key).read_bytes() == \
            (tmp_path / "slow.zarr" / "traces" / key).read_bytes()
    # a store that does not take differences refuses them and writes nothing
    zstd = f"memory://{tmp_path.name}/zstd"
    timeseries.create(zstd, n_samples=3500, channel_ids=[str(i) for i in range(6)], dtype="int16",
                      chunk_samples=1000, coords=_coords(6), attrs={}, compression="zstd")
    assert not timeseries.write_time_diffs(zstd, 0, np.zeros((6, 1000), np.int16))


# -- the compiled decoder of numcodecs' delta filter ------------------------------------------------


@pytest.mark.parametrize("dtype", ["<i1", "<i2", "<u2", "<i4", "<i8"])
def test_delta_decoder_equals_numcodecs(dtype):
    import numcodecs

    from neuropool.io.codecs import Delta

    assert type(numcodecs.get_codec({"id": "delta", "dtype": dtype})) is Delta  # registered
    info = np.iinfo(dtype)
    x = np.random.default_rng(0).integers(info.min, info.max, size=50_001, endpoint=True).astype(dtype)
    encoded = numcodecs.Delta(dtype=dtype).encode(x)  # wraps around the dtype's range
    ours = Delta(dtype=dtype)
    np.testing.assert_array_equal(ours.decode(encoded), x)
    out = np.empty_like(x)
    assert ours.decode(encoded, out=out) is out
    np.testing.assert_array_equal(out, x)
    strided = np.empty((x.size, 2), dtype=dtype)[:, 0]  # not contiguous: numcodecs' copy path
    ours.decode(encoded, out=strided)
    np.testing.assert_array_equal(strided, x)
    assert ours.get_config() == numcodecs.Delta(dtype=dtype).get_config()


def test_delta_decoder_leaves_other_dtypes_to_numcodecs():
    import numcodecs

    from neuropool.io.codecs import Delta

    x = np.linspace(-3, 3, 1001)
    encoded = numcodecs.Delta(dtype="<f8", astype="<f4").encode(x)
    np.testing.assert_allclose(Delta(dtype="<f8", astype="<f4").decode(encoded), x, atol=1e-5)
