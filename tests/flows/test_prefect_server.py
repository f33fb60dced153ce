"""The operations route for real: ``prefect server start`` on loopback (SQLite in a temporary
PREFECT_HOME), the ``lab`` process work pool, ``neuropool deploy`` of ``configs/prefect.yaml``,
``prefect worker start``, then ``prefect deployment run`` of a demo session and of the nightly
discovery over a root with one processed and one new session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuropool.demo import make_demo_session
from neuropool.io.store import DerivedAsset
from tests.cluster.processes import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STANDARD_NODES = {f"{t}[probe00]" for t in
                  ("decompress", "preprocess", "sort", "qc", "localize", "export", "nwb", "decompress_lf",
                   "lfp", "raw_qc")}


def prefect(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def server(tmp_path) -> Iterator[dict[str, str]]:
    """A Prefect server on a free loopback port; yields the environment that points at it."""
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = tmp_path / "server.log"
    proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                  "--port", str(port)], env, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
                if r.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield env
    finally:
        stop(proc)


def test_deploy_run_a_session_then_discover_the_new_one(server, tmp_path):
    env = server
    root = tmp_path / "raw"
    first = make_demo_session(root, duration=4.0, n_units=8, seed=1, subject="mouse-a")

    made = prefect("work-pool", "create", "lab", "--type", "process", env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    deployed = subprocess.run([sys.executable, "-m", "neuropool.cli", "deploy", "--raw-root", str(root)],
                              env=env, cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for name in ("process-session/adhoc", "discover-sessions/nightly", "process-session/cluster"):
        assert f"deployed {name}" in deployed.stdout
    listed = prefect("deployment", "ls", env=env)
    assert "process-session/adhoc" in listed.stdout and "discover-sessions/nightly" in listed.stdout
    inspected = prefect("deployment", "inspect", "discover-sessions/nightly", env=env)
    assert "0 2 * * *" in inspected.stdout and str(root) in inspected.stdout

    worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "lab"], env,
                   tmp_path / "worker.log")
    try:
        ran = prefect("deployment", "run", "process-session/adhoc", "--param", f"source={first}",
                      "--watch", env=env, timeout=600)
        out = ran.stdout + ran.stderr
        assert ran.returncode == 0 and "Completed" in out, out + (tmp_path / "worker.log").read_text()[-5000:]
        asset = DerivedAsset.find_latest(str(root), str(first))
        assert asset is not None and set(asset.commits()) == STANDARD_NODES

        # the nightly discovery: one processed session, one new one -> exactly one new run
        second = make_demo_session(root, duration=2.0, n_units=4, seed=2, subject="mouse-b")
        found = prefect("deployment", "run", "discover-sessions/nightly", "--watch", env=env, timeout=300)
        assert found.returncode == 0, found.stdout + found.stderr
        code = ("import asyncio, json\n"
                "from prefect.client.orchestration import get_client\n"
                "from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName\n"
                "async def main():\n"
                "    async with get_client() as c:\n"
                "        runs = await c.read_flow_runs(deployment_filter=DeploymentFilter("
                "name=DeploymentFilterName(any_=['adhoc'])))\n"
                "        print(json.dumps(sorted(r.parameters['source'] for r in runs)))\n"
                "asyncio.run(main())\n")
        runs = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True, timeout=60)
        assert runs.returncode == 0, runs.stderr
        assert json.loads(runs.stdout) == sorted([str(first), str(second)])
    finally:
        stop(worker)
