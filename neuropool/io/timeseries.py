"""Chunked time x channel stores: zarr groups that xarray opens as a Dataset.

Layout of a store (zarr format v2, readable by ``xarray.open_zarr``)::

    traces      (time, channel)  int16 raw samples or float32 µV, chunked along time only
    channel     (channel,)       channel ids ("AP0", ...)
    x, y        (channel,)       contact positions, µm
    shank       (channel,)       shank index
    gain_uv     (channel,)       µV per stored unit (1.0 for float µV stores)
    adc_shift   (channel,)       ADC sampling delay, fraction of a sample
    is_sync     (channel,)       True for the digital sync channel
    attrs: sampling_frequency, n_samples, units, source, probe_type, ...

Writers create the store once (``create``) and then fill whole, chunk-aligned blocks of rows
from any number of workers (``write_block``): no two writers ever touch the same zarr chunk.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np
import xarray as xr
import zarr

from neuropool.errors import StoreError
from neuropool.io import urls
from neuropool.io.codecs import delta_from_time_diffs, encoding

#: Per-channel coordinates every store carries, with their dtype.
CHANNEL_COORDS: dict[str, str] = {
    "x": "float64",
    "y": "float64",
    "shank": "int64",
    "gain_uv": "float64",
    "adc_shift": "float64",
    "is_sync": "bool",
}


class _Store(zarr.storage.FSStore):
    """zarr's fsspec store, writing local chunk files from their buffers without a copy.

    ``FSStore.setitems`` turns every encoded chunk into ``bytes`` (fsspec's ``FSMap``) before
    writing it: one more pass over ~46 MB per second of 384-channel float32 data. A local file
    takes the buffer as it is; other filesystems keep fsspec's path.
    """

    def setitems(self, values: dict[str, Any]) -> None:
        if self.mode == "r" or not urls.is_local_fs(self.fs):
            return super().setitems(values)
        for key, value in values.items():
            path = posixpath.join(self.map.root, self._normalize_key(key))
            self.fs.mkdirs(posixpath.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(numcodecs.compat.ensure_contiguous_ndarray(value).view(np.uint8))


def _store(url: str, storage_options: dict[str, Any] | None) -> zarr.storage.FSStore:
    return _Store(url, **(storage_options or {}))


def create(
    url: str,
    *,
    n_samples: int,
    channel_ids: list[str],
    dtype: str | np.dtype,
    chunk_samples: int,
    coords: dict[str, np.ndarray],
    attrs: dict[str, Any],
    compression: str = "zstd",
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Create an empty store at ``url`` (which must not exist yet) with all its coordinates.

    ``coords`` must hold every name of :data:`CHANNEL_COORDS`; any other entry (such as the
    preprocessed store's bad-channel ``labels``) is written as one more channel coordinate.
    ``compression`` names the codec of ``traces`` (:data:`neuropool.io.codecs.CODECS`); an
    unknown name, or one that does not suit ``dtype``, raises a ``ConfigError``.
    """
    n_channels = len(channel_ids)
    codec = encoding(compression, dtype)  # fails before anything is written
    root = zarr.group(store=_store(url, storage_options), overwrite=True)
    traces = root.create_dataset(
        "traces",
        shape=(n_samples, n_channels),
        chunks=(chunk_samples, n_channels),
        dtype=dtype,
        **codec.zarr_kwargs(),
        fill_value=None,  # xarray would read a fill value as "missing" and turn zeros into NaN
        write_empty_chunks=True,
    )
    traces.attrs["_ARRAY_DIMENSIONS"] = ["time", "channel"]
    ids = root.create_dataset("channel", data=np.asarray(channel_ids, dtype=str), dtype=str,
                              fill_value=None)
    ids.attrs["_ARRAY_DIMENSIONS"] = ["channel"]
    extra = {name: None for name in coords if name not in CHANNEL_COORDS}  # e.g. "labels"
    for name, kind in {**CHANNEL_COORDS, **extra}.items():
        if name not in coords:
            raise StoreError(f"{url}: coordinate {name!r} is missing (every store has "
                             f"{', '.join(CHANNEL_COORDS)})")
        values = np.asarray(coords[name], dtype=kind)
        if values.shape != (n_channels,):
            raise StoreError(f"{url}: coordinate {name!r} has shape {values.shape}, expected ({n_channels},)")
        arr = root.create_dataset(name, data=values, fill_value=None)
        arr.attrs["_ARRAY_DIMENSIONS"] = ["channel"]
    root.attrs.update({**attrs, "n_samples": int(n_samples), "chunk_samples": int(chunk_samples)})


def write_block(url: str, start: int, data: np.ndarray, storage_options: dict[str, Any] | None = None) -> None:
    """Write rows ``[start, start + len(data))``; ``start`` must fall on a chunk boundary."""
    arr = zarr.open_array(store=_store(url, storage_options), path="traces", mode="r+")
    chunk = arr.chunks[0]
    stop = start + data.shape[0]
    if start % chunk or (stop % chunk and stop != arr.shape[0]):
        raise StoreError(f"{url}: block [{start}, {stop}) is not aligned to chunks of {chunk} samples")
    arr[start:stop] = data


def write_time_diffs(url: str, start: int, diffs: np.ndarray,
                     storage_options: dict[str, Any] | None = None) -> bool:
    """Write one whole chunk given as per-channel time differences, if the store takes them as
    they are (``zstd-delta``: channel-major chunks, ``Delta`` filter); else write nothing.

    Parameters
    ----------
    url : str
        The store.
    start : int
        First row; must start a chunk, and ``diffs`` must fill it.
    diffs : numpy.ndarray
        Writable ``(n_channels, chunk_samples)`` array, each row a channel's first sample then its
        successive differences (as mtscomp stores them: ``MtscompReader.time_diffs``); modified.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    bool
        True if written; False if the store's encoding or the block's shape does not allow it
        (write the samples with :func:`write_block` then).
    """
    arr = zarr.open_array(store=_store(url, storage_options), path="traces", mode="r+")
    chunk, n_channels = arr.chunks
    filters = arr.filters or []
    if (arr.order != "F" or len(filters) != 1 or not isinstance(filters[0], numcodecs.Delta)
            or np.dtype(filters[0].dtype) != arr.dtype or np.dtype(filters[0].astype) != arr.dtype
            or diffs.dtype != arr.dtype or diffs.shape != (n_channels, chunk) or start % chunk
            or start + chunk > arr.shape[0] or arr.compressor is None):
        return False
    key = arr._chunk_key((start // chunk, 0))  # zarr 2's chunk naming ("traces/12.0")
    arr.chunk_store[key] = arr.compressor.encode(delta_from_time_diffs(diffs))
    return True


def finalize(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Consolidate the metadata so that readers (xarray) open the store in one request."""
    zarr.consolidate_metadata(_store(url, storage_options))


def open_dataset(url: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open a store as a lazy ``xarray.Dataset`` (dask-backed, one dask chunk per zarr chunk)."""
    return xr.open_zarr(_store(url, storage_options), consolidated=True)


def block_ranges(n_samples: int, chunk_samples: int, chunks_per_block: int = 1) -> list[tuple[int, int]]:
    """Chunk-aligned ``[start, stop)`` ranges covering ``n_samples``."""
    step = chunk_samples * chunks_per_block
    return [(s, min(s + step, n_samples)) for s in range(0, n_samples, step)]


@dataclass
class TimeseriesStore:
    """A store opened for reading rows and per-channel coordinates, without xarray.

    Picklable (only the URL and options are kept); arrays are opened lazily.
    """

    url: str
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._root: zarr.Group | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._root = None
        self._pid = os.getpid()

    @property
    def root(self) -> zarr.Group:
        if self._pid != os.getpid():
            # a forked child (SpikeInterface's process pools fork) must not reuse the parent's
            # handle: async filesystems such as s3fs are not fork-safe
            self._root, self._pid = None, os.getpid()
        if self._root is None:
            try:
                self._root = zarr.open_group(store=_store(self.url, self.storage_options), mode="r")
            except (zarr.errors.GroupNotFoundError, FileNotFoundError, KeyError) as e:
                raise StoreError(f"{self.url}: no time series store here ({e})") from e
        return self._root

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def traces(self) -> zarr.Array:
        return self.root["traces"]

    @property
    def n_samples(self) -> int:
        return int(self.traces.shape[0])

    @property
    def sampling_frequency(self) -> float:
        return float(self.root.attrs["sampling_frequency"])

    @property
    def channel_ids(self) -> list[str]:
        return [str(c) for c in self.root["channel"][:]]

    def coord(self, name: str) -> np.ndarray:
        """A per-channel coordinate array (``x``, ``gain_uv``...)."""
        return self.root[name][:]

    @property
    def positions(self) -> np.ndarray:
        return np.stack([self.coord("x"), self.coord("y")], axis=1)

    def read(self, start: int, stop: int, channels: np.ndarray | slice = slice(None),
             order: str = "C") -> np.ndarray:
        """Rows ``[start, stop)`` of the chosen channels.

        ``order="C"`` (default) returns a time-major array whatever the order the chunks are
        stored in; ``order="native"`` returns the chunks' own layout (channel-major, a transposed
        view, for ``zstd-delta`` stores), which saves a transposing copy for a caller that works
        channel by channel (the preprocessing chain).
        """
        traces = self.traces
        if not isinstance(channels, slice):
            index = np.asarray(channels)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            if index.size and np.array_equal(index, np.arange(index[0], index[0] + index.size)):
                channels = slice(int(index[0]), int(index[0]) + index.size)  # zarr's fast path
            else:
                return np.ascontiguousarray(traces.get_orthogonal_selection((slice(start, stop), index)))
        if traces.order == "C":
            return traces[start:stop, channels]
        # channel-major chunks (zstd-delta): copy them into an array of the requested layout
        n_rows = len(range(*slice(start, stop).indices(traces.shape[0])))
        n_cols = len(range(*channels.indices(traces.shape[1])))
        out = np.empty((n_rows, n_cols), dtype=traces.dtype, order="F" if order == "native" else "C")
        return traces.get_basic_selection((slice(start, stop), channels), out=out)
