"""Decompression: neuropool's decompress task vs mtscomp's own decompressor, same .cbin, same
number of threads, same run.

What a user would otherwise run is ``mtscomp.decompress`` (IBL's ``mtsdecomp``): one process
whose thread pool (``n_threads``) decompresses one chunk per thread and writes a flat ``.bin``.
By default it then checks its output (``check_after_decompress``: the whole file is decompressed
again and compared), so mtscomp is timed both ways. neuropool reads the ``.cbin`` by byte ranges
(so it also works on S3), verifies its SHA-1 and writes a chunked zarr store, one 1-s chunk per
work block, on a warmed-up Dask LocalCluster of N single-threaded workers. For each N in
``--threads`` both run on the same file, one after the other.

Reported: wall time and CPU time (every thread and process) of each, neuropool's speed relative
to mtscomp at the same N, and peak resident memory (mtscomp: its process's maximum RSS; neuropool:
the pool's process tree, sampled every 50 ms, with the idle pool's own footprint beside it), for
two recording lengths to show whether memory grows with the recording. Each configuration runs
``--repeat`` times, interleaved with the others, and the fastest run is kept (the machine may be
shared). The pool is warmed up first (task code imported on the
workers: the runner, every task and the mtscomp reader), as a lab's running pool would be.

Usage: ``python benchmarks/bench_decompress.py [--durations 10 30] [--threads 1 2] [--repeat 2]
[--compression zstd-delta]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakRSS:
    """Sample the resident memory of this process and all its children until stopped."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


#: mtscomp in its own process, so that its peak memory is its own; CPU time of all its threads.
MTSCOMP = (
    "import mtscomp, sys, time, resource\n"
    "def cpu():\n"
    "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    return r.ru_utime + r.ru_stime\n"
    "c, t = cpu(), time.perf_counter()\n"
    "mtscomp.decompress(sys.argv[1], sys.argv[2], out=sys.argv[3], n_threads=int(sys.argv[4]), "
    "check_after_decompress=sys.argv[5] == '1', quiet=True)\n"
    "print(time.perf_counter() - t, cpu() - c, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def run_mtscomp(cbin: Path, out: Path, threads: int, check: bool) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MB) of ``mtscomp.decompress`` with ``threads`` threads."""
    res = subprocess.run([sys.executable, "-c", MTSCOMP, str(cbin), str(cbin.with_suffix(".ch")),
                          str(out), str(threads), "1" if check else "0"],
                         capture_output=True, text=True, check=True)
    seconds, cpu, kb = (float(v) for v in res.stdout.split())
    out.unlink()
    return {"s": seconds, "cpu": cpu, "peak_mb": kb / 1024}


#: What a block of decompress imports on a fresh worker: the runner's block function (and with
#: it every task) and the mtscomp reader.
WARM_UP = ("neuropool.graphs.runner", "neuropool.tasks.decompress", "neuropool.io.readers.mtscomp")


def tree_cpu() -> float:
    """CPU seconds used so far by this process and all its children (the pool's processes)."""
    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def run_neuropool(session: Path, tmp: Path, workers: int, compression: str | None) -> dict[str, float]:
    """Wall and CPU seconds, peak RSS of the pool's tree and the idle pool's RSS (MB), on a fresh
    LocalCluster of ``workers`` single-threaded workers."""
    from neuropool.cluster import connect
    from neuropool.graphs import run_graph, standard_graph
    from neuropool.graphs.config import load_config
    from neuropool.io.session import open_session
    from neuropool.io.store import DerivedAsset

    config = load_config({"decompress": {"compression": compression}} if compression else None)
    graph = standard_graph(open_session(str(session)), config).subset(until="decompress")
    with connect(n_workers=workers, threads_per_worker=1) as pool:
        # a lab's pool is already running: import the code a block needs on the workers before
        # timing (the runner's block function imports every task, SpikeInterface included: ~2 s)
        for module in WARM_UP:
            pool.client.run(importlib.import_module, module)
        with PeakRSS() as idle:
            time.sleep(0.3)
        asset = DerivedAsset.create(str(tmp / f"derived-{session.name}-{workers}"), str(session))
        with PeakRSS() as mem:
            cpu, t0 = tree_cpu(), time.perf_counter()
            report = run_graph(graph, asset, pool)
            seconds, cpu = time.perf_counter() - t0, tree_cpu() - cpu
        assert report.ok, report.failed()
    shutil.rmtree(asset.url, ignore_errors=True)
    return {"s": seconds, "cpu": cpu, "peak_mb": mem.peak / 2**20, "idle_mb": idle.peak / 2**20}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest run's numbers, with the largest peak memory of all runs."""
    return {**min(runs, key=lambda r: r["s"]), "peak_mb": max(r["peak_mb"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="mtscomp threads = neuropool workers, one comparison per value")
    ap.add_argument("--compression", default=None, help="raw store codec (default: the task's)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each, interleaved (the machine may be shared); the fastest is kept")
    args = ap.parse_args()

    from neuropool.demo import make_demo_session
    from neuropool.tasks.decompress import DecompressParams

    codec = args.compression or DecompressParams().compression
    tmp = Path(tempfile.mkdtemp(prefix="bench-decompress-"))
    try:
        print(f"neuropool store codec: {codec}; neuropool verifies the .cbin's SHA-1, mtscomp "
              "checks its output only in the 'default' column")
        print("| recording | threads | mtscomp: no check / default check (CPU s) | neuropool (CPU s) "
              "| neuropool speed vs mtscomp: no check / default | peak RSS mtscomp | peak RSS neuropool (pool idle) |")
        print("|---|---|---|---|---|---|---|")
        for d in args.durations:
            session = make_demo_session(tmp / f"raw{d:g}", duration=d, n_units=10, seed=1)
            cbin = next(session.rglob("*.cbin"))
            for n in args.threads:
                runs: dict[str, list[dict[str, float]]] = {"plain": [], "check": [], "neuropool": []}
                for _ in range(args.repeat):
                    runs["plain"].append(run_mtscomp(cbin, tmp / "out.bin", n, check=False))
                    runs["check"].append(run_mtscomp(cbin, tmp / "out.bin", n, check=True))
                    runs["neuropool"].append(run_neuropool(session, tmp, n, args.compression))
                plain, check, r = (best(runs[k]) for k in ("plain", "check", "neuropool"))
                print(f"| {d:g} s x 385 ch | {n} | {plain['s']:.1f} s ({plain['cpu']:.1f}) / "
                      f"{check['s']:.1f} s ({check['cpu']:.1f}) | {r['s']:.1f} s ({r['cpu']:.1f}) "
                      f"| {plain['s'] / r['s']:.2f}x / {check['s'] / r['s']:.2f}x "
                      f"| {max(plain['peak_mb'], check['peak_mb']):.0f} MB "
                      f"| {r['peak_mb']:.0f} MB ({r['idle_mb']:.0f} MB) |", flush=True)
            shutil.rmtree(session, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
