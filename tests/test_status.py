"""``neuropool status``: each node committed, failed, not committed or not run; and what a run
prints while it works (lines in CI logs, bars on a terminal)."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from neuropool.cli import Progress, main
from neuropool.cluster import InProcessPool
from neuropool.graphs.graph import Graph
from neuropool.graphs.runner import run_graph
from neuropool.io import spec
from neuropool.io.store import DerivedAsset
from tests.graphs import toytasks  # noqa: F401  (registers the toy tasks)

PROBES = ("probe00", "probe01")


@pytest.fixture
def toy(tmp_path: Path) -> SimpleNamespace:
    """Toy nodes toy_source -> toy_double -> toy_fail on two probes: ``toy.run(fail=...)`` runs
    them into ``toy.asset`` (probe01's toy_fail fails when told to); ``toy.raw``: the sources."""
    raw = tmp_path / "raw" / "session1"
    raw.mkdir(parents=True)
    for probe, value in zip(PROBES, (3, 5), strict=True):
        (raw / f"{probe}.json").write_text(json.dumps({"value": value}))
    asset = DerivedAsset.create(str(tmp_path / "out"), str(raw))

    def graph(fail: bool = False) -> Graph:
        g = Graph({f"{p}/ephys.source": str(raw / f"{p}.json") for p in PROBES})
        for probe in PROBES:
            g.add("toy_source", probe, retries=0)
            g.add("toy_double", probe, {"n_blocks": 2}, retries=0)
            g.add("toy_fail", probe, {"fail": fail and probe == "probe01"}, retries=0)
        return g

    def run(fail: bool = False) -> Graph:
        g = graph(fail)
        run_graph(g, asset, InProcessPool(gpus=0))
        return g

    return SimpleNamespace(run=run, asset=asset, raw=raw)


def status(capsys, *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


def states(capsys, url: str) -> tuple[int, dict[str, dict]]:
    code, out = status(capsys, url, "--json")
    doc = json.loads(out)
    return code, {n["node"]: n for n in doc["nodes"]}


def test_everything_committed_and_current_exits_0(toy, capsys):
    toy.run()
    asset = toy.asset
    code, out = status(capsys, asset.url)
    assert code == 0, out
    assert f"Derived asset: {asset.url}" in out
    assert "6 of 6 node(s) committed." in out
    for probe in PROBES:
        row = next(line for line in out.splitlines() if line.strip().startswith(f"toy_double[{probe}]"))
        assert "committed" in row and " s " in row and "yes" in row  # wall time, and still current
    code, nodes = states(capsys, asset.url)
    assert code == 0 and set(nodes) == {f"{t}[{p}]" for t in ("toy_source", "toy_double", "toy_fail") for p in PROBES}
    commit = asset.read_commit("toy_double[probe00]")
    assert nodes["toy_double[probe00]"]["when"] == commit["end_date_time"]
    assert nodes["toy_double[probe00]"]["wall_s"] == commit["wall_s"]
    assert all(n["state"] == "committed" and n["current"] is True for n in nodes.values())


def test_a_failed_node_shows_its_error_and_the_failure_is_recorded_until_it_is_retried(toy, capsys):
    toy.run(fail=True)
    asset = toy.asset
    failures = asset.failures()
    assert set(failures) == {"toy_fail[probe01]"}
    assert failures["toy_fail[probe01]"]["error"].startswith("ValueError: ")
    assert "Traceback" in failures["toy_fail[probe01]"]["traceback"]

    code, out = status(capsys, asset.url)
    assert code == 1
    row = next(line for line in out.splitlines() if "toy_fail[probe01]" in line)
    assert "failed" in row and "ValueError: " in row and "this toy task was told to fail" in row
    assert "5 of 6 node(s) committed, 1 failed." in out
    _, nodes = states(capsys, asset.url)
    assert nodes["toy_fail[probe01]"]["state"] == "failed" and nodes["toy_fail[probe01]"]["when"]

    toy.run(fail=False)  # the node is attempted again, and succeeds: its record goes
    assert asset.failures() == {}
    assert not any((Path(asset.url) / spec.FAILURES_DIR).iterdir())
    assert status(capsys, asset.url)[0] == 0


def test_nodes_after_a_failed_one_are_not_run(toy, capsys):
    (toy.raw / "probe01.json").unlink()  # toy_source[probe01] fails: its source is missing
    toy.run()
    code, nodes = states(capsys, toy.asset.url)
    assert code == 1
    assert nodes["toy_source[probe01]"]["state"] == "failed"
    assert "probe01.json" in nodes["toy_source[probe01]"]["error"]
    for task in ("toy_double", "toy_fail"):
        assert nodes[f"{task}[probe01]"]["state"] == "not run", nodes[f"{task}[probe01]"]
        assert nodes[f"{task}[probe01]"]["detail"] == "upstream toy_source[probe01] failed"
    assert {nodes[f"{t}[probe00]"]["state"] for t in ("toy_source", "toy_double", "toy_fail")} == {"committed"}


def test_a_started_node_is_not_committed_as_runs_record_no_starts(toy, capsys):
    """A run that was killed (or still runs) after withdrawing a node's commit: the runner
    records no starts, so the node is 'not committed', and the nodes after it are 'not run'."""
    toy.run()
    asset = toy.asset
    asset.uncommit("toy_double[probe00]")
    asset.uncommit("toy_fail[probe00]")
    code, out = status(capsys, asset.url)
    assert code == 1
    assert "4 of 6 node(s) committed, 1 not committed, 1 not run." in out
    assert "the runner records no starts" in out
    _, nodes = states(capsys, asset.url)
    assert nodes["toy_double[probe00]"]["state"] == "not committed"
    assert nodes["toy_fail[probe00]"]["state"] == "not run"
    assert nodes["toy_fail[probe00]"]["detail"] == "upstream toy_double[probe00] is not committed"


def test_a_fresh_asset_shows_the_recorded_graph_with_nothing_run(toy, capsys):
    graph = toy.run()
    asset = toy.asset
    for nid in graph.nodes:
        asset.uncommit(nid)
    asset.write_processing(graph.to_dict(), {})  # as the runner leaves it before any commit
    code, nodes = states(capsys, asset.url)
    assert code == 1
    assert {n: s["state"] for n, s in nodes.items()} == {
        **{f"toy_source[{p}]": "not committed" for p in PROBES},
        **{f"{t}[{p}]": "not run" for t in ("toy_double", "toy_fail") for p in PROBES},
    }


def test_a_changed_input_makes_commits_no_longer_current_but_still_committed(toy, capsys):
    toy.run()
    asset, source = toy.asset, toy.raw / "probe00.json"
    source.write_text(json.dumps({"value": 4}))
    st = os.stat(source)
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))  # a newer copy
    code, nodes = states(capsys, asset.url)
    assert code == 0  # everything is committed
    assert nodes["toy_source[probe00]"]["current"] is False
    assert "changed since" in nodes["toy_source[probe00]"]["detail"]
    assert nodes["toy_fail[probe00]"]["current"] is False
    assert nodes["toy_fail[probe00]"]["detail"].startswith("upstream toy_double[probe00] changed")
    assert all(nodes[f"{t}[probe01]"]["current"] is True for t in ("toy_source", "toy_double", "toy_fail"))
    out = status(capsys, asset.url)[1]
    assert "6 of 6 node(s) committed (3 no longer current)." in out
    code, unchecked = status(capsys, asset.url, "--json", "--no-check")
    assert code == 0 and all(n["current"] is None for n in json.loads(unchecked)["nodes"])


