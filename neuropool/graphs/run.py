"""A graph running in the background: what ``pool.submit(graph)`` returns.

``Run`` executes :func:`neuropool.graphs.runner.run_graph` in a thread of the submitting process,
so a notebook stays responsive; several runs submitted to one pool share its workers and go on
concurrently. ``progress()`` shows a live bar (terminal or Jupyter), ``status()`` each node's
state, ``result()`` waits and returns the derived asset, ``cancel()`` stops the run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from neuropool.cluster.base import Pool
from neuropool.errors import TaskFailedError
from neuropool.graphs.graph import Graph
from neuropool.graphs.runner import RunReport, run_graph
from neuropool.io.store import DerivedAsset


class Run:
    """One graph submitted to a pool; created by :meth:`neuropool.client.Client.submit`."""

    def __init__(self, graph: Graph, asset: DerivedAsset, pool: Pool) -> None:
        self.graph, self.asset, self.pool = graph, asset, pool
        self._states: dict[str, str] = dict.fromkeys(graph.nodes, "pending")
        self._blocks: dict[str, tuple[int, int]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._report: RunReport | None = None
        self._exception: BaseException | None = None
        graph.validate(pool.worker_resources())  # refuse at once, not in the background
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._main, name=f"neuropool-run-{asset.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.status().values():
            counts[s] = counts.get(s, 0) + 1
        return f"<Run {self.asset.name}: {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}>"

    def _event(self, event: str, node: str, info: dict[str, Any]) -> None:
        with self._lock:
            if event == "start":
                self._states[node] = "running"
                self._blocks[node] = (0, info["blocks"])
            elif event == "block":
                self._blocks[node] = (info["done"], info["total"])
            elif event in ("done", "cached", "failed", "skipped", "cancelled"):
                self._states[node] = event
                if "error" in info:
                    self._errors[node] = info["error"]

    def _main(self) -> None:
        try:
            self._report = run_graph(self.graph, self.asset, self.pool, progress=self._event,
                                     cancel=self._cancel)
        except BaseException as e:  # noqa: BLE001 - kept and re-raised by result()
            self._exception = e
        finally:
            self._done.set()

    # -- the public API -------------------------------------------------------------------

    def status(self) -> dict[str, str]:
        """Each node's state: pending, running, done, cached, failed, skipped or cancelled."""
        with self._lock:
            return dict(self._states)

    def errors(self) -> dict[str, str]:
        """The error of each failed node."""
        with self._lock:
            return dict(self._errors)

    def done(self) -> bool:
        """True once the run has finished (successfully or not)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to finish; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    def cancel(self) -> None:
        """Stop the run: blocks in flight are cancelled, nothing new starts; committed results stay."""
        self._cancel.set()

    @property
    def report(self) -> RunReport | None:
        """The full report once finished (states, summaries, errors, timings), else None."""
        return self._report

    def result(self, timeout: float | None = None) -> DerivedAsset:
        """Wait for the run and return its derived asset.

        Raises
        ------
        TimeoutError
            If ``timeout`` passed first.
        TaskFailedError
            If a node failed or was cancelled; the message lists each with its error.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.asset.name}: still running after {timeout} s")
        if self._exception is not None:
            raise self._exception
        assert self._report is not None
        bad = {k: r for k, r in self._report.results.items() if r.state not in ("done", "cached")}
        if bad:
            lines = "; ".join(f"{k} {r.state}: {(r.error or '').splitlines()[0][:300]}" for k, r in bad.items())
            raise TaskFailedError(self.asset.name, f"{len(bad)} node(s) did not complete: {lines}")
        return self.asset

    def progress(self, *, interval: float = 0.5) -> RunReport | None:
        """Show a live progress bar until the run finishes (terminal or Jupyter); return the report."""
        from tqdm.auto import tqdm

        total = len(self._states)
        with tqdm(total=total, desc=self.asset.name[:40], unit="task") as bar:
            finished = 0
            while True:
                ended = self._done.wait(interval)
                states = self.status()
                now = sum(s not in ("pending", "running") for s in states.values())
                bar.update(now - finished)
                finished = now
                with self._lock:
                    running = [f"{n} {d}/{t}" for n, (d, t) in self._blocks.items() if states.get(n) == "running"]
                bad = sum(s in ("failed", "skipped", "cancelled") for s in states.values())
                bar.set_postfix_str(", ".join(running)[:80] + (f" ({bad} not done)" if bad else ""))
                if ended:
                    break
        return self._report

    def elapsed(self) -> float:
        """Seconds since the run started (or its total wall time once finished)."""
        if self._report is not None:
            return self._report.wall_s
        return time.perf_counter() - self._t0
