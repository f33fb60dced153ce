"""Small generated recordings with known units, written as preprocessed stores, for the tests of
sort, qc, localize and the exports (fast: tens of seconds on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuropool.io import spec, timeseries
from neuropool.tasks import get_task
from neuropool.tasks.base import TaskContext


def write_store(url: str, recording, chunk_seconds: float = 1.0) -> str:
    """Write a SpikeInterface recording (µV, float32) as a preprocessed neuropool store."""
    traces = recording.get_traces(return_in_uV=False).astype(np.float32)
    locations = recording.get_channel_locations()
    n_channels = recording.get_num_channels()
    fs = recording.sampling_frequency
    timeseries.create(
        url, n_samples=len(traces), channel_ids=[f"AP{i}" for i in range(n_channels)],
        dtype="float32", chunk_samples=int(fs * chunk_seconds),
        coords={"x": locations[:, 0], "y": locations[:, 1], "shank": np.zeros(n_channels, dtype=int),
                "gain_uv": np.ones(n_channels), "adc_shift": np.zeros(n_channels),
                "is_sync": np.zeros(n_channels, dtype=bool)},
        attrs={"sampling_frequency": fs, "units": "uV", "probe_type": "NP1"},
        compression="none",
    )
    timeseries.write_block(url, 0, traces)
    timeseries.finalize(url)
    return url


def ground_truth(duration: float = 20.0, units: int = 8, channels: int = 32, seed: int = 0,
                 noise_uv: float = 10.0):
    """A generated recording (NP1-like columns, 20 µm apart) and its true sorting."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.core import generate_ground_truth_recording

    probe = generate_multi_columns_probe(num_columns=2, num_contact_per_column=channels // 2,
                                         xpitch=32, ypitch=20, contact_shapes="square",
                                         contact_shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(channels))
    recording, sorting = generate_ground_truth_recording(
        durations=[duration], num_units=units, probe=probe, seed=seed,
        noise_kwargs={"noise_levels": noise_uv, "strategy": "on_the_fly"},
        generate_sorting_kwargs={"firing_rates": (4.0, 12.0), "refractory_period_ms": 2.0},
    )
    return recording, sorting


def run_task(name: str, params: dict, inputs: dict[str, str], folder: Path,
             info: dict | None = None) -> dict:
    """Run one per-probe task's setup, blocks and finish here; outputs go under ``folder``."""
    cls = get_task(name)
    task = cls(params)
    ctx = TaskContext(node=f"{name}[probe00]", probe="probe00", inputs=inputs,
                      outputs={d: str(folder / spec.DATASET_PATHS.get(d, d)) for d in cls.outputs},
                      info=info or {})
    return task.finish(ctx, [task.run_block(ctx, b) for b in task.setup(ctx)])
