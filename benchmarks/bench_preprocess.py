"""Preprocessing: neuropool's preprocess task vs SpikeInterface's own chain and executor.

Same recording, same run, same cores. What a user would otherwise run is SpikeInterface:
``read_spikeglx -> phase_shift -> highpass_filter(300 Hz, order 3) -> common_reference(global,
median)`` saved with ``recording.save(n_jobs=W, chunk_duration="1s")`` (its chunked executor, W
processes). neuropool runs the same steps as chunk tasks on a Dask LocalCluster of W
single-threaded workers, reading the raw zarr store written by ``decompress``. Both write float32.
Reported: wall time, ratio, peak resident memory of the whole process tree (sampled every 50 ms).

With ``--workers 1 2`` neuropool runs once per pool size (scaling efficiency = speed-up over one
worker / number of workers); SpikeInterface runs with the largest ``n_jobs``.

``--profile`` also runs a few interior blocks of the task in this process under cProfile and
prints where the time goes, by stage (reading the raw store, the FFT filters, the median
reference, conversions and transposes, writing the output).

Each configuration runs ``--repeat`` times (default 2), alternating neuropool and SpikeInterface so
that both meet the same machine; the best run of each is compared. neuropool runs the same chain
as SpikeInterface: bad-channel detection is turned off for the comparison.

SpikeInterface runs in a process of its own (its imports are not timed), twice per repeat: as a
user runs it, and with the glibc malloc settings neuropool gives its workers
(:func:`neuropool.cluster.malloc.worker_environ`), to show how much of the difference they make.

Usage: ``python benchmarks/bench_preprocess.py [--duration 20] [--workers 1 2] [--repeat 2] [--profile]
[--raw-codec zstd]``
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_decompress import PeakRSS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--profile", action="store_true", help="print where a block's time goes")
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs of each; best kept")
    ap.add_argument("--raw-codec", default=None, help="codec of the raw store (default: the pipeline's)")
    args = ap.parse_args()
    user_env = dict(os.environ)  # before any Dask nanny exports its workers' settings into it

    from neuropool.cluster import InProcessPool, connect
    from neuropool.cluster.malloc import worker_environ
    from neuropool.demo import make_demo_session
    from neuropool.graphs import run_graph, standard_graph
    from neuropool.graphs.config import PipelineConfig
    from neuropool.io.codecs import warm_up
    from neuropool.io.session import open_session
    from neuropool.io.store import DerivedAsset

    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    try:
        session = make_demo_session(tmp / "raw", duration=args.duration, n_units=10, seed=2, compress=False)
        # the same chain as SpikeInterface's below: no bad-channel detection or interpolation
        sections: dict = {"preprocess": {"bad_channels": {"detect": False}}}
        if args.raw_codec:
            sections["decompress"] = {"compression": args.raw_codec}
        config = PipelineConfig(**sections)
        graph = standard_graph(open_session(str(session)), config)
        assets = {}
        for n in args.workers:
            assets[n] = DerivedAsset.create(str(tmp / f"derived{n}"), str(session))
            assert run_graph(graph.subset(until="decompress"), assets[n], InProcessPool(gpus=0)).ok
        times: dict[int, list[float]] = {n: [] for n in args.workers}
        peaks: dict[int, float] = dict.fromkeys(args.workers, 0.0)
        si_envs = {"as a user runs it": {}, "same malloc settings as neuropool": worker_environ()}
        si_times: dict[str, list[float]] = {name: [] for name in si_envs}
        si_peaks = dict.fromkeys(si_envs, 0.0)
        n_si = max(args.workers)
        for _rep in range(args.repeat):  # alternate, so that both see the same machine
            for n in args.workers:
                assets[n].uncommit("preprocess[probe00]")
                with connect(n_workers=n, threads_per_worker=1) as pool:
                    for module in ("neuropool.graphs.runner", "neuropool.tasks.preprocess"):
                        pool.client.run(importlib.import_module, module)  # a running pool's imports
                    pool.client.run(warm_up)  # and its compiled delta decoder
                    with PeakRSS() as mem:
                        t0 = time.perf_counter()
                        report = run_graph(graph.subset(only=["preprocess"]), assets[n], pool)
                        times[n].append(time.perf_counter() - t0)
                    peaks[n] = max(peaks[n], mem.peak / 2**20)
                    assert report.ok, report.failed()
            for name, env in si_envs.items():
                with PeakRSS() as mem_si:
                    si_times[name].append(run_spikeinterface(session, tmp / "si", n_si, {**user_env, **env}))
                si_peaks[name] = max(si_peaks[name], mem_si.peak / 2**20)
        print(f"Recording: {args.duration:g} s x 384 channels; best of {args.repeat} alternating runs each.")
        print()
        print(f"| SpikeInterface save, n_jobs={n_si} | wall (all runs) | x real time | peak RSS |")
        print("|---|---|---|---|")
        for name, ts in si_times.items():
            print(f"| {name} | {min(ts):.1f} s ({', '.join(f'{t:.1f}' for t in ts)}) | "
                  f"{args.duration / min(ts):.2f}x | {si_peaks[name]:.0f} MB |")
        t_si = min(si_times["as a user runs it"])
        t_si_malloc = min(si_times["same malloc settings as neuropool"])
        print()
        print("| neuropool workers | wall (all runs) | x real time | scaling efficiency | vs SpikeInterface "
              "| vs SpikeInterface, same malloc | peak RSS |")
        print("|---|---|---|---|---|---|---|")
        best = {n: min(ts) for n, ts in times.items()}
        base = best[min(best)] * min(best)
        for n, t in best.items():
            runs = ", ".join(f"{x:.1f}" for x in times[n])
            print(f"| {n} | {t:.1f} s ({runs}) | {args.duration / t:.2f}x | {base / (n * t):.0%} | "
                  f"{t_si / t:.2f}x | {t_si_malloc / t:.2f}x | {peaks[n]:.0f} MB |")
        if args.profile:
            profile_blocks(assets[min(times)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: SpikeInterface's chain, saved by its own executor, in a process of its own: prints the wall
#: time of ``save`` alone (argv: SpikeGLX folder, output folder, n_jobs).
SPIKEINTERFACE = (
    "import sys, time, warnings\n"
    "import spikeinterface.extractors as se, spikeinterface.preprocessing as spre\n"
    "warnings.simplefilter('ignore')\n"
    "rec = se.read_spikeglx(sys.argv[1], stream_id='imec0.ap')\n"
    "rec = spre.phase_shift(rec, dtype='float32')\n"
    "rec = spre.highpass_filter(rec, freq_min=300.0, filter_order=3, dtype='float32')\n"
    "rec = spre.common_reference(rec, reference='global', operator='median')\n"
    "t = time.perf_counter()\n"
    "rec.save(folder=sys.argv[2], n_jobs=int(sys.argv[3]), chunk_duration='1s', progress_bar=False)\n"
    "print(time.perf_counter() - t)\n"
)


def run_spikeinterface(session: Path, folder: Path, n_jobs: int, env: dict[str, str]) -> float:
    """Seconds SpikeInterface takes to save the chain, in a fresh process with environment ``env``."""
    shutil.rmtree(folder, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", SPIKEINTERFACE, str(session / "raw_ephys_data" / "probe00"), str(folder),
         str(n_jobs)], env=env, capture_output=True, text=True, check=True)
    shutil.rmtree(folder, ignore_errors=True)
    return float(done.stdout.strip().splitlines()[-1])


# Stage of each profiled function, by name (names starting with "_" also match as fragments);
# first match wins.
STAGES = [
    ("read raw store (Blosc decode, delta running sum)", ("_decode_chunk", "_process_chunk", "running_sum",
                                                        "cumsum", "_chunk_getitem", "getitems",
                                                        "readinto", "read")),
    ("write output (file)", ("_encode_chunk", "maybe_convert", "setitems", "write", "_chunk_setitem",
                             "open", "__exit__")),
    ("FFT filters (phase shift + high-pass)", ("_fix_shape", "apply_responses", "combine",
                                               "r2c", "c2r")),
    ("median reference (tiled: to time-major, partition, subtract)",
     ("partition", "_median_across_channels", "_subtract_global", "CommonReference", "copy")),
    ("µV conversion", ("_transposed_copy", "channel_major", "sample_major",
                       "_to_microvolts", "astype")),
]


def _function_name(func: str) -> str:
    """``partition`` from "<method 'partition' of ...>", ``r2c`` from "<built-in method a.r2c>"."""
    if func.startswith("<method '"):
        return func.split("'")[1]
    if func.startswith("<built-in method "):
        return func[len("<built-in method "):].rstrip(">").split(".")[-1]
    return func


def profile_blocks(asset, n_blocks: int = 3) -> None:
    """Profile ``n_blocks`` interior blocks of the preprocess task, one thread, this process."""
    from neuropool.tasks.base import TaskContext
    from neuropool.tasks.preprocess import Preprocess

    task = Preprocess({"bad_channels": {"detect": False}})  # the chain compared above
    out = asset.dataset_url("ephys.preprocessed", "probe00") + ".profile"
    ctx = TaskContext(node="profile", probe="probe00",
                      inputs={"ephys.raw": asset.dataset_url("ephys.raw", "probe00")},
                      outputs={"ephys.preprocessed": out})
    blocks = task.setup(ctx)[1:-1][:n_blocks]
    task.run_block(ctx, blocks[0])  # warm caches (kernel spectra, imports)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for block in blocks:
        task.run_block(ctx, block)
    profiler.disable()
    wall = time.perf_counter() - t0
    seconds = sum(b[1] - b[0] for b in blocks) / 30_000.0
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, ...)
    totals = {name: 0.0 for name, _ in STAGES}
    other = 0.0
    for (_, _, func), (_, _, tottime, _, _) in stats.items():
        name = _function_name(func)
        label = next((stage for stage, keys in STAGES if name in keys
                      or any(k.startswith("_") and k in name for k in keys)), None)
        if label is None:
            other += tottime
        else:
            totals[label] += tottime
    print(f"\nWhere a block's time goes ({len(blocks)} interior blocks, {seconds:g} s of data, "
          f"one thread: {wall / seconds:.2f} s per second of data, "
          f"{seconds / wall:.2f}x real time under the profiler)")
    print("\n| stage | share |\n|---|---|")
    total = sum(totals.values()) + other
    for name, value in [*totals.items(), ("other (Python, numpy glue)", other)]:
        print(f"| {name} | {value / total:.0%} |")


if __name__ == "__main__":
    main()
