"""Per-node scheduling overhead: neuropool's graph runner vs bare ``distributed.Client.submit``.

1,000 trivial nodes (10 chained no-op tasks x 100 probes) on the same Dask LocalCluster. Bare Dask
submits the same 1,000 no-op callables with the same dependencies (each waits for its upstream
future). neuropool additionally validates the graph, fingerprints every node, writes a commit
marker per node and keeps ``processing.json`` current: that is the cost of resumable, provenance-
recording runs, reported here per node.

Usage: ``python benchmarks/bench_overhead.py [--probes 100] [--chain 10] [--workers 2]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def noop(*upstream: Any) -> int:
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--chain", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from neuropool.cluster.dask import DaskPool
    from neuropool.graphs.graph import Graph
    from neuropool.graphs.runner import run_graph
    from neuropool.io.store import DerivedAsset
    from neuropool.tasks import register
    from neuropool.tasks.base import Task, TaskContext

    def make(i: int) -> type[Task]:
        class Noop(Task):
            name = f"noop{i}"
            version = "1"
            inputs = ("ephys.source",) if i == 0 else (f"bench.step{i - 1}",)
            outputs = (f"bench.step{i}",)

            def run_block(self, ctx: TaskContext, block: Any) -> Any:
                return {}

        Noop.__qualname__ = Noop.__name__ = f"Noop{i}"
        return Noop

    tasks = [make(i) for i in range(args.chain)]
    for t in tasks:
        globals()[t.__name__] = t  # picklable by reference from this module
        register(t.name, t)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        (tmp / "raw").mkdir()
        (tmp / "raw" / "rec").write_text("x")
        n = args.probes * args.chain
        graph = Graph({f"probe{p:02d}/ephys.source": str(tmp / "raw" / "rec") for p in range(args.probes)})
        for p in range(args.probes):
            for t in tasks:
                graph.add(t.name, f"probe{p:02d}", retries=0)
        with DaskPool(n_workers=args.workers, threads_per_worker=1, gpus=0) as pool:
            pool.client.run(lambda: None)
            t0 = time.perf_counter()
            futs = []
            for _p in range(args.probes):
                prev = None
                for _t in tasks:
                    prev = pool.client.submit(noop, *(() if prev is None else (prev,)), pure=False)
                    futs.append(prev)
            pool.client.gather(futs)
            t_dask = time.perf_counter() - t0

            asset = DerivedAsset.create(str(tmp / "derived"), str(tmp / "raw"))
            t0 = time.perf_counter()
            report = run_graph(graph, asset, pool)
            t_np = time.perf_counter() - t0
            assert report.ok
            t0 = time.perf_counter()
            again = run_graph(graph, asset, pool)
            t_cached = time.perf_counter() - t0
            assert {r.state for r in again.results.values()} == {"cached"}
        print("| nodes | bare Client.submit | neuropool run_graph | neuropool, all cached (resume) |")
        print("|---|---|---|---|")
        print(f"| {n} | {t_dask:.2f} s ({1000 * t_dask / n:.2f} ms/node) | {t_np:.2f} s "
              f"({1000 * t_np / n:.2f} ms/node) | {t_cached:.2f} s ({1000 * t_cached / n:.2f} ms/node) |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