def _session(root: Path) -> Path:
    """A session folder with session.json (its recording is never read by status)."""
    session = root / "mouse_2026-01-01_001"
    session.mkdir(parents=True)
    (session / "session.json").write_text(json.dumps({"probes": {"probe00": {"raw": "raw/x.ap.cbin"}}}))
    return session


def test_a_session_folder_shows_its_latest_asset_with_the_standard_graph(tmp_path, capsys):
    from datetime import datetime

    session = _session(tmp_path / "raw")
    old = DerivedAsset.create(str(tmp_path / "raw"), str(session), when=datetime(2026, 1, 1, 10))
    old.commit("decompress[probe00]", {"end_date_time": "2026-01-01T10:00:05", "wall_s": 5.0})
    latest = DerivedAsset.create(str(tmp_path / "raw"), str(session), when=datetime(2026, 1, 2, 10))
    latest.commit("decompress[probe00]", {"end_date_time": "2026-01-02T10:00:05", "wall_s": 4.0,
                                          "fingerprint": "0" * 40, "inputs": {}, "outputs": {}})
    code, out = status(capsys, str(session), "--no-check")
    assert code == 1
    assert f"Derived asset: {latest.url}" in out
    assert "no processing.json yet" in out and "the standard graph of the session" in out
    doc = json.loads(status(capsys, str(session), "--json", "--no-check")[1])
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert doc["graph"] == "session" and doc["asset"] == latest.url
    assert nodes["decompress[probe00]"]["state"] == "committed" and nodes["decompress[probe00]"]["wall_s"] == 4.0
    assert nodes["preprocess[probe00]"]["state"] == "not committed"  # what it needs is committed
    assert nodes["sort[probe00]"]["state"] == "not run"
    assert {"sort[probe00]", "qc[probe00]", "nwb[probe00]"} <= set(nodes)
    # --out: where the assets are when not beside the session
    assert main(["status", str(session), "--out", str(tmp_path / "elsewhere")]) == 2
    assert str(tmp_path / "elsewhere") in capsys.readouterr().err


