"""Pooling lab machines: ``neuropool scheduler``, ``worker`` and ``certs`` as real processes.

Every test here starts real ``python -m neuropool.cli`` processes on loopback (no mocks): a
scheduler, workers under their nannies, and clients that run toy graphs on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from neuropool.cli import build_parser, main
from neuropool.cluster.commands import advertised_resources, parse_resources
from neuropool.cluster.gpus import count_gpus
from neuropool.errors import ConfigError
from neuropool.graphs.graph import Graph
from neuropool.graphs.runner import run_graph
from neuropool.io.store import DerivedAsset
from tests.cluster import toytasks_pool
from tests.cluster.processes import ROOT, START_TIMEOUT, free_port, start_pool
from tests.graphs import toytasks  # noqa: F401  (registers the toy tasks)

pytestmark = pytest.mark.timeout(300)  # a hung process must not hold the suite for 15 minutes


def toy_graph(tmp_path: Path, *nodes: tuple[str, dict]) -> tuple[Graph, DerivedAsset]:
    raw = tmp_path / "raw" / "session1"
    raw.mkdir(parents=True)
    (raw / "a.json").write_text(json.dumps({"value": 3}))
    g = Graph({"probe00/ephys.source": str(raw / "a.json")})
    g.add("toy_source", "probe00", retries=0)
    for task, params in nodes:
        g.add(task, "probe00", params, retries=0)
    return g, DerivedAsset.create(str(tmp_path / "out"), str(raw))


# -- a plain pool: GPUs advertised and honoured, clean stops --------------------------------------


def test_workers_advertise_gpus_and_gpu_blocks_run_on_the_gpu_worker(procs, tmp_path):
    from distributed import get_task_stream

    from neuropool.cluster.dask import DaskPool

    address, sched, (gpu, cpu) = start_pool(procs, [
        ["--nthreads", "1", "--gpus", "1", "--name", "gpu-worker"],
        ["--nthreads", "1", "--gpus", "0", "--name", "cpu-worker"],
    ])
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", address)
    # the dashboard is up and drawn (bokeh)
    dashboard = sched.wait_for(r"Dashboard: (http://\S+)")[1]
    with urllib.request.urlopen(dashboard, timeout=30) as page:
        assert page.status == 200 and "bokeh" in page.read().decode().lower()
    assert "resources GPU=1" in gpu.output and "resources GPU=0" in cpu.output
    graph, asset = toy_graph(tmp_path, ("toy_gpu", {}), ("pool_where", {}),
                             ("toy_double", {"n_blocks": 4}))
    with DaskPool(address) as pool:
        assert sorted(pool.worker_resources(), key=lambda r: r["GPU"]) == [
            {"GPU": 0.0, "CPU": 1}, {"GPU": 1.0, "CPU": 1}]
        names = {w["name"]: a for a, w in pool.client.scheduler_info(n_workers=-1)["workers"].items()}
        # WORKER_CONFIG reached the worker processes: sorters may start process pools there
        assert set(pool.client.run(toytasks_pool.is_daemon).values()) == {False}
        with get_task_stream(client=pool.client) as stream:
            report = run_graph(graph, asset, pool)
        assert report.ok, {k: r.error for k, r in report.results.items()}
        ran_on = {}
        for rec in stream.data:
            ran_on.setdefault(rec["key"].split("-")[0], set()).add(rec["worker"])
        assert ran_on["toy_gpu[probe00]"] == {names["gpu-worker"]}
        assert ran_on["pool_where[probe00]"] == {names["gpu-worker"]}
        commit = asset.read_commit("pool_where[probe00]")
        assert commit["summary"]["worker"] == "gpu-worker" and commit["host"]
        assert commit["resources"]["gpus"] == 1
        assert asset.read_commit("toy_double[probe00]")["summary"] == {"total": 24.0}

        # SIGTERM: the worker leaves the pool cleanly, and exits 0
        assert cpu.stop(signal.SIGTERM) == 0, cpu.output
        assert "SIGTERM received: closing the worker" in cpu.output and "Worker closed." in cpu.output
        deadline = time.monotonic() + 10
        while len(pool.worker_resources()) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.worker_resources() == [{"GPU": 1.0, "CPU": 1}]
    assert gpu.stop(signal.SIGINT) == 0, gpu.output
    assert sched.stop(signal.SIGTERM) == 0, sched.output
    assert "Scheduler closed." in sched.output


# -- a worker dies in the middle of a run -------------------------------------------------------------


def test_a_killed_worker_costs_nothing_and_a_crashed_one_is_restarted(procs, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from neuropool.cluster.dask import DaskPool

    n, value = 12, 3
    address, _, workers = start_pool(
        procs, [["--nthreads", "1", "--gpus", "0", "--name", f"w{i}"] for i in range(3)])
    trace = tmp_path / "trace"
    trace.mkdir()
    graph, asset = toy_graph(tmp_path, ("pool_slow", {"n_blocks": n, "sleep_s": 1.0,
                                                      "trace_dir": str(trace)}))
    node = "pool_slow[probe00]"
    out = Path(asset.dataset_url("pool.blocks", "probe00"))
    events: list[tuple[str, str]] = []
    with DaskPool(address) as pool, ThreadPoolExecutor(1) as ex:
        assert len(pool.worker_resources()) == 3
        running = ex.submit(run_graph, graph, asset, pool,
                            progress=lambda event, nid, info: events.append((event, nid)))

        def started() -> dict[int, set[str]]:
            """Block -> the workers it started on."""
            seen: dict[int, set[str]] = {}
            for block, who, _ in (p.name.split("-") for p in trace.iterdir()):
                seen.setdefault(int(block), set()).add(who)
            return seen

        def in_flight() -> list[tuple[float, int, str]]:
            """(start time, block, worker) of the blocks started and not written, newest last."""
            return sorted((p.stat().st_mtime, int(p.name.split("-")[0]), p.name.split("-")[1])
                          for p in trace.iterdir()
                          if not (out / f"block{p.name.split('-')[0]}.txt").exists())

        # wait until every worker has finished a block and is in the middle of another one, one
        # of which has just started (so that it is surely still running when its worker dies)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            flying = in_flight()
            done = len(list(out.iterdir())) if out.is_dir() else 0
            if done >= 3 and len({w for _, _, w in flying}) == 3 and time.time() - flying[-1][0] < 0.4:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"the run did not get going: started {started()}, done {list(out.iterdir())}")
        victim = flying[-1][2]
        lost = {b for _, b, w in flying if w == victim}
        workers[int(victim[1:])].kill_group()  # the whole machine goes: nanny and worker process

        report = running.result(timeout=90)
        assert report.ok, report.results[node].error
        # every block's file exists once, with exactly what that block writes
        assert sorted(p.name for p in out.iterdir()) == [f"block{b:03d}.txt" for b in range(n)]
        for b in range(n):
            assert (out / f"block{b:03d}.txt").read_text() == toytasks_pool.block_text(b, value)
        # the blocks lost with the victim ran again on another worker
        again = started()
        assert lost and all(again[b] - {victim} for b in lost), (lost, again)
        # the node was committed once, with the surviving workers' results
        assert [e for e in events if e[1] == node and e[0] in ("done", "failed")] == [("done", node)]
        assert set(asset.commits()) == {"toy_source[probe00]", node}
        procs_doc = asset.read_processing()["processing_pipeline"]["data_processes"]
        assert [p["node"] for p in procs_doc].count(node) == 1
        assert report.results[node].summary["blocks"] == n
        assert len(pool.worker_resources()) == 2

        # a crashed worker process (not the machine) is restarted by its nanny, same name
        survivor = next(w for i, w in enumerate(workers) if f"w{i}" != victim)
        name = survivor.args[survivor.args.index("--name") + 1]

        def pid_of(name: str) -> int | None:
            info = pool.client.scheduler_info(n_workers=-1)["workers"]
            addr = [a for a, w in info.items() if w["name"] == name]
            return pool.client.run(os.getpid, workers=addr)[addr[0]] if addr else None

        old = pid_of(name)
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                new = pid_of(name)
                if new and new != old:
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"the nanny did not restart {name}:\n{survivor.output}")
        assert survivor.popen.poll() is None
        assert len(pool.worker_resources()) == 2


# -- TLS -------------------------------------------------------------------------------------------


def certs(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neuropool.cli", "certs", str(folder), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_certs_and_a_tls_pool_that_refuses_strangers(procs, tmp_path):
    from cryptography import x509
    from distributed import Client

    from neuropool.cluster.dask import DaskPool
    from neuropool.cluster.tls import security_from_files

    d, other = tmp_path / "tls", tmp_path / "other-ca"
    made = certs(d, "--hosts", "localhost,127.0.0.1", "--days", "30")
    assert made.returncode == 0, made.stderr
    for name in ("ca", "scheduler", "worker", "client"):
        assert stat.S_IMODE((d / f"{name}-key.pem").stat().st_mode) == 0o600
        assert (d / f"{name}.pem").is_file()
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((d / "worker.pem").read_bytes())
    assert leaf.issuer == ca.subject
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert f"neuropool scheduler --tls-ca-file {d / 'ca.pem'} --tls-cert {d / 'scheduler.pem'}" in made.stdout
    assert "neuropool worker tls://" in made.stdout and "distributed.Security(" in made.stdout
    again = certs(d)
    assert again.returncode == 2 and "already holds" in again.stderr and "--force" in again.stderr
    assert certs(other).returncode == 0

    def tls(folder: Path, role: str) -> list[str]:
        return ["--tls-ca-file", str(folder / "ca.pem"), "--tls-cert", str(folder / f"{role}.pem"),
                "--tls-key", str(folder / f"{role}-key.pem")]

    # the worker says where it is reached (as behind NAT); it then listens on that port everywhere
    contact = f"tls://127.0.0.1:{free_port()}"
    address, _, (worker,) = start_pool(
        procs, [["--nthreads", "1", "--gpus", "0", "--contact-address", contact, *tls(d, "worker")]],
        tls=tls(d, "scheduler"))
    assert address.startswith("tls://127.0.0.1:")
    assert f"Worker {contact} " in worker.output
    graph, asset = toy_graph(tmp_path, ("toy_double", {"n_blocks": 2}))
    security = security_from_files(d / "ca.pem", d / "client.pem", d / "client-key.pem")
    with DaskPool(address, security=security) as pool:
        assert pool.worker_resources() == [{"GPU": 0.0, "CPU": 1}]
        assert list(pool.client.scheduler_info(n_workers=-1)["workers"]) == [contact]
        report = run_graph(graph, asset, pool)
        assert report.ok and report.results["toy_double[probe00]"].summary == {"total": 12.0}

    # the command-line route: dask settings in the environment, as `neuropool certs` prints them
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__TLS__CA_FILE=str(d / "ca.pem"),
               DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=str(d / "client.pem"),
               DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=str(d / "client-key.pem"),
               DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION="True")
    code = (f"from neuropool.cluster import connect\nwith connect({address!r}) as p:\n"
            "    print(len(p.worker_resources()), 'worker')")
    via_env = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert via_env.stdout.strip() == "1 worker", via_env.stderr

    # a certificate from another CA, and no certificate at all, are both refused
    t0 = time.monotonic()
    stranger = security_from_files(other / "ca.pem", other / "client.pem", other / "client-key.pem")
    with pytest.raises(OSError, match="TLS certificate does not match"):
        Client(address, security=stranger, timeout="5s", set_as_default=False).close()
    with pytest.raises(OSError):  # the scheduler resets a connection that does not speak TLS
        Client(address.replace("tls://", "tcp://"), timeout="5s", set_as_default=False).close()
    assert time.monotonic() - t0 < 15
    # and so is a worker holding another CA's certificate: it exits, saying why
    intruder = procs("worker", address, "--nthreads", "1", "--gpus", "0", *tls(other, "worker"))
    assert intruder.popen.wait(START_TIMEOUT) == 2
    intruder.wait_for(r"neuropool: error: the worker could not join the pool at tls://\S+: "
                      r"FatalCommClosedError: TLS certificate does not match.*same CA")


# -- the commands' help and argument errors -------------------------------------------------------


@pytest.mark.parametrize("command", ["scheduler", "worker", "certs"])
def test_help_mentions_every_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices
               and command in a.choices).choices[command]
    options = [o for a in sub._actions for o in a.option_strings if o not in ("-h", "--help")]
    expected = {
        "scheduler": ["--host", "--port", "--dashboard-port", "--tls-ca-file", "--tls-cert", "--tls-key"],
        "worker": ["--nthreads", "--memory-limit", "--gpus", "--resources", "--name",
                   "--contact-address", "--listen-address", "--tls-ca-file", "--tls-cert", "--tls-key"],
        "certs": ["--hosts", "--days", "--force"],
    }[command]
    assert set(expected) <= set(options)
    for option in options:
        assert option in text, f"{command} --help does not mention {option}"
    assert {"scheduler": "8786", "worker": "ADDRESS", "certs": "DIR"}[command] in text


def test_resources_parsing_and_errors(capsys):
    assert parse_resources("GPU=1 FOO=2") == {"GPU": 1.0, "FOO": 2.0}
    assert parse_resources("GPU=1,FOO=0.5") == {"GPU": 1.0, "FOO": 0.5}
    with pytest.raises(ConfigError, match=r"'GPU=one': 'one' is not a number"):
        parse_resources("FOO=2 GPU=one")
    for bad, why in (("GPU", "not NAME=NUMBER"), ("=3", "not NAME=NUMBER"),
                     ("GPU=-1", "number >= 0"), ("A=1 A=2", "names A twice")):
        with pytest.raises(ConfigError, match=why):
            parse_resources(bad)
    # on the command line: a usage error before anything starts, naming the bad item
    with pytest.raises(SystemExit) as e:
        main(["worker", "tcp://127.0.0.1:1", "--resources", "GPU=one"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--resources" in err and "'GPU=one'" in err
    # merging with --gpus
    assert advertised_resources(2, {"FOO": 1}) == {"GPU": 2.0, "FOO": 1.0}
    assert advertised_resources(None, {"GPU": 3}) == {"GPU": 3.0}
    assert advertised_resources(None, None) == {"GPU": float(count_gpus())}
    with pytest.raises(ConfigError, match="disagree"):
        advertised_resources(1, {"GPU": 2})


def test_worker_and_scheduler_refuse_inconsistent_tls_options(tmp_path, capsys):
    assert main(["worker", "tls://127.0.0.1:1"]) == 2
    assert "give --tls-ca-file, --tls-cert and --tls-key" in capsys.readouterr().err
    assert main(["scheduler", "--tls-ca-file", str(tmp_path / "ca.pem")]) == 2
    assert "missing --tls-cert, --tls-key" in capsys.readouterr().err
    assert main(["worker", "tcp://127.0.0.1:1", "--tls-ca-file", "a", "--tls-cert", "b",
                 "--tls-key", "c"]) == 2
    assert "--tls-ca-file a: no such file" in capsys.readouterr().err
    assert main(["worker", "tcp://127.0.0.1:1", "--memory-limit", "lots"]) == 2
    assert "--memory-limit 'lots' is not a size" in capsys.readouterr().err
