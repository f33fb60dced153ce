"""The in-process pool: runs everything at once in the calling process, for debugging and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from neuropool.cluster.base import Pool
from neuropool.cluster.gpus import count_gpus


class InProcessPool(Pool):
    """Run each submitted call immediately, in this process; futures come back already done.

    Parameters
    ----------
    gpus : int, optional
        GPUs to advertise; by default what ``nvidia-smi`` reports (0 when it is absent).
    """

    kind = "in-process"

    def __init__(self, gpus: int | None = None) -> None:
        self.gpus = count_gpus() if gpus is None else gpus

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        resources: dict[str, float] | None = None,
        retries: int = 0,
        key: str | None = None,
    ) -> Future:
        fut: Future = Future()
        for attempt in range(retries + 1):
            try:
                fut.set_result(fn(*args))
                break
            except Exception as e:  # noqa: BLE001 - the future carries it to the caller
                if attempt == retries:
                    fut.set_exception(e)
        return fut

    def wait(self, futures: Iterable[Any], timeout: float | None = None) -> tuple[set, set]:
        futures = set(futures)
        return {f for f in futures if f.done()}, {f for f in futures if not f.done()}

    def worker_resources(self) -> list[dict[str, float]]:
        return [{"GPU": float(self.gpus)}]