def test_what_is_not_an_asset_is_a_clear_error(tmp_path, capsys):
    named = tmp_path / "mouse_processed_2026-01-01_10-00-00"
    named.mkdir()
    assert main(["status", str(named)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuropool: error: ") and "data_description.json" in err
    session = _session(tmp_path / "raw")
    assert main(["status", str(session)]) == 2
    err = capsys.readouterr().err
    assert "no derived asset of this session" in err and "neuropool run" in err
    assert "Traceback" not in err


def test_an_asset_on_s3(monkeypatch, capsys):
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().call_s3("create_bucket", Bucket="lab-status")
        asset = DerivedAsset.create("s3://lab-status/derived", "s3://lab-status/raw/mouse_2026-01-01_001")
        asset.commit("decompress[probe00]", {"end_date_time": "2026-01-02T10:00:05", "wall_s": 4.0})

        assert asset.record_failure("preprocess[probe00]", "RawDataError: s3://lab-status/raw/x: bad\nmore")
        code, out = status(capsys, asset.url, "--no-check")
        assert code == 1, out
        assert f"Derived asset: {asset.url}" in out
        assert "no processing.json yet" in out
        rows = {line.split()[0]: line for line in out.splitlines() if "[probe00]" in line}
        assert "committed" in rows["decompress[probe00]"]
        assert "failed" in rows["preprocess[probe00]"] and "RawDataError: s3://lab-status/raw/x: bad" in rows["preprocess[probe00]"]
        assert "more" not in rows["preprocess[probe00]"]  # the first line of the error only
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


# -- the progress of a run ---------------------------------------------------------------------


def test_a_run_outside_a_terminal_prints_a_line_per_task_and_no_bars(tmp_path, capsys):
    """``neuropool run`` in a CI log: plain lines for each task and step, no carriage returns;
    then ``neuropool status`` on the asset it made."""
    from tests.tasks.conftest import make_np1_data, make_session

    session = make_session(tmp_path / "raw" / "mouse_2026-01-01_001", make_np1_data(3_000, seed=2))
    out = tmp_path / "derived"
    assert not sys.stderr.isatty()
    code = main(["run", str(session), "--out", str(out), "--until", "decompress", "--cluster", "inprocess"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out + captured.err
    assert "\r" not in text
    lines = captured.out.splitlines()
    for expected in (r"starting the pool \.\.\.$", r"decompress\[probe00\]: started \(\d+ blocks?\)$",
                     r"decompress\[probe00\]: done in [\d.]+ s$", r"summary: .* \.\.\.$"):
        assert any(re.search(r"^\[\s*[\d.]+ s\] " + expected, line) for line in lines), (expected, lines)
    (asset_dir,) = out.iterdir()
    assert main(["status", str(asset_dir)]) == 0
    assert "1 of 1 node(s) committed." in capsys.readouterr().out
    # the same session again: its asset is found from the session folder
    assert main(["status", str(session), "--out", str(out)]) == 0


def test_on_a_terminal_tasks_and_steps_get_bars_on_stderr(monkeypatch, capsys):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    progress = Progress(bars=True)
    with progress.step("generating a session"):
        pass
    progress("start", "sort[probe00]", {"blocks": 4})
    for done in range(1, 5):
        progress("block", "sort[probe00]", {"done": done, "total": 4})
    assert progress._open["sort[probe00]"].n == 4  # (redrawn at most 10 times a second)
    progress("done", "sort[probe00]", {"wall_s": 1.5})
    assert not progress._open  # the bar is gone once its task is done
    progress.close()
    drawn = err.getvalue()
    assert "\r" in drawn and "sort[probe00]:   0%" in drawn and "0/4" in drawn
    assert "generating a session: 00:00" in drawn
    out = capsys.readouterr().out
    assert "sort[probe00]: started (4 blocks)" in out and "sort[probe00]: done in 1.5 s" in out
    assert "\r" not in out  # the lines stay plain; only the bars redraw


def test_without_a_terminal_long_tasks_report_their_blocks_now_and_then(capsys):
    progress = Progress(bars=False, interval=0.0)
    progress("start", "preprocess[probe00]", {"blocks": 3})
    for done in range(1, 4):
        progress("block", "preprocess[probe00]", {"done": done, "total": 3})
    progress("done", "preprocess[probe00]", {"wall_s": 2.0})
    progress.close()
    captured = capsys.readouterr()
    assert captured.err == "" and "\r" not in captured.out
    assert [line.split("] ", 1)[1] for line in captured.out.splitlines()] == [
        "preprocess[probe00]: started (3 blocks)", "preprocess[probe00]: 1/3 blocks done",
        "preprocess[probe00]: 2/3 blocks done", "preprocess[probe00]: done in 2.0 s"]
    quiet = Progress(bars=False)  # the default: at most a line every 30 s
    quiet("start", "sort[probe00]", {"blocks": 50})
    for done in range(1, 51):
        quiet("block", "sort[probe00]", {"done": done, "total": 50})
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_a_graph_that_cannot_be_rebuilt_still_shows_every_node(toy, capsys):
    graph = toy.run()
    doc = graph.to_dict()
    doc["nodes"][0]["task"] = "no_such_task"  # e.g. a task of a plugin that is not installed
    toy.asset.write_processing(doc)
    code, out = status(capsys, toy.asset.url)
    assert code == 0, out
    assert "6 of 6 node(s) committed." in out
    assert "currency is not checked: ConfigError: unknown task 'no_such_task'" in out
