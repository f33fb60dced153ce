"""Storage codecs of the raw int16 store vs mtscomp: compression ratio, write and read speed.

For each codec of ``neuropool.io.codecs`` the recording is written through the project's own
store code (``timeseries.create`` + ``write_block``, one 1-s chunk per block, to an in-memory
fsspec filesystem so that disks do not enter) and read back through ``TimeseriesStore.read``
(time-major arrays, as the tasks get them). mtscomp compresses the same samples from a flat file
(``mtscomp.compress``, zlib of time differences, 1-s chunks) and decompresses them chunk by chunk
in memory (``Reader.read_chunk``). Everything runs on one thread (Blosc's own threads off,
``n_threads=1`` for mtscomp): a worker of the pool is single-threaded. Speeds are MB of raw
int16 per second, best of ``--repeat`` runs (the machine may be shared).

Data: (a) a generated Neuropixels 1.0 recording (``neuropool.demo``: 384 channels + sync, 30 kHz;
white noise of ~2.6 LSB rms plus spikes), (b) the real Open Ephys recording in
``../shared/data/openephys-cortex-16ch`` (16 channels, 40 kHz, wide band), skipped with a message
where that folder is absent. The real NP2 mtscomp header in ``../shared/data/spikeglx/np2split``
gives mtscomp's ratio on one second of real NP2 data (no samples ship with it).

Usage: ``python benchmarks/bench_codecs.py [--duration 10] [--repeat 3] [--codecs zstd zstd-delta]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPENEPHYS = SHARED / "openephys-cortex-16ch"
NP2_CH = SHARED / "spikeglx" / "np2split" / "_spikeglx_ephysData_g0_t0.imec0.ap.ch"


def bench_codec(name: str, data: np.ndarray, fs: float, repeat: int) -> dict[str, float]:
    """Ratio, write and read MB/s of one codec through the project's store code."""
    import fsspec

    from neuropool.io import timeseries

    n_samples, n_channels = data.shape
    chunk = int(round(fs))
    url = f"memory://bench-codecs/{name}"
    mem = fsspec.filesystem("memory")
    ranges = timeseries.block_ranges(n_samples, chunk)
    t_write = t_read = float("inf")
    for _ in range(repeat):
        if mem.exists(url):
            mem.rm(url, recursive=True)
        timeseries.create(url, n_samples=n_samples, channel_ids=[f"CH{i}" for i in range(n_channels)],
                          dtype=data.dtype, chunk_samples=chunk, attrs={"sampling_frequency": fs},
                          coords={"x": np.zeros(n_channels), "y": np.zeros(n_channels),
                                  "shank": np.zeros(n_channels, int), "gain_uv": np.ones(n_channels),
                                  "adc_shift": np.zeros(n_channels), "is_sync": np.zeros(n_channels, bool)},
                          compression=name)
        t0 = time.perf_counter()
        for start, stop in ranges:
            timeseries.write_block(url, start, data[start:stop])
        t_write = min(t_write, time.perf_counter() - t0)
        store = timeseries.TimeseriesStore(url)
        t0 = time.perf_counter()
        for start, stop in ranges:
            block = store.read(start, stop)
        t_read = min(t_read, time.perf_counter() - t0)
        assert np.array_equal(block, data[ranges[-1][0]:]), f"{name} is not lossless"
    stored = sum(mem.size(p) for p in mem.find(url + "/traces") if not p.rsplit("/", 1)[-1].startswith("."))
    mem.rm(url, recursive=True)
    mb = data.nbytes / 1e6
    return {"ratio": data.nbytes / stored, "write": mb / t_write, "read": mb / t_read}


