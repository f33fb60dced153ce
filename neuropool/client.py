"""The notebook entry point: ``pool = neuropool.connect(...)``, ``run = pool.submit(graph)``.

The same graph runs on a laptop (an embedded Dask LocalCluster), a lab's Dask scheduler, or in
this process for debugging. A :class:`Client` wraps a :class:`neuropool.cluster.Pool` and turns
graphs or session URLs into background :class:`neuropool.graphs.run.Run` objects.
"""

from __future__ import annotations

from typing import Any

from neuropool.cluster import Pool
from neuropool.cluster import connect as connect_pool
from neuropool.graphs.config import PipelineConfig
from neuropool.graphs.graph import Graph
from neuropool.graphs.run import Run
from neuropool.graphs.standard import plan
from neuropool.io.store import DerivedAsset


class Client:
    """A connection to a pool, to submit graphs and sessions to.

    Parameters
    ----------
    pool : neuropool.cluster.Pool
        Where blocks run (see :func:`connect`).
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.runs: list[Run] = []

    def __repr__(self) -> str:
        workers = self.pool.worker_resources()
        gpus = sum(w.get("GPU", 0) for w in workers)
        return f"<neuropool.Client {self.pool.kind} at {self.pool.address}: {len(workers)} worker(s), {gpus:g} GPU(s)>"

    def submit(
        self,
        work: Graph | str,
        *,
        out: str | None = None,
        asset: DerivedAsset | None = None,
        config: str | dict[str, Any] | PipelineConfig | None = None,
        storage_options: dict[str, Any] | None = None,
        new: bool = False,
        until: str | None = None,
        only: list[str] | None = None,
    ) -> Run:
        """Start running a graph, or the standard graph of a session, and return at once.

        The arguments say what runs and where its results go, as for
        :func:`neuropool.graphs.standard.plan`: ``work`` is a :class:`Graph` or a session URL
        (folder or file); ``out`` the folder for the derived asset (default: beside the session)
        or ``asset`` an existing one to resume; ``config`` the pipeline parameters (path, dict or
        :class:`PipelineConfig`); ``storage_options`` fsspec options; ``new`` a fresh asset
        instead of resuming; ``until``/``only`` restrict the graph as ``neuropool run`` does.
        """
        graph, asset = plan(work, out=out, asset=asset, config=config, storage_options=storage_options,
                            new=new, until=until, only=only)
        run = Run(graph, asset, self.pool)
        self.runs.append(run)
        return run

    def close(self) -> None:
        """Cancel unfinished runs, wait for them, and release the pool."""
        for run in self.runs:
            if not run.done():
                run.cancel()
                run.wait(30)
        self.pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: str | None = None, **kwargs: Any) -> Client:
    """Connect to a pool, or start one, and return a :class:`Client`.

    Parameters
    ----------
    address : str, optional
        ``None``: start a Dask LocalCluster on this machine. ``"inprocess"``: run in this
        process. ``"tcp://host:8786"`` / ``"tls://host:8786"``: a running Dask scheduler (pass
        ``security=`` for TLS).
    **kwargs
        Passed to the pool (``n_workers``, ``threads_per_worker``, ``gpus``, ``security``...).
    """
    return Client(connect_pool(address, **kwargs))
