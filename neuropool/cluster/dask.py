"""The Dask pool: connect to a scheduler, or start a LocalCluster on this machine."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import dask
from distributed import Client, LocalCluster
from distributed.client import _wait

from neuropool.cluster.base import Pool
from neuropool.cluster.gpus import count_gpus
from neuropool.cluster.malloc import MALLOC_VARIABLES, worker_environ
from neuropool.errors import ConfigError

#: Dask settings every neuropool worker needs. Sorters start their own process pools, which a
#: daemonic worker process may not do.
WORKER_CONFIG = {"distributed.worker.daemon": False}


def worker_config() -> dict[str, Any]:
    """Dask settings for the worker processes a nanny starts: :data:`WORKER_CONFIG`, and glibc
    malloc settings that let a worker reuse the memory of its last block
    (:mod:`neuropool.cluster.malloc`) on top of Dask's own pre-spawn environment."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    # NEUROPOOL_MALLOC_KEEP_MB=0: none of them (None unsets one, also one an earlier pool set)
    malloc = worker_environ() or dict.fromkeys(MALLOC_VARIABLES)
    return {**WORKER_CONFIG, "distributed.nanny.pre-spawn-environ": {**environ, **malloc}}


class DaskPool(Pool):
    """A pool of Dask workers.

    Give at most one of ``address`` (connect to a running scheduler) or ``cluster`` (an existing
    ``distributed`` cluster object); with neither, a ``LocalCluster`` is started on this machine
    and closed with the pool.

    Parameters
    ----------
    address : str, optional
        Scheduler address, e.g. ``tcp://10.0.0.5:8786`` or ``tls://host:8786``.
    cluster : distributed.deploy.Cluster, optional
        A cluster object you started yourself; it is not closed with the pool.
    n_workers, threads_per_worker, memory_limit : optional
        For the LocalCluster only. By default one single-threaded worker per core.
    gpus : int, optional
        For the LocalCluster only: GPUs to advertise (by default what ``nvidia-smi`` reports),
        given to the first worker.
    security : distributed.Security, optional
        TLS settings for ``tls://`` addresses.
    no_workers_timeout : float or None
        For the LocalCluster: seconds a block may wait for a worker offering what it needs (a
        GPU) before it fails with ``NoValidWorkerError`` instead of waiting forever (None: wait).
        A remote scheduler has its own setting (``neuropool scheduler`` sets it).
    """

    kind = "dask"

    def __init__(
        self,
        address: str | None = None,
        *,
        cluster: Any = None,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        memory_limit: str | float = "auto",
        gpus: int | None = None,
        security: Any = None,
        no_workers_timeout: float | None = 60.0,
    ) -> None:
        if address is not None and cluster is not None:
            raise ConfigError(
                f"DaskPool takes one of address= or cluster=, got both (address={address!r}, "
                f"cluster={cluster!r}): pass the address to connect to a running scheduler, or the "
                "cluster object you started, not both"
            )
        local_only = {"n_workers": n_workers, "gpus": gpus}
        if (address is not None or cluster is not None) and any(v is not None for v in local_only.values()):
            given = ", ".join(k for k, v in local_only.items() if v is not None)
            raise ConfigError(f"{given} only apply to a LocalCluster that DaskPool starts itself")
        self._own_cluster = None
        dask.config.set(worker_config())
        if no_workers_timeout is not None:
            dask.config.set({"distributed.scheduler.no-workers-timeout": f"{no_workers_timeout}s"})
        if address is not None:
            self.client = Client(address, security=security, set_as_default=False)
        else:
            if cluster is None:
                gpus = count_gpus() if gpus is None else gpus
                self._own_cluster = cluster = LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=threads_per_worker,
                    memory_limit=memory_limit,
                    processes=True,
                    dashboard_address=":0",
                )
            self.client = Client(cluster, set_as_default=False)
            if self._own_cluster is not None and gpus:
                self._advertise_gpus(gpus)

    def _advertise_gpus(self, gpus: int) -> None:
        """Give the machine's GPUs to one worker of the LocalCluster (two workers advertising the
        same GPU would let two GPU tasks share it)."""
        self.client.wait_for_workers(1)
        first = sorted(self.client.scheduler_info(n_workers=-1)["workers"])[0]

        async def set_gpus(dask_worker: Any) -> None:
            await dask_worker.set_resources(GPU=gpus)

        self.client.run(set_gpus, workers=[first])

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    @property
    def dashboard_link(self) -> str:
        """URL of the Dask dashboard."""
        return self.client.dashboard_link

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        resources: dict[str, float] | None = None,
        retries: int = 0,
        key: str | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"pure": False, "retries": retries}
        if resources:
            kwargs["resources"] = resources
        if key:
            kwargs["key"] = f"{key}-{uuid.uuid4().hex}"  # readable and unique; hashing args would cost
        return self.client.submit(fn, *args, **kwargs)

    def wait(self, futures: Iterable[Any], timeout: float | None = None) -> tuple[set, set]:
        # distributed.wait() uses the default client; Client.as_current() would give it ours but
        # also sets dask's process-wide scheduler config, which concurrent runs (threads) leak.
        # So call wait's coroutine on our own client, as distributed.wait itself does.
        futures = list(futures)
        try:
            result = self.client.sync(_wait, futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:  # distributed raises on timeout; the contract returns nothing done
            return set(), set(futures)
        return set(result.done), set(result.not_done)

    def worker_resources(self) -> list[dict[str, float]]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return [dict(w.get("resources") or {}) | {"CPU": w.get("nthreads", 1)} for w in workers.values()]

    def close(self) -> None:
        self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()
