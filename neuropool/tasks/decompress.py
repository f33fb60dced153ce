"""decompress: any supported raw recording -> a chunked raw zarr store (int16, time x channel).

Blocks are chunk-aligned sample ranges, read by byte ranges through fsspec and written as whole
zarr chunks, so one recording spreads over every worker; a separate block verifies the source's
checksum where the format records one. The output keeps every saved column (sync included) and
carries positions, gains, ADC shifts and the raw header.

``decompress_lf`` is the same task for a probe's separate LF stream (SpikeGLX ``.lf`` of NP1 and
3A probes, 2.5 kHz): ``ephys.sourceLf`` -> ``raw_lf.zarr``, read by ``lfp`` and ``raw_qc``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import Field

from neuropool.io import timeseries
from neuropool.io.readers import open_raw
from neuropool.tasks.base import Params, Resources, Task, TaskContext


class DecompressParams(Params):
    """Parameters of :class:`Decompress`."""

    chunk_seconds: float = Field(1.0, gt=0, le=60, description="zarr chunk length along time, s")
    chunks_per_block: int = Field(1, ge=1, le=1000, description="zarr chunks written per work block")
    compression: Literal["zstd-delta", "zstd", "lz4", "wavpack", "none"] = Field(
        "zstd-delta",
        description="codec of the raw store (neuropool.io.codecs): zstd-delta (time delta + zstd, "
        "the smallest Blosc choice on real data: benchmarks/README.md, Storage), zstd, lz4 (fastest), "
        "wavpack (smallest, slowest; pip install 'neuropool[wavpack]'), none")
    verify_checksum: bool = Field(True, description="check the source's SHA1 where it has one")


class Decompress(Task):
    """Read a raw recording (mtscomp ``.cbin``, SpikeGLX ``.bin``, Open Ephys) into a zarr store."""

    name = "decompress"
    version = "1"
    Params = DecompressParams
    inputs = ("ephys.source",)
    outputs = ("ephys.raw",)
    default_resources = Resources(cpus=1)

    def setup(self, ctx: TaskContext) -> list[Any]:
        reader = open_raw(ctx.inputs[self.inputs[0]], storage_options=ctx.storage_options)
        info = reader.info
        probe_file = ctx.info.get("probe", {}).get("probe_file")
        if probe_file:
            _apply_probe_file(info, probe_file, ctx)
        chunk = max(1, round(self.params.chunk_seconds * info.sampling_frequency))
        timeseries.create(
            ctx.outputs[self.outputs[0]],
            n_samples=info.n_samples,
            channel_ids=list(info.channel_ids),
            dtype=info.dtype,
            chunk_samples=chunk,
            coords={
                "x": info.positions[:, 0], "y": info.positions[:, 1], "shank": info.shank_ids,
                "gain_uv": info.gains_uv, "adc_shift": info.adc_shifts, "is_sync": info.is_sync,
            },
            attrs={
                "sampling_frequency": float(info.sampling_frequency),
                "units": "adc",
                "format": info.format,
                "source": info.url.split("@")[-1],
                "probe_type": info.probe_type,
                "metadata": json.loads(json.dumps(info.metadata, default=str)),
            },
            compression=self.params.compression,
            storage_options=ctx.storage_options,
        )
        blocks: list[Any] = [("read", reader, s, e)
                             for s, e in timeseries.block_ranges(info.n_samples, chunk, self.params.chunks_per_block)]
        if self.params.verify_checksum:
            blocks.append(("verify", reader, 0, 0))
        return blocks

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        kind, reader, start, stop = block
        if kind == "verify":
            return {"verified": bool(reader.verify())}
        url = ctx.outputs[self.outputs[0]]
        time_diffs = getattr(reader, "time_diffs", None)  # mtscomp: its chunks are time differences
        if self.params.compression == "zstd-delta" and time_diffs is not None:
            diffs = time_diffs(start, stop)  # None unless [start, stop) is one mtscomp chunk
            if diffs is not None and timeseries.write_time_diffs(url, start, diffs, ctx.storage_options):
                return {"samples": int(stop - start)}  # no cumulative sum, no re-differencing
        data = reader.read(start, stop)
        timeseries.write_block(url, start, data, ctx.storage_options)
        return {"samples": int(data.shape[0])}

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        timeseries.finalize(ctx.outputs[self.outputs[0]], ctx.storage_options)
        store = timeseries.TimeseriesStore(ctx.outputs[self.outputs[0]], ctx.storage_options)
        written = sum(r.get("samples", 0) for r in results)
        if written != store.n_samples:
            raise RuntimeError(f"{ctx.node}: wrote {written} samples, expected {store.n_samples}")
        return {
            "format": store.attrs["format"],
            "n_samples": store.n_samples,
            "n_channels": len(store.channel_ids),
            "n_sync_channels": int(np.sum(store.coord("is_sync"))),
            "sampling_frequency": store.sampling_frequency,
            "duration_s": round(store.n_samples / store.sampling_frequency, 6),
            "checksum_verified": any(r.get("verified") for r in results),
        }


class DecompressLf(Decompress):
    """Read a probe's separate LF stream (SpikeGLX ``.lf.cbin`` / ``.lf.bin``) into a zarr store."""

    name = "decompress_lf"
    inputs = ("ephys.sourceLf",)
    outputs = ("ephys.rawLf",)


def _apply_probe_file(info: Any, probe_file: str, ctx: TaskContext) -> None:
    """Take contact positions and shanks from a probeinterface JSON named in ``session.json``.

    The probe's ``device_channel_indices`` map its contacts to the recording's ephys columns.
    """
    import probeinterface

    from neuropool.errors import MetadataError
    from neuropool.io import urls

    url = probe_file if "://" in probe_file or probe_file.startswith("/") else urls.join(
        ctx.info.get("session", {}).get("url", ""), probe_file)
    fs, path = urls.get_fs(url, ctx.storage_options)
    try:
        with fs.open(path, "r") as f:
            group = probeinterface.ProbeGroup.from_dict(json.load(f))
    except FileNotFoundError:
        raise MetadataError(f"{url}: probe file named in session.json not found") from None
    except (ValueError, KeyError) as e:
        raise MetadataError(f"{url}: not a probeinterface JSON file ({e})") from None
    probe = group.probes[0]
    ephys = np.flatnonzero(~info.is_sync)
    index = probe.device_channel_indices
    if index is None or len(probe.contact_positions) != len(ephys):
        raise MetadataError(
            f"{url}: the probe has {len(probe.contact_positions)} contacts wired to "
            f"{'no' if index is None else len(index)} channels; the recording has {len(ephys)} "
            "ephys channels: each must be wired once (set device_channel_indices)")
    positions = np.full((info.n_channels, 2), np.nan)
    shanks = np.zeros(info.n_channels, dtype=int)
    positions[ephys[index]] = probe.contact_positions[:, :2]
    if probe.shank_ids is not None and len(probe.shank_ids) and probe.shank_ids[0] != "":
        shanks[ephys[index]] = np.asarray(probe.shank_ids, dtype=int)
    info.positions, info.shank_ids = positions, shanks
