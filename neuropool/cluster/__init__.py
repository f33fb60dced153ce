"""Pools of workers: in-process, or Dask (local or remote). One entry point, :func:`connect`."""

from __future__ import annotations

from typing import Any

from neuropool.cluster.base import Pool
from neuropool.cluster.local import InProcessPool


def connect(address: str | None = None, **kwargs: Any) -> Pool:
    """Connect to a pool, or start one.

    Parameters
    ----------
    address : str, optional
        ``None`` or ``"local"``: start a Dask LocalCluster on this machine.
        ``"inprocess"``: run everything in this process (debugging).
        ``tcp://HOST:PORT`` / ``tls://HOST:PORT``: connect to a running Dask scheduler.
        ``"ray"``: start Ray in this process; ``ray://HOST:10001``: a running Ray cluster
        (needs the ``ray`` extra).
    **kwargs
        Passed to the pool (see :class:`neuropool.cluster.dask.DaskPool`).
    """
    if address in ("inprocess", "in-process"):
        return InProcessPool(**kwargs)
    if address == "ray" or (address or "").startswith("ray://"):
        from neuropool.cluster.ray import RayPool

        return RayPool(None if address == "ray" else address, **kwargs)
    from neuropool.cluster.dask import DaskPool

    if address in (None, "local"):
        return DaskPool(**kwargs)
    return DaskPool(address, **kwargs)


__all__ = ["Pool", "InProcessPool", "connect"]
