"""Kriging interpolation of bad channels: neuropool's step vs SpikeInterface's, per 1-s block.

The same block (30,000 samples x 384 NP1 channels, float32: a spatially smooth field plus noise)
with 8 dead channels goes through ``InterpolateBadChannels.apply`` (in the C layout and in the
channel-major layout the chain hands it) and through SpikeInterface's
``interpolate_bad_channels(...).get_traces()`` on an in-memory recording. Times are the best of
``--repeat`` runs on one thread (the machine may be shared); the ratio is SpikeInterface's time
over ours, taken in the same run.

Usage: ``python benchmarks/bench_interpolate.py [--repeat 7]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

FS = 30000.0
N_CHANNELS = 384
BAD = [3, 10, 11, 12, 100, 200, 201, 383]


def best(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls, s."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    import spikeinterface.core as si
    import spikeinterface.preprocessing as spre
    from probeinterface import Probe

    from neuropool.tasks.preprocessing import ChannelInfo
    from neuropool.tasks.preprocessing.base import DEAD
    from neuropool.tasks.preprocessing.interpolate import InterpolateBadChannels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    i = np.arange(N_CHANNELS)
    positions = np.column_stack([np.array([43.0, 11.0, 59.0, 27.0])[i % 4], 20.0 * (i // 2)])
    rng = np.random.default_rng(0)
    field = np.sin(2 * np.pi * positions[:, 1] / 400.0)[None, :] * rng.normal(0, 30, (int(FS), 1))
    x = (field + rng.normal(0.0, 10.0, (int(FS), N_CHANNELS))).astype(np.float32)
    labels = np.zeros(N_CHANNELS, np.int8)
    labels[BAD] = DEAD
    info = ChannelInfo(FS, np.ones(N_CHANNELS), np.zeros(N_CHANNELS), positions, labels, None)
    step = InterpolateBadChannels()

    rec = si.NumpyRecording([x], FS)
    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=positions, shapes="circle", shape_params={"radius": 6})
    probe.set_device_channel_indices(i)
    rec.set_probe(probe, in_place=True)
    interpolated = spre.interpolate_bad_channels(rec, rec.channel_ids[BAD])

    with threadpool_limits(1):
        ours_c = best(lambda: step.apply(x, info), args.repeat)
        channel_major = np.ascontiguousarray(x.T).T
        ours_f = best(lambda: step.apply(channel_major, info), args.repeat)
        theirs = best(lambda: interpolated.get_traces(0, 0, int(FS)), args.repeat)
    print("| block | neuropool (C layout) | neuropool (channel-major) | SpikeInterface | ratio |")
    print("|---|---|---|---|---|")
    print(f"| 1 s x 384 ch, 8 dead | {ours_c * 1e3:.1f} ms | {ours_f * 1e3:.1f} ms | "
          f"{theirs * 1e3:.1f} ms | {theirs / max(ours_c, ours_f):.1f}x |")


if __name__ == "__main__":
    main()
