"""preprocess: raw store -> cleaned AP band (float32 µV), chunk by chunk with overlap margins.

The chain (ADC phase shift, high-pass, common reference; see
:mod:`neuropool.tasks.preprocessing`) runs on chunk-aligned blocks, each reading its margins from
the raw store, so the output does not depend on the block size and one recording spreads over
every worker. The sync channel is dropped; positions, gains and shifts are carried over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from neuropool.io import timeseries
from neuropool.tasks.base import Params, Resources, Task, TaskContext
from neuropool.tasks.preprocessing import ChannelInfo, PreprocessParams, build_chain


class PreprocessTaskParams(PreprocessParams, Params):
    """The preprocessing chain's parameters plus how the output is chunked."""

    chunk_seconds: float = Field(1.0, gt=0, le=60, description="output zarr chunk length, s")
    chunks_per_block: int = Field(2, ge=1, le=1000, description="zarr chunks computed per work block")
    # float32 µV of cleaned noise barely compresses (1.07x zstd, 1.09x lz4 measured on the demo
    # recording) while zstd costs ~0.15 s per second of 384-channel data: lz4 by default.
    compression: str = Field("lz4", pattern="^(zstd|lz4|none)$")


class Preprocess(Task):
    """Phase shift, high-pass and common reference of the AP band, into a float32 µV store."""

    name = "preprocess"
    version = "1"
    Params = PreprocessTaskParams
    inputs = ("ephys.raw",)
    outputs = ("ephys.preprocessed",)
    default_resources = Resources(cpus=1)

    def chain_params(self) -> PreprocessParams:
        fields = set(PreprocessParams.model_fields)
        return PreprocessParams(**{k: v for k, v in self.params.model_dump().items() if k in fields})

    def setup(self, ctx: TaskContext) -> list[Any]:
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        fs = raw.sampling_frequency
        chunk = max(1, round(self.params.chunk_seconds * fs))
        build_chain(self.chain_params()).check(_channel_info(raw, keep))  # e.g. cut-off above Nyquist
        timeseries.create(
            ctx.outputs["ephys.preprocessed"],
            n_samples=raw.n_samples,
            channel_ids=[raw.channel_ids[i] for i in keep],
            dtype="float32",
            chunk_samples=chunk,
            coords={
                "x": raw.coord("x")[keep], "y": raw.coord("y")[keep], "shank": raw.coord("shank")[keep],
                "gain_uv": np.ones(len(keep)), "adc_shift": np.zeros(len(keep)),
                "is_sync": np.zeros(len(keep), dtype=bool),
            },
            attrs={
                "sampling_frequency": fs,
                "units": "uV",
                "source": ctx.inputs["ephys.raw"].split("@")[-1],
                "probe_type": raw.attrs.get("probe_type", ""),
                "preprocessing": self.chain_params().model_dump(mode="json"),
            },
            compression=self.params.compression,
            storage_options=ctx.storage_options,
        )
        return timeseries.block_ranges(raw.n_samples, chunk, self.params.chunks_per_block)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        start, stop = block
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        info = _channel_info(raw, keep)
        chain = build_chain(self.chain_params())
        out = chain.process(lambda a, b: raw.read(a, b, keep), start, stop, raw.n_samples, info)
        timeseries.write_block(ctx.outputs["ephys.preprocessed"], start, out, ctx.storage_options)
        sum_sq = float(np.einsum("ij,ij->", out, out, dtype=np.float64))  # no float64 copy
        return {"samples": int(out.shape[0]), "sum_sq": sum_sq}

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        timeseries.finalize(ctx.outputs["ephys.preprocessed"], ctx.storage_options)
        store = timeseries.TimeseriesStore(ctx.outputs["ephys.preprocessed"], ctx.storage_options)
        n = store.n_samples * len(store.channel_ids)
        return {
            "n_samples": store.n_samples,
            "n_channels": len(store.channel_ids),
            "rms_uv": round(float(np.sqrt(sum(r["sum_sq"] for r in results) / max(n, 1))), 3),
            "steps": [type(s).__name__ for s in build_chain(self.chain_params()).steps],
        }


def _channel_info(raw: timeseries.TimeseriesStore, keep: np.ndarray) -> ChannelInfo:
    """What the chain needs to know about the kept (ephys) channels of a raw store."""
    return ChannelInfo(
        sampling_frequency=raw.sampling_frequency,
        gains_uv=raw.coord("gain_uv")[keep],
        adc_shifts=raw.coord("adc_shift")[keep],
        positions=raw.positions[keep],
        shank_ids=raw.coord("shank")[keep],
    )
