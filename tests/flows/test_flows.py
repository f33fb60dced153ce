"""The Prefect flows under a temporary Prefect server: each node a named task run, neuropool's
commits deciding what is skipped, failures with the node's own error, parameters validated,
GPU nodes holding slots of a global concurrency limit, and discovery of unprocessed sessions."""

from __future__ import annotations

import json

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from neuropool.graphs.flows import discover_sessions, process_session, run_graph_in_prefect
from neuropool.graphs.graph import Graph
from neuropool.io.store import DerivedAsset
from tests.flows import toytasks  # noqa: F401  (registers toy_gpu_sleep)
from tests.graphs import toytasks as graph_toytasks  # noqa: F401  (registers toy_source)

pytestmark = pytest.mark.timeout(600)


def task_runs(flow_run_id) -> dict[str, object]:
    """Task run name -> task run, of one flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r for r in runs}


def flow_logs(flow_run_id) -> str:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs go to the API in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def test_each_node_is_a_named_task_run_and_a_second_run_resumes(prefect_api, raw_root):
    session = raw_root / "mouse1_2026-11-20_001"
    state = process_session(source=str(session), until="preprocess", cluster="inprocess",
                            return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["nodes"] == {"decompress[probe00]": "done", "preprocess[probe00]": "done"}
    asset = DerivedAsset(result["asset"])
    assert set(asset.commits()) == {"decompress[probe00]", "preprocess[probe00]"}
    runs = task_runs(state.state_details.flow_run_id)
    assert set(runs) == {"decompress[probe00]", "preprocess[probe00]"}
    assert {r.state.name for r in runs.values()} == {"Completed"}

    again = process_session(source=str(session), until="preprocess", cluster="inprocess",
                            return_state=True)
    assert again.is_completed() and again.result()["asset"] == asset.url  # the same asset, resumed
    assert {r.state.name for r in task_runs(again.state_details.flow_run_id).values()} == {"Cached"}
    assert "is committed with the same inputs" in flow_logs(again.state_details.flow_run_id)


def test_a_failed_node_fails_the_flow_with_its_own_error_and_the_other_probe_goes_on(
        prefect_api, raw_root, tmp_path):
    session = raw_root / "mouse1_2026-11-20_001"
    # a second probe whose .cbin lost its last 1000 bytes
    good = session / "raw_ephys_data" / "probe00"
    bad = session / "raw_ephys_data" / "probe01"
    bad.mkdir()
    for f in good.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cbin = next(bad.glob("*.cbin"))
    cbin.write_bytes(cbin.read_bytes()[:-1000])
    doc = json.loads((session / "session.json").read_text())
    doc["probes"]["probe01"] = {"raw": f"raw_ephys_data/probe01/{cbin.name}"}
    (session / "session.json").write_text(json.dumps(doc))
    config = tmp_path / "one-retry.yaml"
    config.write_text(yaml.safe_dump({"retries": 1}))

    state = process_session(source=str(session), config=str(config), until="preprocess",
                            cluster="inprocess", return_state=True)
    assert state.is_failed()
    assert "decompress[probe01] failed" in state.message and cbin.name in state.message
    assert "preprocess[probe01] skipped: not run: upstream decompress[probe01]" in state.message
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["decompress[probe01]"].state.type.value == "FAILED"
    assert runs["decompress[probe01]"].run_count == 2  # retries: 1
    assert runs["preprocess[probe01]"].state.name == "Skipped"
    assert {runs[n].state.name for n in ("decompress[probe00]", "preprocess[probe00]")} == {"Completed"}
    logs = flow_logs(state.state_details.flow_run_id)
    assert cbin.name in logs and "TruncatedFileError" in logs


def test_invalid_parameters_are_rejected_naming_the_field(prefect_api, raw_root):
    state = process_session(source=str(raw_root), until="sorting", return_state=True)
    assert state.is_failed() and "until" in state.message
    state = discover_sessions(root=str(raw_root), limit=0, return_state=True)
    assert state.is_failed() and "limit" in state.message
    state = process_session(source=str(raw_root / "mouse1_2026-11-20_001"), config="no-such-config",
                            cluster="inprocess", return_state=True)
    assert state.is_failed() and "config 'no-such-config'" in state.message


@flow
def toy_gpu_flow(graph_json: str, out: str, source: str, cluster: str) -> dict:
    graph = Graph.from_json(graph_json)
    return run_graph_in_prefect(graph, DerivedAsset.create(out, source), cluster)


def test_gpu_nodes_hold_a_slot_of_the_gpu_limit_so_they_never_overlap(prefect_api, tmp_path, monkeypatch):
    raw = tmp_path / "raw" / "s1"
    raw.mkdir(parents=True)
    (raw / "a.json").write_text(json.dumps({"value": 1}))
    # one worker with two threads and two GPUs: Dask alone would run both GPU nodes at once
    profile = tmp_path / "two-gpus.yaml"
    profile.write_text(yaml.safe_dump({"address": None, "n_workers": 1, "threads_per_worker": 2, "gpus": 2}))

    def spans(limit: str) -> list[tuple[float, float]]:
        trace = tmp_path / f"trace-{limit or 'off'}"
        trace.mkdir()
        g = Graph({f"probe0{i}/ephys.source": str(raw / "a.json") for i in range(2)})
        for probe in ("probe00", "probe01"):
            g.add("toy_source", probe, retries=0)
            g.add("toy_gpu_sleep", probe, {"seconds": 1.5, "trace_dir": str(trace)}, retries=0)
        monkeypatch.setenv("NEUROPOOL_GPU_LIMIT", limit)
        state = toy_gpu_flow(g.to_json(), str(tmp_path / f"out-{limit or 'off'}"), str(raw),
                             str(profile), return_state=True)
        assert state.is_completed(), state.message
        return sorted((d["start"], d["end"]) for d in
                      (json.loads(p.read_text()) for p in trace.iterdir()))

    (a, b) = spans("test-gpu-limit")  # created on first use, with one slot
    assert b[0] >= a[1], f"GPU nodes overlapped under the limit: {a} {b}"
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("test-gpu-limit").limit == 1
    (a, b) = spans("")  # the limit turned off: Dask runs them together
    assert b[0] < a[1], f"without the limit the two GPU nodes should have overlapped: {a} {b}"


def test_discovery_starts_one_run_per_unprocessed_session(prefect_api, raw_root):
    done = raw_root / "mouse1_2026-11-20_001"
    assert process_session(source=str(done), until="preprocess", cluster="inprocess",
                           return_state=True).is_completed()
    (raw_root / "notes").mkdir()  # not a session: left out
    deployment_id = process_session.to_deployment(name="adhoc-test").apply()
    started = discover_sessions(root=str(raw_root), until="preprocess", cluster="inprocess",
                                deployment="process-session/adhoc-test")
    assert started == [str(raw_root / "mouse2_2026-11-21_001")]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert len(runs) == 1
    assert runs[0].parameters["source"] == str(raw_root / "mouse2_2026-11-21_001")
    assert runs[0].parameters["until"] == "preprocess" and "discovered" in runs[0].tags
    # a pattern that matches nothing new starts nothing
    assert discover_sessions(root=str(raw_root), pattern="mouse1_*", until="preprocess",
                             deployment="process-session/adhoc-test") == []


def test_the_flows_accept_every_task_of_the_standard_pipeline_for_until():
    from typing import get_args

    from neuropool.graphs.flows import UntilTask
    from neuropool.tasks import STANDARD

    assert set(get_args(UntilTask)) == set(STANDARD)
