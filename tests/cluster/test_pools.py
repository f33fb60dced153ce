"""Pools: connect-or-start rules, resources advertised and honoured, futures, on real Dask processes."""

from __future__ import annotations

import os

import pytest

from neuropool.cluster import InProcessPool, connect
from neuropool.errors import ConfigError


def whoami() -> int:
    return os.getpid()


def boom() -> None:
    raise RuntimeError("boom")


def test_in_process_pool_runs_here_and_retries():
    pool = InProcessPool(gpus=0)
    fut = pool.submit(whoami)
    assert fut.result() == os.getpid()
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("transient")
        return "ok"

    assert pool.submit(flaky, retries=2).result() == "ok" and len(calls) == 3
    fut = pool.submit(boom, retries=1)
    assert isinstance(fut.exception(), RuntimeError)
    assert pool.worker_resources() == [{"GPU": 0.0}]


def test_dask_pool_takes_one_of_address_or_cluster():
    from neuropool.cluster.dask import DaskPool

    with pytest.raises(ConfigError, match="one of address= or cluster=, got both"):
        DaskPool("tcp://127.0.0.1:1", cluster=object())
    with pytest.raises(ConfigError, match="n_workers only apply to a LocalCluster"):
        DaskPool("tcp://127.0.0.1:1", n_workers=2)


def test_dask_local_cluster_runs_in_other_processes_and_routes_gpu_work():
    with connect(n_workers=2, threads_per_worker=1, gpus=1) as pool:
        resources = pool.worker_resources()
        assert len(resources) == 2
        assert sorted(r.get("GPU", 0) for r in resources) == [0, 1]
        pids = {pool.submit(whoami, key=f"w{i}").result() for i in range(4)}
        assert os.getpid() not in pids
        gpu_worker = [a for a, w in pool.client.scheduler_info(n_workers=-1)["workers"].items()
                      if w["resources"].get("GPU")]
        fut = pool.submit(whoami, resources={"GPU": 1}, key="gpu")
        assert pool.client.who_has(fut)  # ran, and its result lives on the GPU worker
        fut.result()
        assert set(pool.client.who_has(fut)[fut.key]) == set(gpu_worker)
        bad = pool.submit(boom, retries=1)
        done, _ = pool.wait([bad])
        assert bad in done and isinstance(bad.exception(), RuntimeError)


def test_provenance_names_the_worker_that_ran_each_node(tmp_path):
    import json

    from neuropool.graphs.graph import Graph
    from neuropool.graphs.runner import run_graph
    from neuropool.io.store import DerivedAsset
    from tests.graphs import toytasks  # noqa: F401

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.json").write_text(json.dumps({"value": 1}))
    g = Graph({"probe00/ephys.source": str(tmp_path / "raw" / "a.json")})
    g.add("toy_source", "probe00")
    asset = DerivedAsset.create(str(tmp_path / "d"), str(tmp_path / "raw"))
    with connect(n_workers=1, threads_per_worker=1, gpus=0) as pool:
        names = [w["name"] for w in pool.client.scheduler_info(n_workers=-1)["workers"].values()]
        assert run_graph(g, asset, pool).ok
    hosts = asset.read_processing()["processing_pipeline"]["data_processes"][0]["host"]
    assert hosts == [f"{__import__('socket').gethostname()}/dask:{names[0]}"]
