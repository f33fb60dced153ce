"""The graph on S3: a real S3 endpoint (moto's server) on loopback, sources and asset both there."""

from __future__ import annotations

import numpy as np

from neuropool.cluster import InProcessPool
from neuropool.graphs import run_graph, standard_graph
from neuropool.io import timeseries
from neuropool.io.session import open_session
from neuropool.io.store import DerivedAsset
from tests.tasks.conftest import run_standard

#: The bucket the ``s3`` fixture (tests/tasks/conftest.py) creates for this module.
S3_BUCKET = "lab-data"


def test_decompress_and_preprocess_from_and_to_s3(s3, cbin_session, tmp_path):
    fs, options = s3
    fs.put(str(cbin_session) + "/", f"lab-data/raw/{cbin_session.name}/", recursive=True)
    url = f"s3://lab-data/raw/{cbin_session.name}"
    session = open_session(url, options)
    assert list(session.probes) == ["probe00"] and session.probes["probe00"].endswith(".cbin")
    asset = DerivedAsset.create("s3://lab-data/derived", url, storage_options=options)
    graph = standard_graph(session).subset(until="preprocess")
    report = run_graph(graph, asset, InProcessPool(gpus=0))
    assert report.ok, report.failed()
    assert set(asset.commits()) == {"decompress[probe00]", "preprocess[probe00]"}
    assert fs.exists(f"lab-data/derived/{asset.name}/processing.json")

    local = run_standard(cbin_session, tmp_path / "local")
    local_asset = local.asset
    for name in ("ephys.raw", "ephys.preprocessed"):
        remote = timeseries.TimeseriesStore(asset.dataset_url(name, "probe00"), options)
        here = timeseries.TimeseriesStore(local_asset.dataset_url(name, "probe00"))
        np.testing.assert_array_equal(remote.read(0, remote.n_samples), here.read(0, here.n_samples))
    ds = timeseries.open_dataset(asset.dataset_url("ephys.preprocessed", "probe00"), options)
    assert ds["traces"].dims == ("time", "channel") and ds.sizes["channel"] == 384

    # the source has not changed: a second run skips both nodes
    again = run_graph(graph, DerivedAsset.find_latest("s3://lab-data/derived", url, storage_options=options),
                      InProcessPool(gpus=0))
    assert {r.state for r in again.results.values()} == {"cached"}


def test_scratch_folders_publish_and_fetch_on_object_stores(tmp_path):
    from neuropool.tasks._scratch import fetch, publish, scratch_dir

    local = scratch_dir("t")
    (local / "sub").mkdir()
    (local / "sub" / "a.txt").write_text("hello")
    publish(local, "memory://scratch-test/out")
    assert not local.exists()
    back, temporary = fetch("memory://scratch-test/out")
    assert temporary and (back / "sub" / "a.txt").read_text() == "hello"
    here, temporary = fetch(str(tmp_path))
    assert not temporary and here == tmp_path


def test_an_s3_source_is_decompressed_by_byte_ranges_without_a_local_copy(s3, cbin_session):
    """Every request for the ``.cbin`` is a ranged GET (one mtscomp chunk, or one checksum block),
    and the file crosses the network about twice in all (the data, then the SHA1 check), never
    as a download to local disk."""
    fs, options = s3
    fs.put(str(cbin_session) + "/", f"lab-data/ranges/{cbin_session.name}/", recursive=True)
    url = f"s3://lab-data/ranges/{cbin_session.name}"
    session = open_session(url, options)
    cbin_key = session.probes["probe00"].split("://", 1)[1]
    cbin_size = fs.size(cbin_key)
    gets: list[tuple[str, str | None]] = []

    def record(request, **_):
        gets.append((request.url, request.headers.get("Range")))

    fs.s3.meta.events.register("before-send.s3.GetObject", record)
    try:
        asset = DerivedAsset.create("s3://lab-data/derived-ranges", url, storage_options=options)
        report = run_graph(standard_graph(session).subset(until="decompress"), asset,
                           InProcessPool(gpus=0))
    finally:
        fs.s3.meta.events.unregister("before-send.s3.GetObject", record)
    assert report.ok, report.failed()
    on_cbin = [rng for u, rng in gets if u.endswith(cbin_key.split("/", 1)[1])]
    assert on_cbin and all(rng is not None for rng in on_cbin), on_cbin[:5]
    spans = [int(b) - int(a) + 1 for a, b in (r.decode().split("=")[1].split("-") for r in on_cbin)]
    assert max(spans) <= 16 * 2**20  # no request for the whole file
    assert cbin_size <= sum(spans) <= 2.2 * cbin_size  # read once for data, once for the SHA1
    raw = timeseries.TimeseriesStore(asset.dataset_url("ephys.raw", "probe00"), options)
    assert raw.n_samples > 0 and fs.exists(asset.dataset_url("ephys.raw", "probe00")[5:] + "/.zmetadata")
