"""Decompression: neuropool's decompress task vs mtscomp's own decompressor, same .cbin, same run.

What a user would otherwise run is ``mtscomp.decompress`` (IBL's ``mtsdecomp``): one process that
writes a flat ``.bin``. neuropool reads the ``.cbin`` by byte ranges (so it also works on S3) and
writes a chunked zarr store, spread over the pool's workers. Reported: wall time of each, their
ratio, and peak resident memory (mtscomp: its process's maximum RSS; neuropool: the pool's process
tree, sampled every 50 ms, with the idle pool's own footprint beside it), for two recording lengths
to show whether memory grows with the recording. The pool is warmed up first (task code imported
on the workers), as a lab's running pool would be.

Usage: ``python benchmarks/bench_decompress.py [--durations 10 20] [--workers 2]``
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


def bench(duration: float, workers: int, tmp: Path) -> dict[str, float]:
    from neuropool.cluster import connect
    from neuropool.demo import make_demo_session
    from neuropool.graphs import run_graph, standard_graph
    from neuropool.io.session import open_session
    from neuropool.io.store import DerivedAsset

    session = make_demo_session(tmp / f"raw{duration:g}", duration=duration, n_units=10, seed=1)
    cbin = next(session.rglob("*.cbin"))
    # mtscomp in its own process, so its peak memory is its own
    code = ("import mtscomp, sys, time, resource; t = time.perf_counter(); "
            "mtscomp.decompress(sys.argv[1], sys.argv[2], out=sys.argv[3]); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", code, str(cbin), str(cbin.with_suffix(".ch")),
                          str(tmp / "out.bin")], capture_output=True, text=True, check=True)
    t_mtscomp, mtscomp_kb = (float(v) for v in res.stdout.split())
    (tmp / "out.bin").unlink()

    graph = standard_graph(open_session(str(session))).subset(until="decompress")
    with connect(n_workers=workers, threads_per_worker=1) as pool:
        # a lab's pool is already running: import the task code on the workers before timing
        pool.client.run(importlib.import_module, "neuropool.tasks.decompress")
        base = PeakRSS()
        with base:
            time.sleep(0.3)
        asset = DerivedAsset.create(str(tmp / f"derived{duration:g}"), str(session))
        with PeakRSS() as mem_b:
            t0 = time.perf_counter()
            report = run_graph(graph, asset, pool)
            t_neuropool = time.perf_counter() - t0
        assert report.ok, report.failed()
    return {
        "duration_s": duration,
        "mtscomp_s": t_mtscomp,
        "neuropool_s": t_neuropool,
        "speedup": t_mtscomp / t_neuropool,
        "mtscomp_peak_mb": mtscomp_kb / 1024,
        "neuropool_peak_mb": mem_b.peak / 2**20,
        "pool_idle_mb": base.peak / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", type=float, nargs="+", default=[10.0, 20.0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-decompress-"))
    try:
        print("| recording | mtscomp.decompress | neuropool decompress | speed-up | peak RSS mtscomp | peak RSS neuropool (pool idle) |")
        print("|---|---|---|---|---|---|")
        for d in args.durations:
            r = bench(d, args.workers, tmp)
            print(f"| {d:g} s x 385 ch | {r['mtscomp_s']:.1f} s | {r['neuropool_s']:.1f} s ({args.workers} workers) "
                  f"| {r['speedup']:.2f}x | {r['mtscomp_peak_mb']:.0f} MB | {r['neuropool_peak_mb']:.0f} MB "
                  f"({r['pool_idle_mb']:.0f} MB) |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
