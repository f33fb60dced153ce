"""The preprocessing chain's fast paths equal its plain ones: FFT filters at the recording's edges,
the tiled global reference."""

from __future__ import annotations

import numpy as np
import pytest

from neuropool.tasks.preprocessing import PreprocessParams, build_chain, chain
from neuropool.tasks.preprocessing.common_reference import _median_across_channels, _subtract_global

from .test_preprocessing import BLOCK_INDEPENDENCE, SMALL, errors, synthetic


def test_edge_blocks_run_the_fft_path_away_from_the_edge(monkeypatch):
    raw, info = synthetic(**SMALL)
    n = raw.shape[0]
    ch = build_chain(PreprocessParams())
    margin = ch.margin(info.sampling_frequency)
    lengths = []
    fused = chain.apply_responses
    monkeypatch.setattr(chain, "apply_responses",
                        lambda block, *a: lengths.append(block.shape[0]) or fused(block, *a))
    read = lambda a, b: raw[a:b]  # noqa: E731
    whole = ch.process(read, 0, n, n, info)
    # one FFT over everything but the first and last margin + 1 samples, plus its margins
    assert lengths == [n - 2 * (margin + 1) + 2 * margin]
    reference = ch.process(read, 0, n, n, info, fft=False)
    assert errors(whole, reference)[0] < BLOCK_INDEPENDENCE
    lengths.clear()
    head = ch.process(read, 0, 5_000, n, info)  # a first block: the fast path from margin + 1 on
    assert lengths == [5_000 - (margin + 1) + 2 * margin]
    np.testing.assert_allclose(head, whole[:5_000], atol=1e-4 * np.sqrt(np.mean(whole**2)))
    lengths.clear()
    ch.process(read, 0, margin, n, info)  # all of it near the edge: step by step only
    assert lengths == []


@pytest.mark.parametrize("median", [True, False])
@pytest.mark.parametrize("outside", ["none", "top", "scattered"])
def test_tiled_global_reference(median, outside):
    rng = np.random.default_rng(7)
    channel_major = rng.normal(size=(64, 1_000)).astype(np.float32) * 20
    block = channel_major.T  # what the FFT path hands over: a time-major view
    inside = np.ones(64, dtype=bool)
    if outside == "top":
        inside[55:] = False
    elif outside == "scattered":
        inside[[3, 40]] = False
    ours = _subtract_global(block, inside, median)
    assert ours.flags.c_contiguous and ours.dtype == np.float32
    x = np.ascontiguousarray(block)
    if median:
        ref = np.median(x[:, inside], axis=1)
        np.testing.assert_array_equal(_median_across_channels(x[:, inside]), ref.astype(np.float32))
        np.testing.assert_array_equal(ours, x - ref[:, None].astype(np.float32))  # bit for bit
    else:
        np.testing.assert_allclose(ours, x - x[:, inside].mean(axis=1, keepdims=True), atol=1e-4)
