"""A SpikeInterface recording backed by a neuropool time series store.

Sorters and the SortingAnalyzer take SpikeInterface recordings; this one reads our zarr stores
chunk by chunk (nothing is loaded whole) and pickles as a recipe (the URL), so it can be sent to a
worker or saved in a sorter's folder. Credentials in ``storage_options`` are kept out of
``to_dict()`` output written by neuropool's provenance (see ``public_kwargs``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikeinterface.core import BaseRecording, BaseRecordingSegment

from neuropool.io.timeseries import TimeseriesStore


class StoreRecording(BaseRecording):
    """The ephys (non-sync) channels of a neuropool store, as a SpikeInterface recording.

    Parameters
    ----------
    url : str
        URL of a store written by ``neuropool.io.timeseries``.
    storage_options : dict, optional
        fsspec options (credentials, endpoint).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        store = TimeseriesStore(url, storage_options)
        keep = np.flatnonzero(~store.coord("is_sync"))
        ids = np.asarray(store.channel_ids)[keep]
        BaseRecording.__init__(self, store.sampling_frequency, list(ids), store.traces.dtype)
        self.set_channel_gains(store.coord("gain_uv")[keep])
        self.set_channel_offsets(np.zeros(len(keep)))
        positions = store.positions[keep]
        if np.all(np.isfinite(positions)):
            self.set_dummy_probe_from_locations(positions, shape="square", shape_params={"width": 12})
        self.set_property("shank", store.coord("shank")[keep])
        self.set_property("inter_sample_shift", store.coord("adc_shift")[keep])
        self.add_recording_segment(_StoreSegment(store, keep))
        self._kwargs = {"url": url, "storage_options": storage_options}

    def public_kwargs(self) -> dict[str, Any]:
        """Constructor arguments without credentials, fit for provenance."""
        return {"url": self._kwargs["url"]}


class _StoreSegment(BaseRecordingSegment):
    def __init__(self, store: TimeseriesStore, keep: np.ndarray) -> None:
        BaseRecordingSegment.__init__(self, sampling_frequency=store.sampling_frequency)
        self._store = store
        self._keep = keep

    def get_num_samples(self) -> int:
        return self._store.n_samples

    def get_traces(self, start_frame: int | None, end_frame: int | None, channel_indices: Any) -> np.ndarray:
        start = 0 if start_frame is None else int(start_frame)
        stop = self._store.n_samples if end_frame is None else int(end_frame)
        cols = self._keep if channel_indices is None else self._keep[channel_indices]
        return self._store.read(start, stop, np.asarray(cols))
