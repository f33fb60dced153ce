"""preprocess: raw store -> cleaned AP band (float32 µV), chunk by chunk with overlap margins.

Setup detects bad channels once (segments spread over the recording, IBL's features; see
:mod:`neuropool.tasks.preprocessing.bad_channels`), refuses a probe with too many, and ships the
labels with every block. The chain (ADC phase shift, high-pass, interpolation of dead/noisy
channels, common reference or destripe; see :mod:`neuropool.tasks.preprocessing`) then runs on
chunk-aligned blocks, each reading its margins from the raw store, so the output does not depend
on the block size and one recording spreads over every worker. The sync channel is dropped, and
so are the channels the configuration removes (outside the brain; dead/noisy with
``action: remove``); the labels are kept as the ``labels`` channel coordinate and, by channel id,
in the store's ``bad_channels`` attribute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from neuropool.errors import RawDataError
from neuropool.io import timeseries, urls
from neuropool.tasks.base import Params, Resources, Task, TaskContext
from neuropool.tasks.preprocessing import (
    DEAD,
    GOOD,
    LABEL_NAMES,
    NOISY,
    OUTSIDE,
    BadChannelsConfig,
    ChannelInfo,
    PreprocessParams,
    build_chain,
    detect_bad_channels,
)


class PreprocessTaskParams(PreprocessParams, Params):
    """The preprocessing chain's parameters plus how the output is chunked."""

    chunk_seconds: float = Field(1.0, gt=0, le=60, description="output zarr chunk length, s")
    chunks_per_block: int = Field(2, ge=1, le=1000, description="zarr chunks computed per work block")
    # float32 µV of cleaned noise barely compresses (1.07x zstd, 1.09x lz4 measured on the demo
    # recording) while lz4 costs ~0.07 s and zstd ~0.15 s per second of 384-channel data, about
    # a tenth of the whole chain's time: uncompressed by default.
    compression: str = Field("none", pattern="^(zstd|lz4|none)$")


