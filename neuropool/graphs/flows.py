"""Prefect flows: ``process-session`` and ``discover-sessions``, a thin layer over the graph.

This is the only module that imports Prefect (the ``prefect`` extra). Each graph node becomes a
Prefect task run named after the node (``sort[probe00]``), with the node's retries; neuropool's
own commits decide what is skipped (Prefect's caching is off, so there is no second cache to
disagree with). The node's blocks still run on the pool the flow connects to (``cluster``): an
embedded LocalCluster, a lab scheduler, Ray, or a profile naming one of those.

A node that declares GPUs holds that many slots of a Prefect global concurrency limit while it
runs (default name ``neuropool-gpu``, or ``$NEUROPOOL_GPU_LIMIT``), so that sortings started by
different flow runs on one machine never share a GPU. ``neuropool deploy`` creates the limit;
a flow run creates it with one slot if it is missing.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import uuid
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.futures import wait
from prefect.states import Cancelled, Completed
from prefect.utilities.annotations import allow_failure
from pydantic import Field

from neuropool.cluster.profiles import connect_to
from neuropool.errors import TaskFailedError
from neuropool.graphs.config import PipelineConfig, config_by_name
from neuropool.graphs.graph import Graph
from neuropool.graphs.runner import Execution, stale_nodes
from neuropool.graphs.standard import plan, standard_graph
from neuropool.io import urls
from neuropool.io.session import open_session
from neuropool.io.store import DerivedAsset

#: Environment variable naming the GPU concurrency limit; empty turns the limit off.
GPU_LIMIT_ENV = "NEUROPOOL_GPU_LIMIT"
DEFAULT_GPU_LIMIT = "neuropool-gpu"

#: What ``--param until=`` may name.
UntilTask = Literal["decompress", "preprocess", "sort", "qc", "localize", "export", "nwb", "decompress_lf",
                    "lfp", "raw_qc"]


def gpu_limit_name() -> str | None:
    """The global concurrency limit that GPU nodes hold slots of, or None when turned off."""
    return os.environ.get(GPU_LIMIT_ENV, DEFAULT_GPU_LIMIT) or None


def ensure_gpu_limit(name: str, slots: int = 1, *, update: bool = False) -> int:
    """Create the global concurrency limit ``name`` with ``slots`` slots if it is missing
    (or set its slots with ``update``); return the slots it has."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            return slots
        if update and limit.limit != slots:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots))
            return slots
        return limit.limit


#: The executions of the flow runs in this process, by id: Prefect task runs receive the id
#: (a plain parameter, shown in the UI) rather than the object, which Prefect would inspect.
_EXECUTIONS: dict[str, Execution] = {}


@task(cache_policy=NO_CACHE, persist_result=False)
def run_node(execution_id: str, nid: str, gpu_limit: str | None) -> Any:
    """One graph node as a Prefect task run: raises on failure, so Prefect retries it."""
    logger = get_run_logger()
    execution = _EXECUTIONS[execution_id]
    gpus = execution.graph.nodes[nid].make_task().resources().gpus
    if gpus and gpu_limit:
        with execution.lock:  # a node that will be skipped or found committed needs no GPU slot
            gpus = 0 if execution.unfinished_upstream(nid) or execution.is_current(nid) else gpus
    if gpus and gpu_limit:
        logger.info("waiting for %d slot(s) of the GPU concurrency limit %r", gpus, gpu_limit)
        with concurrency(gpu_limit, occupy=gpus, strict=True):
            result = execution.run_node(nid, block_retries=0)
    else:
        result = execution.run_node(nid, block_retries=0)
    if result.state == "failed":
        logger.error("%s", result.traceback or result.error)
        raise TaskFailedError(nid, result.error or "failed")
    if result.state == "skipped":
        return Cancelled(name="Skipped", message=f"{nid}: {result.error}")
    if result.state == "cancelled":
        return Cancelled(message=f"{nid}: cancelled")
    if result.state == "cached":
        logger.info("%s is committed with the same inputs, parameters and version: skipped", nid)
        return Completed(name="Cached", message=f"{nid}: already committed", data=result.summary)
    logger.info("%s done in %.1f s: %s", nid, result.wall_s or 0.0, result.summary)
    return result.summary


def run_graph_in_prefect(graph: Graph, asset: DerivedAsset, cluster: str | None) -> dict[str, Any]:
    """Run ``graph`` into ``asset``, each node a Prefect task run; raise if a node did not complete."""
    logger = get_run_logger()
    gpu_limit = gpu_limit_name()
    with connect_to(cluster) as pool:
        workers = pool.worker_resources()
        logger.info("%s: %d node(s) on %s pool %s (%d worker(s)), into %s", graph.session.get("name", "graph"),
                    len(graph.nodes), pool.kind, pool.address, len(workers), asset.url)
        graph.validate(workers)
        if gpu_limit and any(n.make_task().resources().gpus for n in graph.nodes.values()):
            slots = ensure_gpu_limit(gpu_limit)
            logger.info("GPU nodes hold slots of the concurrency limit %r (%d slot(s))", gpu_limit, slots)

        def progress(event: str, nid: str, info: dict[str, Any]) -> None:
            if event == "start":
                logger.info("%s started: %d block(s)", nid, info["blocks"])

        execution_id = uuid.uuid4().hex
        _EXECUTIONS[execution_id] = execution = Execution(graph, asset, pool, progress)
        execution.write_processing(force=True)  # the graph is in processing.json before any commit
        try:
            futures: dict[str, Any] = {}
            for nid in graph.topological_order():
                node = graph.nodes[nid]
                after = [allow_failure(futures[u]) for u in graph.upstream(nid)]
                futures[nid] = run_node.with_options(
                    name=node.task, task_run_name=nid, retries=node.retries,
                ).submit(execution_id, nid, gpu_limit, wait_for=after)
            wait(list(futures.values()))
        finally:
            report = execution.close()
            del _EXECUTIONS[execution_id]
    states = {nid: r.state for nid, r in report.results.items()}
    bad = {nid: r for nid, r in report.results.items() if r.state not in ("done", "cached")}
    if bad:
        lines = "; ".join(f"{nid} {r.state}: {(r.error or r.state).splitlines()[0][:300]}"
                          for nid, r in bad.items())
        raise TaskFailedError(asset.name, f"{len(bad)} node(s) did not complete: {lines}")
    logger.info("%s complete: %s", asset.url, states)
    return {"asset": asset.url, "nodes": states}


