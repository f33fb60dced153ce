"""Run a graph on a pool, committing each node's outputs into a derived asset.

For every node, in dependency order (independent nodes concurrently):

1. its *fingerprint* is computed from the task's name, version and parameters and the
   fingerprints of its inputs (for raw sources: size and modification time);
2. if the asset holds a commit with the same fingerprint, the node is skipped (``cached``);
3. otherwise its old commit is withdrawn, its outputs cleared, ``setup`` runs here, every block
   is submitted to the pool (with the node's retries), and when all blocks are back ``finish``
   runs and the commit marker is written, last;
4. a node that fails is ``failed`` with its error, which is also recorded in the asset
   (``_failures/``, read by ``neuropool status``; removed when the node is attempted again);
   everything downstream of it is ``skipped`` with the cause; other branches go on.

``processing.json`` is rewritten after each commit, so it always describes what is committed.

:func:`run_graph` drives all of this itself. An outside scheduler (the Prefect flows) drives an
:class:`Execution` node by node instead, with :meth:`Execution.run_node`, from as many threads as
it likes; :func:`stale_nodes` says which nodes a run would redo, without running anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from neuropool.cluster.base import Pool, worker_identity
from neuropool.cluster.malloc import retain_freed_memory
from neuropool.errors import GraphError, StoreError
from neuropool.graphs.graph import Graph, Node
from neuropool.io import urls
from neuropool.io.store import DerivedAsset
from neuropool.tasks.base import Task, TaskContext

#: Node states, in the order a node goes through them.
STATES = ("pending", "running", "done", "cached", "failed", "skipped", "cancelled")

#: How often (s) the run loop wakes up to notice a cancellation while blocks are in flight.
POLL_S = 0.5


@dataclass
class NodeResult:
    """What happened to one node."""

    node: str
    state: str = "pending"
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_s: float | None = None
    traceback: str | None = None


@dataclass
class RunReport:
    """The outcome of :func:`run_graph`."""

    asset: DerivedAsset
    results: dict[str, NodeResult]
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no node failed or was skipped."""
        return all(r.state in ("done", "cached") for r in self.results.values())

    def failed(self) -> dict[str, NodeResult]:
        """Failed and skipped nodes."""
        return {k: r for k, r in self.results.items() if r.state in ("failed", "skipped")}


def _run_block(task: Task, ctx: TaskContext, block: Any) -> tuple[Any, str]:
    """What a worker executes: one block of one task; returns its result and who ran it.

    BLAS (OpenBLAS, MKL) is held to the block's declared cores unless the task opts out
    (``Task.limit_blas``): its default, a thread per core in every worker process,
    oversubscribes the machine (the destripe step ran 4x slower so on 2 cores).
    """
    from threadpoolctl import threadpool_limits

    retain_freed_memory()  # block-sized arrays reuse freed memory instead of faulting it in
    if not task.limit_blas:  # the task manages its own parallelism (sorters' n_jobs)
        return task.run_block(ctx, block), worker_identity()
    with threadpool_limits(limits=max(1, math.ceil(task.resources().cpus)), user_api="blas"):
        result = task.run_block(ctx, block)
    return result, worker_identity()


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


#: Files whose change changes what a raw recording means: headers beside the data file.
_SIDECARS = {".cbin": (".ch", ".meta"), ".bin": (".meta",)}
_RAW_FILES = (".cbin", ".ch", ".meta", ".bin", "structure.oebin", "continuous.dat")


