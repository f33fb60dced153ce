"""Memory vs recording length: peak RSS of each worker while preprocessing 1 and 10 minutes.

A block-wise task must need the same memory whatever the length of the recording. This writes a
raw int16 store of 384 channels + sync at 30 kHz directly (no decompress): a few seconds of a
realistic recording (``neuropool.demo``: noise and spikes on the NP1 geometry) are generated once
and tiled, each 1-s chunk rolled in time by a different amount, and written compressed chunk by
chunk with the raw store's default codec (10 minutes are 13.9 GB of int16 uncompressed). Then the
``preprocess`` task (default chain and parameters) runs on a Dask LocalCluster of single-threaded
workers while a thread samples the resident memory of every worker process (and of this process,
where ``setup`` runs: the bad-channel detection) every 50 ms.

Disk: the raw store (~4 GB for 10 min) and the float32 output (~25 GB for 10 min: cleaned noise
barely compresses) are written under ``--tmp`` and removed after each length; the script checks
the free space first.

Usage: ``python benchmarks/bench_memory.py [--minutes 1 10] [--workers 2] [--tmp DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

FS = 30000
BASE_SECONDS = 4


class WorkerRSS:
    """Sample the resident memory of the given processes every 50 ms; keep each one's peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> WorkerRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def base_recording(tmp: Path) -> tuple[np.ndarray, object]:
    """``BASE_SECONDS`` of a generated NP1 recording as ``(seconds, FS, 385)`` int16, and its info."""
    from neuropool.demo import make_demo_session
    from neuropool.io.readers import open_raw

    session = make_demo_session(tmp / "base", duration=BASE_SECONDS, n_units=20, seed=3, compress=False)
    reader = open_raw(str(next(session.rglob("*.ap.bin"))))
    data = reader.read(0, BASE_SECONDS * FS).reshape(BASE_SECONDS, FS, -1)
    info = reader.info
    shutil.rmtree(session, ignore_errors=True)
    return data, info


def write_raw_store(url: str, seconds: int, base: np.ndarray, info: object, compression: str) -> float:
    """Write ``seconds`` of tiled, rolled base data as a raw store like decompress makes; seconds taken."""
    from neuropool.io import timeseries

    t0 = time.perf_counter()
    timeseries.create(
        url, n_samples=seconds * FS, channel_ids=list(info.channel_ids), dtype="int16", chunk_samples=FS,
        coords={"x": info.positions[:, 0], "y": info.positions[:, 1], "shank": info.shank_ids,
                "gain_uv": info.gains_uv, "adc_shift": info.adc_shifts, "is_sync": info.is_sync},
        attrs={"sampling_frequency": float(FS), "units": "adc", "format": "spikeglx",
               "source": "synthetic", "probe_type": info.probe_type, "metadata": {}},
        compression=compression,
    )
    for i in range(seconds):
        block = np.roll(base[i % len(base)], (i * 7919) % FS, axis=0)
        timeseries.write_block(url, i * FS, block)
    timeseries.finalize(url)
    return time.perf_counter() - t0


def run_preprocess(raw_url: str, out_root: Path, workers: int) -> dict[str, object]:
    """Run the preprocess task (default parameters) on a fresh LocalCluster; sample memory."""
    from neuropool.cluster import connect
    from neuropool.graphs import run_graph
    from neuropool.graphs.config import load_config
    from neuropool.graphs.graph import Graph, dataset_key
    from neuropool.io.store import DerivedAsset

    graph = Graph({dataset_key("ephys.raw", "probe00"): raw_url})
    graph.add("preprocess", "probe00", load_config(None).task_params("preprocess"), retries=0)
    with connect(n_workers=workers, threads_per_worker=1) as pool:
        pool.client.run(importlib.import_module, "neuropool.tasks.preprocess")
        pids = {f"worker {i}": pid for i, pid in enumerate(pool.client.run(os.getpid).values())}
        pids["client (setup)"] = os.getpid()
        with WorkerRSS(pids) as idle:
            time.sleep(0.5)
        asset = DerivedAsset.create(str(out_root), raw_url)
        with WorkerRSS(pids) as mem:
            t0 = time.perf_counter()
            report = run_graph(graph, asset, pool)
            wall = time.perf_counter() - t0
        assert report.ok, report.failed()
    return {"wall": wall, "peak": mem.peak, "idle": idle.peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tmp", default=None, help="folder for the temporary stores (default: system temp)")
    args = ap.parse_args()

    from neuropool.tasks.decompress import DecompressParams

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.tmp))
    # raw ~1/3 of 23.1 MB/s, output ~46 MB/s (float32 noise barely compresses), with a margin
    need = max(args.minutes) * 60 * (8 + 46) * 1e6 * 1.2
    free = shutil.disk_usage(tmp).free
    print(f"free disk under {tmp}: {free / 1e9:.1f} GB, needed about {need / 1e9:.1f} GB")
    if free < need:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"not enough free disk under {tmp}: pass --tmp on a larger disk or fewer --minutes")
    codec = DecompressParams().compression
    rows = []
    try:
        base, info = base_recording(tmp)
        for minutes in args.minutes:
            seconds = int(round(minutes * 60))
            raw_dir = tmp / f"synthetic-{seconds}s"
            t_write = write_raw_store(str(raw_dir / "raw.zarr"), seconds, base, info, codec)
            r = run_preprocess(str(raw_dir / "raw.zarr"), tmp / f"derived-{seconds}s", args.workers)
            rows.append((minutes, t_write, r))
            mb = {k: v / 2**20 for k, v in r["peak"].items()}
            print(f"{minutes:g} min: raw store written in {t_write:.0f} s; preprocess {r['wall']:.0f} s; "
                  + ", ".join(f"{k} {v:.0f} MB (idle {r['idle'][k] / 2**20:.0f})" for k, v in mb.items()),
                  flush=True)
            shutil.rmtree(raw_dir, ignore_errors=True)
            shutil.rmtree(tmp / f"derived-{seconds}s", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = list(rows[0][2]["peak"])
    print()
    print("| recording | preprocess wall | " + " | ".join(f"peak RSS {n} (idle)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for minutes, _, r in rows:
        print(f"| {minutes:g} min x 385 ch | {r['wall']:.0f} s | "
              + " | ".join(f"{r['peak'][n] / 2**20:.0f} MB ({r['idle'][n] / 2**20:.0f} MB)" for n in names) + " |")


if __name__ == "__main__":
    main()
