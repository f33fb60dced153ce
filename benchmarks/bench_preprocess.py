"""Preprocessing: neuropool's preprocess task vs SpikeInterface's own chain and executor.

Same recording, same run, same cores. What a user would otherwise run is SpikeInterface:
``read_spikeglx -> phase_shift -> highpass_filter(300 Hz, order 3) -> common_reference(global,
median)`` saved with ``recording.save(n_jobs=W, chunk_duration="1s")`` (its chunked executor, W
processes). neuropool runs the same steps as chunk tasks on a Dask LocalCluster of W
single-threaded workers, reading the raw zarr store written by ``decompress``. Both write float32.
Reported: wall time, ratio, peak resident memory of the whole process tree (sampled every 50 ms).

With ``--workers 1 2`` neuropool runs once per pool size (scaling efficiency = speed-up over one
worker / number of workers); SpikeInterface runs with the largest ``n_jobs``.

Usage: ``python benchmarks/bench_preprocess.py [--duration 20] [--workers 1 2]``
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
import time
from pathlib import Path

from bench_decompress import PeakRSS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import spikeinterface.extractors as se
    import spikeinterface.preprocessing as spre

    from neuropool.cluster import connect
    from neuropool.demo import make_demo_session
    from neuropool.graphs import run_graph, standard_graph
    from neuropool.io.session import open_session
    from neuropool.io.store import DerivedAsset

    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    try:
        session = make_demo_session(tmp / "raw", duration=args.duration, n_units=10, seed=2, compress=False)
        graph = standard_graph(open_session(str(session)))
        times: dict[int, float] = {}
        peaks: dict[int, float] = {}
        for n in args.workers:
            asset = DerivedAsset.create(str(tmp / f"derived{n}"), str(session))
            with connect(n_workers=n, threads_per_worker=1) as pool:
                pool.client.run(importlib.import_module, "neuropool.tasks.preprocess")
                assert run_graph(graph.subset(until="decompress"), asset, pool).ok
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    report = run_graph(graph.subset(only=["preprocess"]), asset, pool)
                    times[n] = time.perf_counter() - t0
                peaks[n] = mem.peak / 2**20
                assert report.ok, report.failed()

        n_si = max(args.workers)
        rec = se.read_spikeglx(str(session / "raw_ephys_data" / "probe00"), stream_id="imec0.ap")
        rec = spre.phase_shift(rec, dtype="float32")
        rec = spre.highpass_filter(rec, freq_min=300.0, filter_order=3, dtype="float32")
        rec = spre.common_reference(rec, reference="global", operator="median")
        with PeakRSS() as mem_si:
            t0 = time.perf_counter()
            rec.save(folder=tmp / "si", n_jobs=n_si, chunk_duration="1s", progress_bar=False)
            t_si = time.perf_counter() - t0
        print(f"Recording: {args.duration:g} s x 384 channels; SpikeInterface save with n_jobs={n_si}: "
              f"{t_si:.1f} s ({args.duration / t_si:.2f}x real time), peak RSS {mem_si.peak / 2**20:.0f} MB")
        print()
        print("| neuropool workers | wall | x real time | scaling efficiency | vs SpikeInterface | peak RSS |")
        print("|---|---|---|---|---|---|")
        base = times[min(times)] * min(times)
        for n, t in times.items():
            print(f"| {n} | {t:.1f} s | {args.duration / t:.2f}x | {base / (n * t):.0%} | "
                  f"{t_si / t:.2f}x | {peaks[n]:.0f} MB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