class Preprocess(Task):
    """Clean the AP band into a float32 µV store: filters, bad channels, reference or destripe."""

    name = "preprocess"
    version = "2"
    Params = PreprocessTaskParams
    inputs = ("ephys.raw",)
    outputs = ("ephys.preprocessed", "ephysChannels.labels")
    default_resources = Resources(cpus=1)

    def chain_params(self) -> PreprocessParams:
        fields = set(PreprocessParams.model_fields)
        return PreprocessParams(**{k: v for k, v in self.params.model_dump().items() if k in fields})

    def setup(self, ctx: TaskContext) -> list[Any]:
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        fs = raw.sampling_frequency
        chunk = max(1, round(self.params.chunk_seconds * fs))
        params = self.chain_params()
        info = _channel_info(raw, keep)
        build_chain(params).check(info)  # e.g. a cut-off above Nyquist, before reading anything
        labels, features = self._labels(raw, keep, info)
        out = _output_channels(labels, params.bad_channels)
        coords = {
            "x": raw.coord("x")[keep], "y": raw.coord("y")[keep], "shank": raw.coord("shank")[keep],
            "gain_uv": np.ones(len(keep)), "adc_shift": np.zeros(len(keep)),
            "is_sync": np.zeros(len(keep), dtype=bool), "labels": labels,
        }
        channel_ids = [raw.channel_ids[i] for i in keep]
        timeseries.create(
            ctx.outputs["ephys.preprocessed"],
            n_samples=raw.n_samples,
            channel_ids=[channel_ids[i] for i in out],
            dtype="float32",
            chunk_samples=chunk,
            coords={name: np.asarray(values)[out] for name, values in coords.items()},
            attrs={
                "sampling_frequency": fs,
                "units": "uV",
                "source": ctx.inputs["ephys.raw"].split("@")[-1],
                "probe_type": raw.attrs.get("probe_type", ""),
                "preprocessing": params.model_dump(mode="json"),
                "bad_channels": _bad_channel_summary(channel_ids, labels, features),
            },
            compression=self.params.compression,
            storage_options=ctx.storage_options,
        )
        label_bytes = labels.astype(np.int8).tobytes()
        return [(start, stop, label_bytes)
                for start, stop in timeseries.block_ranges(raw.n_samples, chunk, self.params.chunks_per_block)]

    def _labels(self, raw: timeseries.TimeseriesStore, keep: np.ndarray,
                info: ChannelInfo) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Bad-channel labels of the ephys channels (all good when detection is off); refuse a
        probe with too many bad channels."""
        bad = self.params.bad_channels
        if not bad.detect:
            return np.zeros(len(keep), dtype=np.int8), None
        labels, features = detect_bad_channels(lambda a, b: raw.read(a, b, keep), raw.n_samples,
                                               info, **bad.detector_kwargs())
        n_bad = int(np.count_nonzero(labels != GOOD))
        if n_bad >= bad.max_bad_fraction * len(labels):
            counts = ", ".join(f"{np.count_nonzero(labels == code)} {LABEL_NAMES[code]}"
                               for code in (DEAD, NOISY, OUTSIDE))
            raise RawDataError(
                f"{raw.url}: {n_bad} of {len(labels)} channels are bad ({counts}), at least "
                f"bad_channels.max_bad_fraction={bad.max_bad_fraction:g} of them: the probe may "
                "be broken, unplugged or not in the brain. Raise preprocess.bad_channels."
                "max_bad_fraction, or set preprocess.bad_channels.detect: false, to process it anyway"
            )
        return labels, features

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        start, stop, label_bytes = block
        raw = timeseries.TimeseriesStore(ctx.inputs["ephys.raw"], ctx.storage_options)
        keep = np.flatnonzero(~raw.coord("is_sync"))
        labels = np.frombuffer(label_bytes, dtype=np.int8)
        info = _channel_info(raw, keep).with_labels(labels)
        params = self.chain_params()
        out = build_chain(params).process(lambda a, b: raw.read(a, b, keep, order="native"), start, stop,
                                          raw.n_samples, info)
        columns = _output_channels(labels, params.bad_channels)
        if columns.size != out.shape[1]:
            out = np.ascontiguousarray(out[:, columns])
        timeseries.write_block(ctx.outputs["ephys.preprocessed"], start, out, ctx.storage_options)
        flat = out.reshape(-1)
        sum_sq = float(np.dot(flat, flat))  # BLAS, float32 sums: 1e-4 relative, no copy
        return {"samples": int(out.shape[0]), "sum_sq": sum_sq}

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        timeseries.finalize(ctx.outputs["ephys.preprocessed"], ctx.storage_options)
        store = timeseries.TimeseriesStore(ctx.outputs["ephys.preprocessed"], ctx.storage_options)
        n = store.n_samples * len(store.channel_ids)
        bad = store.attrs.get("bad_channels", {})
        # IBL's _iblqc_ephysChannels.labels: one label per ephys channel, removed ones included
        urls.write_npy(ctx.outputs["ephysChannels.labels"], bad["labels"], ctx.storage_options)
        return {
            "n_samples": store.n_samples,
            "n_channels": len(store.channel_ids),
            "rms_uv": round(float(np.sqrt(sum(r["sum_sq"] for r in results) / max(n, 1))), 3),
            "steps": [type(s).__name__ for s in build_chain(self.chain_params()).steps],
            "bad_channels": {name: len(bad.get(name, [])) for name in ("dead", "noisy", "outside")},
        }


def _output_channels(labels: np.ndarray, bad: BadChannelsConfig) -> np.ndarray:
    """Indices (among the ephys channels) of the channels written to the output."""
    drop = np.zeros(labels.shape, dtype=bool)
    if bad.remove_outside:
        drop |= labels == OUTSIDE
    if bad.action == "remove":
        drop |= np.isin(labels, (DEAD, NOISY))
    return np.flatnonzero(~drop)


def _bad_channel_summary(channel_ids: list[str], labels: np.ndarray,
                         features: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Channel ids by label, and the detection features, for the store's attributes."""
    summary: dict[str, Any] = {
        name: [channel_ids[i] for i in np.flatnonzero(labels == code)]
        for code, name in LABEL_NAMES.items() if code != GOOD
    }
    summary["labels"] = labels.astype(int).tolist()
    summary["detected"] = features is not None
    if features is not None:
        summary["features"] = {k: np.round(np.asarray(v, dtype=float), 6).tolist()
                               for k, v in features.items()}
    return summary


def _channel_info(raw: timeseries.TimeseriesStore, keep: np.ndarray) -> ChannelInfo:
    """What the chain needs to know about the kept (ephys) channels of a raw store."""
    return ChannelInfo(
        sampling_frequency=raw.sampling_frequency,
        gains_uv=raw.coord("gain_uv")[keep],
        adc_shifts=raw.coord("adc_shift")[keep],
        positions=raw.positions[keep],
        shank_ids=raw.coord("shank")[keep],
    )