def bench_mtscomp(bin_path: Path, data: np.ndarray, fs: float, repeat: int, tmp: Path) -> dict[str, float]:
    """mtscomp's ratio, compression and in-memory decompression speed (one thread)."""
    import mtscomp

    cbin, ch = tmp / "bench.cbin", tmp / "bench.ch"
    t_write = t_read = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        mtscomp.compress(str(bin_path), str(cbin), str(ch), sample_rate=fs, n_channels=data.shape[1],
                         dtype=data.dtype, n_threads=1, check_after_compress=False, quiet=True)
        t_write = min(t_write, time.perf_counter() - t0)
        reader = mtscomp.Reader(n_threads=1, quiet=True)
        reader.open(str(cbin), str(ch))
        t0 = time.perf_counter()
        for index, start, length in reader.iter_chunks():
            block = reader.read_chunk(index, start, length)
        t_read = min(t_read, time.perf_counter() - t0)
        reader.close()
        assert np.array_equal(block, data[reader.chunk_bounds[-2]:]), "mtscomp is not lossless"
    mb = data.nbytes / 1e6
    return {"ratio": data.nbytes / cbin.stat().st_size, "write": mb / t_write, "read": mb / t_read}


def bench_dataset(label: str, bin_path: Path, data: np.ndarray, fs: float, codecs: list[str],
                  repeat: int, tmp: Path) -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    for name in codecs:
        try:
            r = bench_codec(name, data, fs, repeat)
        except ImportError as e:  # wavpack without its package
            print(f"{label}: {name} skipped: {e}", flush=True)
            continue
        rows.append((label, name, r))
        print(f"| {label} | {name} | {r['ratio']:.2f} | {r['write']:.0f} | {r['read']:.0f} |", flush=True)
    r = bench_mtscomp(bin_path, data, fs, repeat, tmp)
    rows.append((label, "mtscomp (zlib, time diff)", r))
    print(f"| {label} | mtscomp (zlib, time diff) | {r['ratio']:.2f} | {r['write']:.0f} | {r['read']:.0f} |",
          flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of generated NP1 data")
    ap.add_argument("--repeat", type=int, default=3, help="runs per codec; the best is kept")
    ap.add_argument("--codecs", nargs="+", default=None, help="default: every codec but none")
    args = ap.parse_args()

    import numcodecs

    from neuropool.demo import make_demo_session
    from neuropool.io.codecs import CODECS
    from neuropool.io.readers import open_raw

    numcodecs.blosc.use_threads = False  # one thread, as on a single-threaded worker
    codecs = args.codecs or [c for c in CODECS if c != "none"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-codecs-"))
    try:
        print("| data | codec | ratio | write MB/s | read MB/s |")
        print("|---|---|---|---|---|")
        session = make_demo_session(tmp / "raw", duration=args.duration, n_units=10, seed=1, compress=False)
        bin_path = next(session.rglob("*.ap.bin"))
        data = np.fromfile(bin_path, dtype=np.int16).reshape(-1, 385)
        bench_dataset(f"generated NP1, {args.duration:g} s x 385 ch", bin_path, data, 30000.0, codecs,
                      args.repeat, tmp)
        bin_path.unlink()
        if OPENEPHYS.is_dir():
            reader = open_raw(str(OPENEPHYS))
            info = reader.info
            data = reader.read(0, info.n_samples)
            flat = tmp / "openephys.dat"
            data.tofile(flat)
            bench_dataset(f"real Open Ephys, {info.duration:.2f} s x {info.n_channels} ch", flat, data,
                          info.sampling_frequency, codecs, args.repeat, tmp)
        else:
            print(f"real data skipped: {OPENEPHYS} is absent (the shared data folder sits beside the "
                  "repository as ../shared/data)")
        if NP2_CH.is_file():
            header = json.loads(NP2_CH.read_text())
            raw = int(np.prod(header["shape"])) * np.dtype(header["dtype"]).itemsize
            print(f"\nreal NP2 (mtscomp header {NP2_CH.name}): {raw} raw bytes -> "
                  f"{header['chunk_offsets'][-1]} compressed, mtscomp ratio {raw / header['chunk_offsets'][-1]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
