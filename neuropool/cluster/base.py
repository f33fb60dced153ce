"""The pool contract: somewhere to run callables, with resource requests and retries.

``cluster/`` knows nothing of tasks or graphs: it runs plain callables. A pool returns futures
that have ``result()``, ``exception()`` and ``done()`` (``concurrent.futures.Future`` or Dask's).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any


class Pool(ABC):
    """Where work runs. Use as a context manager, or call :meth:`close`."""

    #: Short name shown in summaries (``"in-process"``, ``"dask"``).
    kind: str = "pool"

    @abstractmethod
    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        resources: dict[str, float] | None = None,
        retries: int = 0,
        key: str | None = None,
    ) -> Any:
        """Run ``fn(*args)`` somewhere; return a future.

        Parameters
        ----------
        resources : dict, optional
            Scarce resources the call needs (``{"GPU": 1}``); it runs only where they are offered.
        retries : int
            How many times to run it again if it raises (or its worker dies).
        key : str, optional
            A readable name for dashboards and logs.
        """

    @abstractmethod
    def wait(self, futures: Iterable[Any], timeout: float | None = None) -> tuple[set, set]:
        """Block until at least one future is done, or ``timeout`` seconds have passed (then
        ``done`` may be empty); return ``(done, not_done)``."""

    @abstractmethod
    def worker_resources(self) -> list[dict[str, float]]:
        """What each worker advertises, e.g. ``[{"CPU": 2, "GPU": 0}, ...]``."""

    @property
    def address(self) -> str:
        """Where the pool can be reached, for messages."""
        return self.kind

    def close(self) -> None:
        """Release what the pool started (workers, schedulers). Connected pools stay up."""
        return None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_identity() -> str:
    """Who is running the calling code: ``host`` plus the Dask worker's name or Ray node id.

    Recorded in provenance, so ``processing.json`` says which worker of a pool ran each node (the
    host name alone does not tell workers on one machine apart).
    """
    import socket
    import sys

    host = socket.gethostname()
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            return f"{host}/dask:{get_worker().name}"
        except ValueError:  # not inside a Dask worker
            pass
    ray = sys.modules.get("ray")  # only if the Ray pool already imported it
    if ray is not None:
        try:
            if ray.is_initialized():
                return f"{host}/ray:{ray.get_runtime_context().get_node_id()[:12]}"
        except Exception:  # noqa: BLE001 - identity is best effort
            pass
    return host