def source_fingerprint(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """Identify a raw source without reading it: URL, size and modification time (or ETag) of
    its data file and of the headers that give it meaning (``.ch``, ``.meta``; every raw file of
    a folder, e.g. an Open Ephys recording)."""
    fs, path = urls.get_fs(url, storage_options)
    keys = ("size", "mtime", "LastModified", "ETag", "created")

    def stat(p: str) -> dict[str, Any]:
        try:
            info = fs.info(p)
        except FileNotFoundError:
            return {"missing": True}
        return {k: info.get(k) for k in keys if k in info}

    if fs.isdir(path):
        files = sorted(p for p in fs.find(path) if p.endswith(_RAW_FILES))
    else:
        stem, ext = posixpath.splitext(path)
        files = [path, *(stem + s for s in _SIDECARS.get(ext, ()))]
    return _digest({"url": url, "files": {posixpath.relpath(p, path) if p != path else ".": stat(p)
                                          for p in files}})


class Execution:
    """The mutable state of one run of ``graph`` into ``asset`` on ``pool``.

    :func:`run_graph` drives it with :meth:`run`; other schedulers call :meth:`run_node` per
    node (thread-safe) and :meth:`close` at the end.
    """

    def __init__(self, graph: Graph, asset: DerivedAsset, pool: Pool,
                 progress: Callable[[str, str, dict[str, Any]], None] | None,
                 cancel: threading.Event | None = None) -> None:
        self.graph, self.asset, self.pool = graph, asset, pool
        self.cancel_event = cancel or threading.Event()
        self.progress = progress or (lambda event, node, info: None)
        self.results = {nid: NodeResult(nid) for nid in graph.nodes}
        self.fingerprints: dict[str, str] = {}
        self.inflight: dict[Any, tuple[str, int]] = {}
        self.running: dict[str, dict[str, Any]] = {}
        self.producers = graph.producers()
        self.graph_dict = graph.to_dict()
        self.ups: dict[str, list[str]] = {nid: [] for nid in graph.nodes}
        for a, b in graph.edges():
            self.ups[b].append(a)
        self.commits = asset.commits()  # read once; kept in step with every commit and uncommit
        self.failed_before = set(asset.failures())  # nodes with a failure record
        self._written = 0.0
        self.lock = threading.RLock()  # for run_node, called from several threads

    # -- fingerprints and contexts ----------------------------------------------------------

    def input_url(self, key: str) -> str:
        if key in self.graph.sources:
            return self.graph.sources[key]
        probe, name = key.split("/", 1)
        return self.asset.dataset_url(name, probe)

    def input_fingerprint(self, key: str) -> str:
        if key in self.graph.sources:
            return source_fingerprint(self.graph.sources[key], self.asset.storage_options)
        if key in self.producers:
            return self.fingerprints[self.producers[key]]
        producer = self.graph.external.get(key)
        commit = self.commits.get(producer) if producer else None
        if commit is None:
            raise GraphError(
                f"input {key} is not committed in {self.asset.url}; run the task that makes it "
                f"({producer or 'unknown'}) first, e.g. without --only"
            )
        return commit["fingerprint"]

    def context(self, node: Node) -> TaskContext:
        return TaskContext(
            node=node.id,
            probe=node.probe,
            inputs={name: self.input_url(key) for name, key in node.inputs.items()},
            outputs={name: self.asset.dataset_url(name, node.probe) for name in node.outputs},
            storage_options=self.asset.storage_options,
            info={"session": self.graph.session, "probe": self.graph.session.get("probes", {}).get(node.probe, {})},
        )

    # -- node life cycle --------------------------------------------------------------------

    def fingerprint(self, nid: str) -> str:
        """The node's fingerprint (its upstream nodes' must be known already)."""
        node = self.graph.nodes[nid]
        task = node.make_task()
        fp = _digest({
            "task": node.task, "version": task.version,
            "params": task.params.fingerprint_fields(),
            "inputs": {name: self.input_fingerprint(key) for name, key in node.inputs.items()},
        })
        self.fingerprints[nid] = fp
        return fp

    def is_current(self, nid: str) -> bool:
        """Whether the asset holds a commit of ``nid`` made with its current fingerprint."""
        fp = self.fingerprint(nid)  # always: a node that runs records it in its commit
        commit = self.commits.get(nid)
        return commit is not None and commit.get("fingerprint") == fp

    def start(self, nid: str, retries: int | None = None) -> None:
        node = self.graph.nodes[nid]
        task = node.make_task()
        commit = self.commits.get(nid)
        if nid in self.failed_before:  # attempted again: its last failure no longer describes it
            self.asset.forget_failure(nid)
            self.failed_before.discard(nid)
        if self.is_current(nid):
            self.results[nid] = NodeResult(nid, "cached", commit.get("summary", {}), wall_s=0.0)
            self.progress("cached", nid, {})
            return
        ctx = self.context(node)
        self.asset.uncommit(nid)  # from here on, the old outputs no longer count
        if commit is not None:  # and provenance must not list them, even if this run is killed
            del self.commits[nid]
            self.write_processing(force=True)
        for url in ctx.outputs.values():
            self.asset.clear(url)
        started = datetime.now()
        t0 = time.perf_counter()
        blocks = task.setup(ctx)
        if not blocks:
            raise StoreError(f"{nid}: setup returned no work blocks")
        resources = task.resources().as_dask()
        self.running[nid] = {"task": task, "ctx": ctx, "results": [None] * len(blocks),
                             "remaining": len(blocks), "start": started, "t0": t0, "hosts": set()}
        self.results[nid].state = "running"
        self.progress("start", nid, {"blocks": len(blocks)})
        for i, block in enumerate(blocks):
            fut = self.pool.submit(_run_block, task, ctx, block, resources=resources,
                                   retries=node.retries if retries is None else retries, key=nid)
            self.inflight[fut] = (nid, i)

    def block_done(self, fut: Any) -> None:
        nid, i = self.inflight.pop(fut)
        if nid not in self.running:  # the node already failed through another block
            return
        run = self.running[nid]
        exc = fut.exception()
        if exc is not None:
            self.fail(nid, exc)
            return
        run["results"][i], host = fut.result()
        run["hosts"].add(host)
        run["remaining"] -= 1
        self.progress("block", nid, {"done": len(run["results"]) - run["remaining"], "total": len(run["results"])})
        if run["remaining"] == 0:
            self.complete(nid)

    def complete(self, nid: str) -> None:
        run = self.running.pop(nid)
        task: Task = run["task"]
        ctx: TaskContext = run["ctx"]
        try:
            summary = task.finish(ctx, run["results"])
        except Exception as e:  # noqa: BLE001 - any failure of a task fails its node only
            self.running[nid] = run
            self.fail(nid, e)
            return
        wall = time.perf_counter() - run["t0"]
        record = {
            "task": task.name,
            "version": task.version,
            "parameters": task.params.model_dump(mode="json"),
            "inputs": ctx.inputs,
            "outputs": ctx.outputs,
            "start_date_time": run["start"].isoformat(timespec="seconds"),
            "end_date_time": datetime.now().isoformat(timespec="seconds"),
            "wall_s": round(wall, 3),
            "host": sorted(run["hosts"]) or [socket.gethostname()],
            "resources": task.resources().model_dump(),
            "fingerprint": self.fingerprints[nid],
            "summary": summary,
        }
        self.asset.commit(nid, record)
        self.commits[nid] = {"node": nid, **record}
        self.write_processing()
        self.results[nid] = NodeResult(nid, "done", summary, wall_s=wall)
        self.progress("done", nid, {"wall_s": wall})

    def write_processing(self, force: bool = False) -> None:
        """Rewrite ``processing.json``: always after a withdrawal, else at most once a second
        (a graph of thousands of nodes would otherwise rewrite it thousands of times); the run
        writes it once more at its end."""
        now = time.perf_counter()
        if force or now - self._written >= 1.0:
            self.asset.write_processing(self.graph_dict, self.commits)
            self._written = now

    def fail(self, nid: str, exc: BaseException) -> None:
        run = self.running.pop(nid, None)
        if run is not None:
            for fut, (other, _) in list(self.inflight.items()):
                if other == nid:
                    self.inflight.pop(fut)
                    if hasattr(fut, "cancel"):
                        fut.cancel()
        message = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if not self.cancel_event.is_set():  # kept in the asset for `neuropool status`
            self.failed_before.add(nid)
            self.asset.record_failure(nid, message, tb)
        self.results[nid] = NodeResult(nid, "failed", error=message, traceback=tb,
                                       wall_s=time.perf_counter() - run["t0"] if run else None)
        self.progress("failed", nid, {"error": message})
        for down in self.graph.downstream(nid):
            if self.results[down].state == "pending":
                self.results[down] = NodeResult(down, "skipped", error=f"not run: upstream {nid} failed")
                self.progress("skipped", down, {"cause": nid})

    # -- the loop ---------------------------------------------------------------------------

    def ready(self) -> list[str]:
        out = []
        for nid, res in self.results.items():
            if res.state != "pending":
                continue
            ups = [self.results[u].state for u in self.ups[nid]]
            if all(s in ("done", "cached") for s in ups):
                out.append(nid)
        return out

    def cancel_all(self) -> None:
        """Stop: cancel blocks in flight; running and pending nodes end ``cancelled``.

        Nothing is committed for them, so a later run redoes them; what is committed stays.
        """
        for fut in list(self.inflight):
            if hasattr(fut, "cancel"):
                fut.cancel()
        self.inflight.clear()
        for nid, res in self.results.items():
            if res.state in ("pending", "running"):
                self.results[nid] = NodeResult(nid, "cancelled", error="cancelled by the user")
                self.progress("cancelled", nid, {})
        self.running.clear()

    def run_node(self, nid: str, *, block_retries: int | None = None) -> NodeResult:
        """Run one node now, in the calling thread, and return its result (never raises).

        Its upstream nodes must have ended; if one of them did not succeed the node is
        ``skipped``. Calling it again for a failed node runs it again (a retry), reopening the
        nodes that were skipped because of it.

        Parameters
        ----------
        nid : str
            The node.
        block_retries : int, optional
            Retries of each block on the pool (default: the node's own ``retries``). A scheduler
            that retries whole nodes itself passes 0.
        """
        with self.lock:
            self._reopen(nid)
            bad = self.unfinished_upstream(nid)
            if bad:
                cause = f"not run: upstream {bad[0]} {self.results[bad[0]].state}"
                self.results[nid] = NodeResult(nid, "skipped", error=cause)
                self.progress("skipped", nid, {"cause": bad[0]})
                return self.results[nid]
            try:
                self.start(nid, retries=block_retries)
            except Exception as e:  # noqa: BLE001 - a node's setup failing fails that node
                self.fail(nid, e)
        while True:
            with self.lock:
                mine = [f for f, (n, _) in self.inflight.items() if n == nid]
                if mine and self.cancel_event.is_set():
                    self.fail(nid, RuntimeError("cancelled by the user"))
                    self.results[nid].state = "cancelled"
                    mine = []
            if not mine:
                break
            done, _ = self.pool.wait(mine, timeout=POLL_S)
            with self.lock:
                for fut in done:
                    if fut in self.inflight:
                        self.block_done(fut)
        with self.lock:
            self.write_processing()
            return self.results[nid]

    def unfinished_upstream(self, nid: str) -> list[str]:
        """The nodes ``nid`` depends on directly that did not end ``done`` or ``cached``."""
        return [u for u in self.ups[nid] if self.results[u].state not in ("done", "cached")]

    def _reopen(self, nid: str) -> None:
        """Make a failed node pending again, with the nodes skipped because of it."""
        if self.results[nid].state not in ("failed", "cancelled"):
            return
        self.results[nid] = NodeResult(nid)
        for down in self.graph.downstream(nid):
            if self.results[down].state == "skipped" and \
                    (self.results[down].error or "").endswith(f"upstream {nid} failed"):
                self.results[down] = NodeResult(down)

    def close(self) -> RunReport:
        """Write the final ``processing.json`` and return the report (for :meth:`run_node` users)."""
        with self.lock:
            self.write_processing(force=True)
            return RunReport(self.asset, dict(self.results))

    def run(self) -> None:
        while True:
            if self.cancel_event.is_set():
                self.cancel_all()
                break
            for nid in self.ready():
                try:
                    self.start(nid)
                except Exception as e:  # noqa: BLE001 - a node's setup failing fails that node
                    self.fail(nid, e)
            if not self.inflight:
                if not self.ready():
                    break
                continue
            done, _ = self.pool.wait(list(self.inflight), timeout=POLL_S)
            for fut in done:
                if fut in self.inflight:
                    self.block_done(fut)


def run_graph(
    graph: Graph,
    asset: DerivedAsset,
    pool: Pool,
    *,
    progress: Callable[[str, str, dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Validate ``graph`` against ``pool`` and run it, committing results into ``asset``.

    Parameters
    ----------
    graph : Graph
        What to run.
    asset : DerivedAsset
        Where results go; nodes already committed there with the same fingerprint are skipped.
    pool : Pool
        Where blocks run.
    progress : callable, optional
        Called as ``progress(event, node_id, info)`` with events ``start``, ``block``, ``done``,
        ``cached``, ``failed``, ``skipped``, ``cancelled``.
    cancel : threading.Event, optional
        Set it (from another thread) to stop the run: blocks in flight are cancelled, no new node
        starts, and what is already committed stays committed.

    Returns
    -------
    RunReport
        Each node's state, summary and error. A failed node does not raise: check ``report.ok``.
    """
    graph.validate(pool.worker_resources())
    t0 = time.perf_counter()
    execution = Execution(graph, asset, pool, progress, cancel)
    execution.write_processing(force=True)  # the graph is in processing.json before any commit
    execution.run()
    execution.write_processing(force=True)
    return RunReport(asset, execution.results, time.perf_counter() - t0)


def stale_nodes(graph: Graph, asset: DerivedAsset) -> list[str]:
    """The nodes of ``graph`` that a run into ``asset`` would (re)do, in dependency order.

    Nothing runs and nothing is read but commit markers and the raw files' size and date: a
    node is stale when ``asset`` holds no commit of it with its current fingerprint (task
    version, parameters, inputs). An empty list means the asset is up to date.
    """
    from neuropool.cluster.local import InProcessPool

    execution = Execution(graph, asset, InProcessPool(gpus=0), None)
    return [nid for nid in graph.topological_order() if not execution.is_current(nid)]
