"""``neuropool.connect().submit(SESSION_URL)``: the standard graph of a session, in the background."""

from __future__ import annotations

import neuropool
from neuropool.io.timeseries import open_dataset


def test_submit_a_session_url_and_open_the_result_with_xarray(cbin_session, tmp_path):
    with neuropool.connect("inprocess", gpus=0) as pool:
        run = pool.submit(str(cbin_session), out=str(tmp_path / "derived"), until="preprocess",
                          config={"preprocess": {"highpass_freq": 400}})
        asset = run.result(timeout=120)
    assert set(run.status()) == {"decompress[probe00]", "preprocess[probe00]"}
    ds = open_dataset(asset.dataset_url("ephys.preprocessed", "probe00"))
    assert ds["traces"].dims == ("time", "channel") and ds.sizes["channel"] == 384
    assert ds.attrs["preprocessing"]["highpass_freq"] == 400.0
    # the same session again resumes the same asset, and skips everything
    with neuropool.connect("inprocess", gpus=0) as pool:
        again = pool.submit(str(cbin_session), out=str(tmp_path / "derived"), until="preprocess",
                            config={"preprocess": {"highpass_freq": 400}})
        assert again.result(timeout=120).url == asset.url
    assert set(again.status().values()) == {"cached"}
