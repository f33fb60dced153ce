"""The chart's wiring, proven without a cluster: the scheduler's, workers' and Prefect containers
are taken from the rendered manifests (command, args, env, ConfigMaps, secrets) and run here as
processes on loopback, the Services standing for 127.0.0.1; then a pool forms and a session runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from neuropool.cluster.profiles import connect_to
from neuropool.cluster.tls import make_certificates
from tests.cluster.processes import ROOT, Proc, free_port
from tests.helm.chart import StandIns, container, local_command, render

pytestmark = pytest.mark.timeout(600)

STANDARD_NODES = {f"{t}[probe00]" for t in ("decompress", "preprocess", "sort", "qc", "localize",
                                            "export", "nwb", "decompress_lf", "lfp", "raw_qc")}


def pool_values(tls: bool) -> dict[str, Any]:
    """A small pool on free ports: one CPU and one GPU worker, one thread each."""
    small = {"replicas": 1, "nthreads": 1, "memoryLimit": "3GiB"}
    values: dict[str, Any] = {
        "scheduler": {"port": free_port(), "dashboardPort": free_port()},
        "workerGroups": {"cpu": dict(small), "gpu": dict(small)},
    }
    if tls:
        values["tls"] = {"enabled": True, "existingSecret": "np-tls"}
    return values


def start(rendered, kind: str, name: str, container_name: str, stand_ins: StandIns,
          procs: list[Proc], pod: str | None = None) -> Proc:
    """Run a container of the rendered chart here, as the kubelet would run it in pod ``pod``."""
    local = local_command(rendered, rendered.get(kind, name), container_name,
                          replace(stand_ins, pod_name=pod or f"np-neuropool-{name}-0"))
    proc = Proc(argv=local.argv, env=local.env)
    procs.append(proc)
    return proc


def probe(rendered, name: str, container_name: str, which: str = "readinessProbe",
          timeout: float = 60) -> int:
    """Run a container's httpGet probe against the local process, as the kubelet would."""
    c = container(rendered.get("Deployment", name), container_name)
    get = c[which]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    port = ports.get(get["port"], get["port"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=5) as r:
                return r.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_scheduler_and_worker_groups_from_the_manifests_form_a_pool(tmp_path, tls):
    values = pool_values(tls)
    stand_ins = StandIns(tmp_path)
    if tls:  # the existing secret: the files of `neuropool certs`, as the README says
        make_certificates(tmp_path / "certs", ["localhost", "127.0.0.1"])
        stand_ins.secret_dirs["np-tls"] = tmp_path / "certs"
    r = render(values)
    procs: list[Proc] = []
    try:
        sched = start(r, "Deployment", "scheduler", "scheduler", stand_ins, procs)
        address = sched.wait_for(r"Scheduler at (\S+) ")[1]
        assert address.startswith("tls://" if tls else "tcp://")
        assert address.endswith(f":{values['scheduler']['port']}")
        assert probe(r, "scheduler", "scheduler", "readinessProbe") == 200
        assert probe(r, "scheduler", "scheduler", "livenessProbe") == 200
        workers = [start(r, "Deployment", f"worker-{g}", "worker", stand_ins, procs) for g in ("cpu", "gpu")]
        for w in workers:
            w.wait_for(r"joined the pool at")

        # connect as a flow run does: through the cluster profile the chart's ConfigMap holds
        flow = local_command(r, r.get("Deployment", "prefect-worker"), "prefect-worker", stand_ins)
        profile = flow.mounts["/etc/neuropool/cluster"] / "kubernetes.yaml"
        with connect_to(str(profile)) as pool:
            info = pool.client.scheduler_info(n_workers=-1)["workers"]
        by_name = {w["name"]: w for w in info.values()}
        assert set(by_name) == {"np-neuropool-worker-cpu-0", "np-neuropool-worker-gpu-0"}
        assert by_name["np-neuropool-worker-gpu-0"]["resources"] == {"GPU": 1.0}
        assert by_name["np-neuropool-worker-cpu-0"]["resources"] == {"GPU": 0.0}
        for w in by_name.values():
            assert w["nthreads"] == 1 and w["memory_limit"] == 3 * 2**30
            assert w["id"].startswith("np-neuropool-worker")
    finally:
        for p in procs:
            p.stop()


@pytest.mark.slow
def test_a_session_submitted_through_prefect_runs_on_the_pool_and_lands_in_s3(tmp_path):
    """The whole release here: the bundled Prefect server, the scheduler, a CPU worker, and the
    Prefect worker (its deploy init container, then the worker), all from the manifests, with
    S3 credentials from the existing secret on a loopback S3 endpoint (moto). A demo session in
    S3 is submitted with `prefect deployment run`; its derived asset must appear in S3."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    from neuropool.demo import make_demo_session
    from neuropool.io.store import DerivedAsset

    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    s3.start()
    host, s3_port = s3.get_host_and_port()
    endpoint = f"http://{host}:{s3_port}"
    keys = {"AWS_ACCESS_KEY_ID": "lab-key", "AWS_SECRET_ACCESS_KEY": "lab-secret"}
    fs = s3fs.S3FileSystem(key=keys["AWS_ACCESS_KEY_ID"], secret=keys["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    fs.call_s3("create_bucket", Bucket="lab-raw")
    fs.call_s3("create_bucket", Bucket="lab-derived")
    local = make_demo_session(tmp_path / "raw", duration=4.0, n_units=8, seed=3, subject="demo-mouse")
    source = f"lab-raw/{local.name}"
    fs.put(str(local) + "/", source, recursive=True)

    values = pool_values(tls=False)
    values["workerGroups"]["gpu"] = {"enabled": False}
    values["workerGroups"]["cpu"]["nthreads"] = 2
    values["s3"] = {"existingSecret": "lab-s3", "endpointUrl": endpoint, "region": "us-east-1"}
    values["pipeline"] = {"output": "s3://lab-derived/sessions"}
    values["prefect"] = {"server": {"port": free_port()}, "worker": {"limit": 1}}
    r = render(values)
    stand_ins = StandIns(tmp_path / "pods", secrets={"lab-s3": keys})
    stand_ins.work.mkdir()
    procs: list[Proc] = []
    try:
        server = start(r, "Deployment", "prefect-server", "prefect-server", stand_ins, procs)
        sched = start(r, "Deployment", "scheduler", "scheduler", stand_ins, procs)
        worker = start(r, "Deployment", "worker-cpu", "worker", stand_ins, procs)
        sched.wait_for(r"Scheduler at ")
        worker.wait_for(r"joined the pool at", timeout=120)
        assert probe(r, "prefect-server", "prefect-server", timeout=180) == 200, server.output

        # the pod's init container, then its worker
        deploy = local_command(r, r.get("Deployment", "prefect-worker"), "deploy", stand_ins)
        done = subprocess.run(deploy.argv, env=deploy.env, cwd=ROOT, text=True,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "deployed process-session/cluster" in done.stdout
        flow_worker = start(r, "Deployment", "prefect-worker", "prefect-worker", stand_ins, procs)
        flow_worker.wait_for(r"[Ww]orker .* started", timeout=120)

        run = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", "process-session/cluster",
             "--param", f"source=s3://{source}", "--watch",
             "--watch-timeout", "480"],
            env=deploy.env, cwd=ROOT, text=True, capture_output=True, timeout=540)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:] + flow_worker.output[-5000:]
        assert "Completed" in run.stdout, run.stdout[-2000:]

        fs.invalidate_cache()
        assets = fs.ls("lab-derived/sessions")
        assert len(assets) == 1, assets
        options = {"key": keys["AWS_ACCESS_KEY_ID"], "secret": keys["AWS_SECRET_ACCESS_KEY"],
                   "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        asset = DerivedAsset("s3://" + assets[0], storage_options=options)
        assert asset.url.startswith("s3://lab-derived/sessions/")
        assert set(asset.commits()) == STANDARD_NODES
        subject, date, number = local.name.split("_")
        alf = f"{assets[0]}/{subject}/{date}/{number}/alf/probe00"
        assert fs.exists(f"{alf}/spikes.times.npy"), fs.find(assets[0])[:50]
        # the workers, not the flow's own machine, wrote it: the Prefect worker has no pool
        assert "on dask pool tcp://127.0.0.1" in flow_worker.output
    finally:
        for p in reversed(procs):
            p.stop()
        s3.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_the_local_stand_ins_translate_only_addresses_and_paths(tmp_path):
    """The translation from manifest to local process keeps every argument but the addresses
    and mount paths (so the tests above run what the chart says, not something else)."""
    values = pool_values(tls=True)
    r = render(values)
    stand_ins = StandIns(tmp_path, secret_dirs={"np-tls": tmp_path / "certs"})
    c = container(r.get("Deployment", "worker-gpu"), "worker")
    local = local_command(r, r.get("Deployment", "worker-gpu"), "worker",
                          replace(stand_ins, pod_name="gpu-7"))
    port = values["scheduler"]["port"]
    expected = [a.replace(f"np-neuropool-scheduler:{port}", f"127.0.0.1:{port}")
                .replace("$(POD_NAME)", "gpu-7").replace("/etc/neuropool/tls", str(tmp_path / "certs"))
                for a in c["command"][1:]]
    assert local.argv == [sys.executable, "-m", "neuropool.cli", *expected]
    assert local.env["NUMBA_CACHE_DIR"] == str(Path(local.mounts["/tmp"]) / "numba-cache")
    assert local.env["POD_NAME"] == "gpu-7"