@flow(name="process-session", log_prints=True)
def process_session(
    source: str,
    output: str | None = None,
    config: str = "default",
    cluster: str | None = None,
    until: UntilTask | None = None,
    new: bool = False,
) -> dict[str, Any]:
    """Build the standard graph of one raw session and run it on a pool.

    Parameters
    ----------
    source : str
        The raw session: a folder (with ``session.json``, or recordings to discover) or a
        recording file, local or any fsspec URL (``s3://...``).
    output : str, optional
        Folder (URL) that receives the derived asset; default: beside the session.
    config : str
        A pipeline config: ``default``, a name in ``configs/pipeline/`` (or
        ``$NEUROPOOL_CONFIG_DIR``), or a YAML path.
    cluster : str, optional
        The pool: a scheduler address (``tls://host:8786``, ``ray://host:10001``), ``local``,
        ``inprocess``, a profile name in ``configs/cluster/`` (or ``$NEUROPOOL_CLUSTER_DIR``), or
        None for an embedded LocalCluster.
    until : str, optional
        Stop after this task (``decompress`` ... ``export``).
    new : bool
        Start a new derived asset instead of resuming the latest one.

    Returns
    -------
    dict
        The asset's URL and each node's final state.
    """
    cfg = config_by_name(config)
    graph, asset = plan(source, out=output, config=cfg, new=new, until=until)
    return run_graph_in_prefect(graph, asset, cluster)


def find_sessions(root: str, pattern: str = "*") -> list[str]:
    """Raw sessions directly under ``root`` whose folder name matches ``pattern`` (a glob).

    Derived assets (folders holding ``data_description.json``) are not sessions; nor is a folder
    that neuropool cannot open as one (it is logged and left out).
    """
    log = logging.getLogger("neuropool.discover")
    fs, path = urls.get_fs(root)
    found = []
    for entry in sorted(fs.ls(path, detail=True), key=lambda e: e["name"]):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] != "directory" or not fnmatch.fnmatch(name, pattern):
            continue
        url = urls.join(root, name)
        if fs.exists(f"{entry['name'].rstrip('/')}/data_description.json"):
            continue
        try:
            open_session(url)
        except Exception as e:  # noqa: BLE001 - not a session: say why, go on
            log.info("%s: not a raw session (%s)", url, e)
            continue
        found.append(url)
    return found


def needs_processing(session_url: str, output: str | None, cfg: PipelineConfig,
                     until: str | None = None) -> bool:
    """True unless the latest derived asset of the session has every node of the standard graph
    (up to ``until``) committed with the current fingerprints (pipeline version, parameters, raw
    files)."""
    root = output or urls.parent(session_url)
    asset = DerivedAsset.find_latest(root, session_url, label=cfg.label)
    if asset is None:
        return True
    graph = standard_graph(open_session(session_url), cfg)
    return bool(stale_nodes(graph.subset(until=until) if until else graph, asset))


@flow(name="discover-sessions", log_prints=True)
def discover_sessions(
    root: str,
    pattern: str = "*",
    limit: Annotated[int, Field(ge=1)] = 10,
    output: str | None = None,
    config: str = "default",
    cluster: str | None = None,
    until: UntilTask | None = None,
    deployment: str = "process-session/adhoc",
) -> list[str]:
    """Find raw sessions under ``root`` not yet processed by the current pipeline, and start a
    ``process-session`` run for each (at most ``limit``).

    How many of those runs go at once is the ``process-session`` deployment's concurrency limit
    (``configs/prefect.yaml``); the others wait in Prefect's queue.

    Parameters
    ----------
    root : str
        Folder (URL) whose sub-folders are raw sessions.
    pattern : str
        Glob the session folder names must match, e.g. ``"*_2026-11-*"``.
    limit : int
        The most runs this discovery starts; the rest are found by the next one.
    output, config, cluster, until : optional
        Passed to each ``process-session`` run (see :func:`process_session`); a session counts
        as processed when every task up to ``until`` (default: all) is committed.
    deployment : str
        The deployment that processes one session.

    Returns
    -------
    list of str
        The sessions a run was started for.
    """
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    cfg = config_by_name(config)
    sessions = find_sessions(root, pattern)
    todo = [s for s in sessions if needs_processing(s, output, cfg, until)]
    logger.info("%d session(s) under %s match %r; %d not processed by the current pipeline",
                len(sessions), root, pattern, len(todo))
    started = []
    for url in todo[:limit]:
        params = {"source": url, "output": output, "config": config, "cluster": cluster, "until": until}
        run = run_deployment(deployment, parameters=params, timeout=0, as_subflow=False,
                             tags=["discovered"])
        logger.info("started %s for %s (flow run %s)", deployment, url, run.name)
        started.append(url)
    if len(todo) > limit:
        logger.info("%d more left for the next discovery (limit=%d)", len(todo) - limit, limit)
    return started
