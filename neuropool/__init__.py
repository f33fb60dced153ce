"""neuropool: Neuropixels recordings in, sorted and localised units out, over a pool of workers.

>>> import neuropool
>>> pool = neuropool.connect()                      # an embedded Dask LocalCluster
>>> run = pool.submit("/data/mouse1_2026-11-21_001")  # the standard graph of a session
>>> run.progress()
>>> asset = run.result()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from neuropool.client import Client


def connect(address: str | None = None, **kwargs: Any) -> Client:
    """Connect to a pool, or start one; see :func:`neuropool.client.connect`."""
    from neuropool.client import connect as _connect

    return _connect(address, **kwargs)


def catalog(root: str, **kwargs: Any) -> Any:
    """Index the derived assets under ``root``; see :func:`neuropool.catalogs.catalog`."""
    from neuropool.catalogs import catalog as _catalog

    return _catalog(root, **kwargs)


__all__ = ["__version__", "catalog", "connect"]
