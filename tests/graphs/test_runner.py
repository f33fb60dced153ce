"""The runner: commits, skipping, re-running on change, failures isolated, on in-process and Dask."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from neuropool.cluster import InProcessPool
from neuropool.graphs.graph import Graph
from neuropool.graphs.runner import run_graph
from neuropool.io.store import DerivedAsset
from tests.graphs import toytasks  # noqa: F401  (registers the toy tasks)


def counts(d: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in d.iterdir()}


@pytest.fixture
def setup(tmp_path: Path):
    raw = tmp_path / "raw" / "session1"
    raw.mkdir(parents=True)
    (raw / "a.json").write_text(json.dumps({"value": 3}))
    (raw / "b.json").write_text(json.dumps({"value": 5}))
    counter = tmp_path / "counts"
    counter.mkdir()
    asset = DerivedAsset.create(str(tmp_path / "out"), str(raw))

    def graph(factor: float = 2.0, fail_b: bool = True) -> Graph:
        g = Graph({"probe00/ephys.source": str(raw / "a.json"), "probe01/ephys.source": str(raw / "b.json")})
        for probe, fail in (("probe00", False), ("probe01", fail_b)):
            g.add("toy_source", probe, {"counter_dir": str(counter)}, retries=0)
            g.add("toy_double", probe, {"factor": factor, "counter_dir": str(counter)}, retries=0)
            g.add("toy_fail", probe, {"fail": fail, "counter_dir": str(counter)}, retries=0)
        return g

    return graph, asset, counter, raw


def test_runs_commits_and_isolates_a_failure(setup):
    graph, asset, counter, _ = setup
    report = run_graph(graph(), asset, InProcessPool(gpus=0))
    states = {k: r.state for k, r in report.results.items()}
    assert states == {
        "toy_source[probe00]": "done", "toy_double[probe00]": "done", "toy_fail[probe00]": "done",
        "toy_source[probe01]": "done", "toy_double[probe01]": "done", "toy_fail[probe01]": "failed",
    }
    assert not report.ok
    err = report.results["toy_fail[probe01]"].error
    assert "ValueError" in err and "told to fail" in err and "probe01" in err
    # outputs of every block, and the summary computed by finish
    assert report.results["toy_double[probe00]"].summary == {"total": 18.0}
    assert set(asset.commits()) == {n for n, s in states.items() if s == "done"}
    # processing.json describes exactly what is committed, with the graph that ran
    doc = asset.read_processing()
    procs = doc["processing_pipeline"]["data_processes"]
    assert {p["node"] for p in procs} == set(asset.commits())
    rec = next(p for p in procs if p["node"] == "toy_double[probe00]")
    assert rec["parameters"]["factor"] == 2.0 and rec["version"] == "1"
    assert rec["inputs"]["toy.value"].endswith("probe00/toy.value")
    assert rec["start_date_time"] <= rec["end_date_time"] and rec["host"]
    assert ["toy_source[probe00]", "toy_double[probe00]"] in doc["dependency_graph"]["edges"]


def test_rerun_skips_committed_and_reruns_changed_params_downstream(setup):
    graph, asset, counter, _ = setup
    run_graph(graph(), asset, InProcessPool(gpus=0))
    first = counts(counter)
    assert first["toy_double[probe00]-0"] == 1 and first["toy_fail[probe01]"] == 1

    report = run_graph(graph(), asset, InProcessPool(gpus=0))
    again = counts(counter)
    assert report.results["toy_source[probe00]"].state == "cached"
    assert report.results["toy_double[probe01]"].state == "cached"
    # committed nodes did not run again; the failed one did
    assert again["toy_double[probe00]-0"] == 1 and again["toy_source[probe00]"] == 1
    assert again["toy_fail[probe01]"] == 2

    report = run_graph(graph(factor=3.0, fail_b=False), asset, InProcessPool(gpus=0))
    assert report.ok
    st = {k: r.state for k, r in report.results.items()}
    assert st["toy_source[probe00]"] == "cached"
    assert st["toy_double[probe00]"] == "done" and st["toy_fail[probe00]"] == "done"
    assert report.results["toy_double[probe00]"].summary == {"total": 27.0}
    assert counts(counter)["toy_fail[probe00]"] == 2  # re-run because its input changed


def test_changed_source_reruns_everything_after_it(setup):
    graph, asset, counter, raw = setup
    run_graph(graph(fail_b=False), asset, InProcessPool(gpus=0))
    (raw / "a.json").write_text(json.dumps({"value": 10, "padding": "changed size"}))
    report = run_graph(graph(fail_b=False), asset, InProcessPool(gpus=0))
    st = {k: r.state for k, r in report.results.items()}
    assert st["toy_source[probe00]"] == "done" and st["toy_double[probe00]"] == "done"
    assert st["toy_source[probe01]"] == "cached"
    assert report.results["toy_double[probe00]"].summary == {"total": 60.0}


def test_setup_failure_and_missing_input_fail_cleanly(setup, tmp_path):
    graph, asset, _, _ = setup
    g = graph(fail_b=False)
    g.sources["probe01/ephys.source"] = str(tmp_path / "nope.json")
    report = run_graph(g, asset, InProcessPool(gpus=0))
    assert report.results["toy_source[probe01]"].state == "failed"
    assert "nope.json" in report.results["toy_source[probe01]"].error
    assert report.results["toy_fail[probe01]"].state == "skipped"
    assert "toy_source[probe01]" in report.results["toy_fail[probe01]"].error
    assert report.results["toy_fail[probe00]"].state == "done"


def test_retries_then_fails(setup):
    graph, asset, counter, _ = setup
    g = graph()
    g.nodes["toy_fail[probe01]"].retries = 2
    report = run_graph(g, asset, InProcessPool(gpus=0))
    assert report.results["toy_fail[probe01]"].state == "failed"
    assert counts(counter)["toy_fail[probe01]"] == 3  # first try + 2 retries


def test_only_needs_committed_inputs(setup):
    graph, asset, _, _ = setup
    only = graph(fail_b=False).subset(only=["toy_fail"])
    report = run_graph(only, asset, InProcessPool(gpus=0))
    assert report.results["toy_fail[probe00]"].state == "failed"
    assert "not committed" in report.results["toy_fail[probe00]"].error
    run_graph(graph(fail_b=False).subset(until="toy_double"), asset, InProcessPool(gpus=0))
    assert set(asset.commits()) == {f"toy_{t}[probe0{i}]" for t in ("source", "double") for i in (0, 1)}
    report = run_graph(only, asset, InProcessPool(gpus=0))
    assert report.ok and set(report.results) == {"toy_fail[probe00]", "toy_fail[probe01]"}


def test_runs_on_a_real_dask_cluster(setup):
    from neuropool.cluster.dask import DaskPool

    graph, asset, counter, _ = setup
    with DaskPool(n_workers=2, threads_per_worker=1, gpus=0) as pool:
        assert len(pool.worker_resources()) == 2
        report = run_graph(graph(), asset, pool)
    assert report.results["toy_double[probe00]"].summary == {"total": 18.0}
    assert report.results["toy_fail[probe01]"].state == "failed"
    assert "told to fail" in report.results["toy_fail[probe01]"].error
    hosts = asset.read_commit("toy_double[probe00]")["host"]
    assert hosts and all(isinstance(h, str) for h in hosts)


def test_one_probe_goes_on_downstream_while_another_is_still_busy(tmp_path):
    """probe01's whole chain finishes while probe00's slow node is still running."""
    from neuropool.cluster.dask import DaskPool

    raw = tmp_path / "raw" / "session1"
    raw.mkdir(parents=True)
    for name in ("a", "b"):
        (raw / f"{name}.json").write_text(json.dumps({"value": 1}))
    g = Graph({"probe00/ephys.source": str(raw / "a.json"), "probe01/ephys.source": str(raw / "b.json")})
    g.add("toy_source", "probe00", retries=0)
    # one long block: a worker stays free for probe01 (Dask runs blocks in the order given, so
    # a fan-out wider than the pool would queue probe01's blocks behind it)
    g.add("toy_slow", "probe00", {"seconds": 4.0, "n_blocks": 1}, retries=0)
    g.add("toy_source", "probe01", retries=0)
    g.add("toy_double", "probe01", retries=0)
    g.add("toy_fail", "probe01", {"fail": False}, retries=0)
    asset = DerivedAsset.create(str(tmp_path / "out"), str(raw))
    events: list[tuple[str, str]] = []
    with DaskPool(n_workers=2, threads_per_worker=1, gpus=0) as pool:
        # warm workers, as in a running pool: a fresh worker's first block imports the runner and
        # the tasks, which could outlast probe01's whole chain of three short nodes
        for module in ("neuropool.graphs.runner", "tests.graphs.toytasks"):
            pool.client.run(importlib.import_module, module)
        report = run_graph(g, asset, pool, progress=lambda event, nid, info: events.append((event, nid)))
    assert report.ok
    # probe01's last node ended while probe00's slow node was running
    assert (events.index(("start", "toy_slow[probe00]")) < events.index(("done", "toy_fail[probe01]"))
            < events.index(("done", "toy_slow[probe00]"))), events
