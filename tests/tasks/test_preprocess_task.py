"""The preprocess task end to end on a raw store with planted bad channels: labels stored, the
channels each preset removes, the IBL labels file, refusal of a broken probe, and the presets."""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuropool.errors import RawDataError
from neuropool.io import timeseries
from neuropool.tasks import get_task
from neuropool.tasks.base import TaskContext
from neuropool.tasks.preprocessing import (
    GOOD,
    OUTSIDE,
    CommonReference,
    HighPass,
    InterpolateBadChannels,
    PhaseShift,
    PreprocessParams,
    SpatialHighPass,
    build_chain,
)
from tests.tasks.test_bad_channels import FS, N_CHANNELS, np1_data

FAST = {"bad_channels": {"n_segments": 3, "segment_seconds": 0.3}}


def raw_store(url: str, raw: np.ndarray, positions: np.ndarray) -> str:
    """A raw store as decompress writes it (int16, a sync column last) from ``np1_data``."""
    n, c = raw.shape
    data = np.zeros((n, c + 1), dtype=np.int16)
    data[:, :c] = raw
    timeseries.create(
        url, n_samples=n, channel_ids=[f"AP{i}" for i in range(c)] + ["SY0"], dtype="int16",
        chunk_samples=int(FS // 2),
        coords={"x": np.r_[positions[:, 0], np.nan], "y": np.r_[positions[:, 1], np.nan],
                "shank": np.zeros(c + 1, int), "gain_uv": np.r_[np.full(c, 2.34375), 1.0],
                "adc_shift": np.zeros(c + 1), "is_sync": np.arange(c + 1) == c},
        attrs={"sampling_frequency": FS, "units": "adc", "probe_type": "NP1"},
    )
    timeseries.write_block(url, 0, data)
    timeseries.finalize(url)
    return url


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[str, np.ndarray, Path]:
    raw, info, truth = np1_data()
    folder = tmp_path_factory.mktemp("planted")
    return raw_store(str(folder / "raw.zarr"), raw, info.positions), truth, folder


def run_preprocess(params: dict, raw_url: str, folder: Path,
                   workers: ProcessPoolExecutor | None = None) -> tuple[dict, timeseries.TimeseriesStore]:
    """setup, every block, finish; the blocks in shuffled order on ``workers`` when given."""
    task = get_task("preprocess")(params)
    ctx = TaskContext(node="preprocess[probe00]", probe="probe00", inputs={"ephys.raw": raw_url},
                      outputs={"ephys.preprocessed": str(folder / "preprocessed.zarr"),
                               "ephysChannels.labels": str(folder / "_iblqc_ephysChannels.labels.npy")})
    blocks = task.setup(ctx)
    if workers is None:
        results = [task.run_block(ctx, b) for b in blocks]
    else:
        random.Random(len(blocks)).shuffle(blocks)
        results = list(workers.map(task.run_block, [ctx] * len(blocks), blocks))
    summary = task.finish(ctx, results)
    return summary, timeseries.TimeseriesStore(ctx.outputs["ephys.preprocessed"])


def test_default_chain_labels_interpolates_and_drops_outside_channels(planted, tmp_path):
    raw_url, truth, _ = planted
    summary, store = run_preprocess(FAST, raw_url, tmp_path)
    assert summary["bad_channels"] == {"dead": 4, "noisy": 4, "outside": 40}
    labels = np.load(tmp_path / "_iblqc_ephysChannels.labels.npy")
    np.testing.assert_array_equal(labels, truth)  # every ephys channel, the removed ones too
    kept = np.flatnonzero(truth != OUTSIDE)
    assert store.channel_ids == [f"AP{i}" for i in kept]
    np.testing.assert_array_equal(store.coord("labels"), truth[kept])
    assert store.attrs["bad_channels"]["dead"] == ["AP10", "AP101", "AP102", "AP250"]
    traces = store.read(0, store.n_samples).astype(np.float64)
    good = np.flatnonzero(store.coord("labels") == GOOD)
    for channel in np.flatnonzero(store.coord("labels") != GOOD):  # now a mix of good neighbours
        near = good[np.argsort(np.abs(good - channel))[:4]]
        r = np.corrcoef(traces[:, channel], traces[:, near].mean(axis=1))[0, 1]
        assert r > 0.7, (store.channel_ids[channel], r)
    rms = np.sqrt(np.mean(traces**2, axis=0))
    noisy_psd = np.isin(kept, [50, 200, 201])
    assert rms[noisy_psd].max() < np.median(rms[good])  # their 40 µV of noise is gone


def test_aind_preset_removes_dead_and_noisy_channels_after_the_reference(planted, tmp_path):
    raw_url, truth, _ = planted
    summary, store = run_preprocess({"preset": "aind", **FAST}, raw_url, tmp_path)
    assert summary["steps"] == ["PhaseShift", "HighPass", "CommonReference"]
    assert store.channel_ids == [f"AP{i}" for i in np.flatnonzero(truth == GOOD)]
    assert store.attrs["preprocessing"]["highpass_order"] == 5  # SpikeInterface's, as AIND runs it


def test_ibl_preset_keeps_every_channel_and_destripes(planted, tmp_path):
    raw_url, truth, _ = planted
    summary, store = run_preprocess({"preset": "ibl", **FAST}, raw_url, tmp_path)
    assert summary["steps"] == ["PhaseShift", "HighPass", "InterpolateBadChannels", "SpatialHighPass"]
    assert len(store.channel_ids) == N_CHANNELS
    np.testing.assert_array_equal(store.coord("labels"), truth)
    # the common signal (20 µV, shared by every channel in the brain) is gone after destriping
    traces = store.read(0, store.n_samples).astype(np.float64)
    inside = np.flatnonzero(truth == GOOD)
    common = np.median(traces[:, inside], axis=1)
    assert np.sqrt(np.mean(common**2)) < 2.0


def test_a_probe_with_too_many_bad_channels_is_refused_with_the_counts(planted, tmp_path):
    raw_url, _, folder = planted
    with pytest.raises(RawDataError, match=r"48 of 384 channels are bad \(4 dead, 4 noisy, 40 outside\)"):
        run_preprocess({"bad_channels": {**FAST["bad_channels"], "max_bad_fraction": 0.1}},
                       raw_url, tmp_path)
    assert not (tmp_path / "preprocessed.zarr").exists()  # refused before anything is written


def test_detection_off_keeps_every_channel_unlabelled(planted, tmp_path):
    raw_url, _, _ = planted
    summary, store = run_preprocess({"bad_channels": {"detect": False}}, raw_url, tmp_path)
    assert summary["steps"] == ["PhaseShift", "HighPass", "CommonReference"]
    assert len(store.channel_ids) == N_CHANNELS and not store.coord("labels").any()
    assert store.attrs["bad_channels"]["detected"] is False


# -- independent of the chunking and of the workers -----------------------------------------------


@pytest.fixture(scope="module")
def reference_outputs(planted, tmp_path_factory) -> dict[str, np.ndarray]:
    """Each chain in one process, with 1 s blocks."""
    raw_url = planted[0]
    out = {}
    for name, params in CHAINS.items():
        folder = tmp_path_factory.mktemp(f"reference-{name}")
        _, store = run_preprocess({**params, **FAST}, raw_url, folder)
        out[name] = store.read(0, store.n_samples)
    return out


CHAINS = {"default": {}, "ibl": {"preset": "ibl"}, "local": {"reference": "local"}}


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=st.sampled_from(sorted(CHAINS)), chunk_ms=st.integers(min_value=100, max_value=900),
       per_block=st.integers(min_value=1, max_value=4), two_workers=st.booleans())
