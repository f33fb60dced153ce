"""The notebook API: connect, submit (returns at once), status, progress, result, cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import neuropool
from neuropool.errors import ResourceError, TaskFailedError
from neuropool.graphs.graph import Graph
from tests.graphs import toytasks  # noqa: F401


def toy_session(root: Path, name: str, value: float) -> Path:
    raw = root / name
    raw.mkdir(parents=True)
    (raw / "rec.json").write_text(json.dumps({"value": value}))
    return raw


def toy_graph(raw: Path, *, fail: bool = False, slow: float = 0.0, n_slow: int = 4) -> Graph:
    g = Graph({"probe00/ephys.source": str(raw / "rec.json")})
    g.session = {"name": raw.name, "url": str(raw)}
    g.add("toy_source", "probe00", retries=0)
    g.add("toy_double", "probe00", retries=0)
    g.add("toy_fail", "probe00", {"fail": fail}, retries=0)
    if slow:
        g.add("toy_slow", "probe00", {"seconds": slow, "n_blocks": n_slow}, retries=0)
    return g


def test_submit_returns_a_run_with_status_result_and_provenance(tmp_path):
    raw = toy_session(tmp_path / "raw", "s1", 2.0)
    with neuropool.connect("inprocess", gpus=0) as pool:
        run = pool.submit(toy_graph(raw), out=str(tmp_path / "derived"))
        asset = run.result(timeout=60)
        assert run.done() and set(run.status().values()) == {"done"}
        assert asset.read_commit("toy_double[probe00]")["summary"] == {"total": 12.0}
        assert asset.url.startswith(str(tmp_path / "derived" / "s1_processed_"))
        report = run.progress()
        assert report.ok and "done" in repr(run)


def test_result_raises_with_the_failed_node_and_its_error(tmp_path):
    raw = toy_session(tmp_path / "raw", "s1", 2.0)
    with neuropool.connect("inprocess", gpus=0) as pool:
        run = pool.submit(toy_graph(raw, fail=True), out=str(tmp_path / "d"))
        with pytest.raises(TaskFailedError, match=r"toy_fail\[probe00\] failed: .*told to fail"):
            run.result(timeout=60)
        assert run.status()["toy_double[probe00]"] == "done"
        assert "told to fail" in run.errors()["toy_fail[probe00]"]


def test_gpu_graph_is_refused_at_submit_when_no_worker_has_a_gpu(tmp_path):
    raw = toy_session(tmp_path / "raw", "s1", 2.0)
    g = toy_graph(raw)
    g.add("toy_gpu", "probe00")
    with neuropool.connect("inprocess", gpus=0) as pool, pytest.raises(ResourceError, match="GPU"):
        pool.submit(g, out=str(tmp_path / "d"))


def test_concurrent_sessions_share_a_dask_pool_and_cancel_stops_one(tmp_path):
    a = toy_session(tmp_path / "raw", "sa", 1.0)
    b = toy_session(tmp_path / "raw", "sb", 5.0)
    c = toy_session(tmp_path / "raw", "sc", 7.0)
    with neuropool.connect(n_workers=2, threads_per_worker=1, gpus=0) as pool:
        t0 = time.perf_counter()
        run_a = pool.submit(toy_graph(a, slow=1.0, n_slow=2), out=str(tmp_path / "d"))
        run_b = pool.submit(toy_graph(b, slow=1.0, n_slow=2), out=str(tmp_path / "d"))
        assert time.perf_counter() - t0 < 5  # submit returns at once
        assert run_a.result(timeout=120).read_commit("toy_slow[probe00]") is not None
        assert run_b.result(timeout=120).read_commit("toy_double[probe00]")["summary"] == {"total": 30.0}

        run_c = pool.submit(toy_graph(c, slow=3.0, n_slow=8), out=str(tmp_path / "d"))
        deadline = time.time() + 60
        # cancel while toy_slow's blocks run, once toy_double (started beside it) is done
        while (run_c.status()["toy_slow[probe00]"], run_c.status()["toy_double[probe00]"]) != (
                "running", "done") and time.time() < deadline:
            time.sleep(0.1)
        run_c.cancel()
        assert run_c.wait(30)
        assert run_c.status()["toy_slow[probe00]"] == "cancelled"
        assert run_c.status()["toy_double[probe00]"] == "done"
        assert run_c.asset.read_commit("toy_slow[probe00]") is None
        with pytest.raises(TaskFailedError, match="cancelled"):
            run_c.result()


def test_a_block_needing_a_missing_resource_fails_in_bounded_time():
    from neuropool.cluster.dask import DaskPool

    with DaskPool(n_workers=1, gpus=0, no_workers_timeout=2) as pool:
        t0 = time.perf_counter()
        fut = pool.submit(sum, [1, 2], resources={"GPU": 1})
        pool.wait([fut], timeout=60)
        assert fut.done() and fut.exception() is not None
        assert "GPU" in str(fut.exception()) or "valid" in type(fut.exception()).__name__.lower()
        assert time.perf_counter() - t0 < 30


def test_concurrent_runs_leave_dask_global_config_alone(tmp_path):
    import dask

    before = dask.config.get("scheduler", None)
    runs = []
    with neuropool.connect(n_workers=2, threads_per_worker=1, gpus=0) as pool:
        for i in range(3):
            raw = toy_session(tmp_path / "raw", f"s{i}", float(i))
            runs.append(pool.submit(toy_graph(raw, slow=0.3, n_slow=3), out=str(tmp_path / "d")))
        for run in runs:
            run.result(timeout=120)
    assert dask.config.get("scheduler", None) == before