def test_output_does_not_depend_on_chunks_or_workers(planted, reference_outputs, tmp_path_factory,
                                                     chain, chunk_ms, per_block, two_workers):
    params = {**CHAINS[chain], **FAST, "chunk_seconds": chunk_ms / 1000, "chunks_per_block": per_block}
    folder = tmp_path_factory.mktemp("chunked")
    if two_workers:  # two worker processes, blocks in shuffled order
        with ProcessPoolExecutor(2) as workers:
            _, store = run_preprocess(params, planted[0], folder, workers)
    else:
        _, store = run_preprocess(params, planted[0], folder)
    ours, reference = store.read(0, store.n_samples), reference_outputs[chain]
    worst = np.abs(ours - reference).max() / np.sqrt(np.mean(reference.astype(np.float64) ** 2))
    assert worst < 1e-4, (chain, chunk_ms, per_block, two_workers, worst)


# -- parameters and presets -----------------------------------------------------------------------


def test_presets_set_their_published_parameters_and_fields_override_them():
    ibl = PreprocessParams(preset="ibl")
    assert (ibl.reference, ibl.highpass_order, ibl.bad_channels.highpass_freq) == ("destripe", 3, 300)
    assert (ibl.bad_channels.outside_threshold, ibl.bad_channels.remove_outside) == (-0.75, False)
    aind = PreprocessParams(preset="aind", bad_channels={"outside_threshold": -0.5})
    assert (aind.reference, aind.highpass_order, aind.bad_channels.action) == ("global", 5, "remove")
    assert aind.bad_channels.outside_threshold == -0.5  # the file's value wins over the preset's
    assert aind.bad_channels.dead_threshold == -0.5  # the rest of the preset's section stays
    steps = build_chain(PreprocessParams(reference="local", lowpass_freq=6000.0)).steps
    assert [type(s) for s in steps] == [PhaseShift, HighPass, InterpolateBadChannels, CommonReference]
    assert steps[1].freq_max == 6000.0 and steps[-1].reference == "local"
    assert [type(s) for s in build_chain(PreprocessParams(preset="ibl")).steps][-1] is SpatialHighPass


@pytest.mark.parametrize(
    "params, field",
    [
        ({"preset": "allen"}, "preset"),
        ({"lowpass_freq": 200.0}, "lowpass_freq"),
        ({"local_radius_um": (60, 30)}, "local_radius_um"),
        ({"bad_channels": {"action": "drop"}}, "action"),
        ({"bad_channels": {"max_bad_fraction": 0}}, "max_bad_fraction"),
        ({"destripe": {"cutoff": 1.5}}, "cutoff"),
        ({"reference": "destripe", "destripe": {"bogus": 1}}, "bogus"),
    ],
)
def test_invalid_parameters_name_the_field(params, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        PreprocessParams(**params)
