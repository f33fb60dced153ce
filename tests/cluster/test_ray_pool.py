"""The Ray pool: the Pool contract on an in-process Ray instance, and the graph runner on Ray
(a local instance, then a head plus a joined node started as real processes) giving the same
outputs as a Dask pool (toy graphs: as the in-process pool).

Every Ray process here uses token authentication with a token of its own (``RAY_AUTH_MODE`` and
``RAY_AUTH_TOKEN`` in the environment, nothing written to ``~/.ray``) and keeps its files in a
temporary folder of its own.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='the Ray pool needs ray: pip install "neuropool[ray]"')

import psutil  # noqa: E402
import zarr  # noqa: E402

from neuropool.cluster import InProcessPool  # noqa: E402
from neuropool.cluster.ray import RayPool  # noqa: E402
from neuropool.errors import ConfigError, MissingDependencyError, ResourceError  # noqa: E402
from neuropool.graphs import load_config, run_graph, standard_graph  # noqa: E402
from neuropool.graphs.graph import Graph  # noqa: E402
from neuropool.io.session import open_session  # noqa: E402
from neuropool.io.store import DerivedAsset  # noqa: E402
from tests.cluster import toytasks_ray  # noqa: E402, F401  (registers toy_ray_node)
from tests.graphs import toytasks  # noqa: E402, F401  (registers the toy tasks)
from tests.tasks.conftest import make_np1_data, make_session  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NP1_BLOCKS = {"decompress": {"chunk_seconds": 0.25, "chunks_per_block": 1},
              "preprocess": {"chunk_seconds": 0.25, "chunks_per_block": 1}}


class Flaky(Exception):
    """An exception type of the tests' own, which must come back as itself."""


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def fail_until(counter: str, failures: int) -> str:
    """Count the call in ``counter``; raise for the first ``failures`` calls."""
    path = Path(counter)
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    if n <= failures:
        raise Flaky(f"attempt {n} of {counter} fails")
    return f"ok after {n}"


@pytest.fixture(scope="module", autouse=True)
def ray_env():
    """Token auth with a fresh token, a short private temp folder (Ray's socket paths must fit in
    107 characters), and ``tests`` importable by every worker."""
    tmp = Path(tempfile.mkdtemp(prefix="np-ray-"))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                            "RAY_TMPDIR": str(tmp), "PYTHONPATH": path,
                            "RAY_USAGE_STATS_ENABLED": "0"}.items():
            mp.setenv(name, value)
        yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def test_ray_is_imported_only_when_a_pool_is_made(monkeypatch):
    package = ROOT / "neuropool"
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.append(path.relative_to(package).as_posix())
    assert set(importers) == {"cluster/ray.py"}
    code = "import sys, neuropool.cluster, neuropool.cluster.ray; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "neuropool\[ray\]"'):
        RayPool()


def test_bad_arguments_and_refused_tokens_are_explained(monkeypatch):
    with pytest.raises(ConfigError, match="num_cpus, num_gpus only apply to a Ray instance"):
        RayPool("127.0.0.1:1", num_cpus=2, num_gpus=0)

    def refused(**kwargs):
        raise ConnectionError("Failed to connect") from ray.exceptions.AuthenticationError(
            "RPC error: InvalidAuthToken: Authentication token is missing or incorrect")

    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(ConfigError, match="refused this process's authentication token.*RAY_AUTH_TOKEN"):
        RayPool("127.0.0.1:6379")


# -- graphs and sessions shared by the local and the cluster tests ----------------------------


def toy_graph(root: Path, **extra: dict) -> Graph:
    """The toy graph of tests/graphs/test_runner.py (``toy_fail[probe01]`` fails, retried twice),
    plus nodes ``extra`` = {"task[probe]": params}."""
    raw, counter = root / "raw", root / "counts"
    for d in (raw, counter):
        d.mkdir(parents=True, exist_ok=True)
    g = Graph({})
    for probe, value, fail in (("probe00", 3, False), ("probe01", 5, True)):
        if not (raw / f"{probe}.json").exists():  # rewriting it would change its fingerprint
            (raw / f"{probe}.json").write_text(json.dumps({"value": value}))
        g.sources[f"{probe}/ephys.source"] = str(raw / f"{probe}.json")
        g.add("toy_source", probe, {"counter_dir": str(counter)})
        g.add("toy_double", probe, {"factor": 2.0, "counter_dir": str(counter)})
        g.add("toy_fail", probe, {"fail": fail, "counter_dir": str(counter)}, retries=2)
    for nid, params in extra.items():
        task, probe = nid.rstrip("]").split("[")
        g.add(task, probe, params)
    return g


def run_toy(root: Path, pool, **extra: dict):
    asset = DerivedAsset.create(str(root / "out"), str(root / "raw"))
    report = run_graph(toy_graph(root, **extra), asset, pool)
    counts = {p.name: int(p.read_text()) for p in (root / "counts").iterdir()}
    outputs = {p.relative_to(asset.url).as_posix(): json.loads(p.read_text())
               for p in Path(asset.url).glob("probe*/*/*.json")}
    return report, counts, outputs


def assert_same_toy_run(ours, ref) -> None:
    (report, counts, outputs), (ref_report, ref_counts, ref_outputs) = ours, ref
    assert {k: (r.state, r.summary) for k, r in report.results.items()} == {
        k: (r.state, r.summary) for k, r in ref_report.results.items()}
    errors = [r.results["toy_fail[probe01]"].error.replace(r.asset.url, "ASSET") for r in (report, ref_report)]
    assert errors[0] == errors[1] and errors[0].startswith("ValueError: ASSET/probe01/toy.doubled: ")
    assert counts == ref_counts and counts["toy_fail[probe01]"] == 3  # first try + 2 retries
    assert outputs == ref_outputs and outputs


@pytest.fixture(scope="module")
def np1_session(tmp_path_factory) -> Path:
    """0.6 s of NP1 data, mtscomp-compressed (decompress and preprocess each make 3-4 blocks)."""
    return make_session(tmp_path_factory.mktemp("np1") / "mouse_2024-01-01_001", make_np1_data(18_000))


def run_np1(session: Path, out: Path, pool):
    """The standard graph up to ``preprocess`` on ``pool``."""
    cfg = load_config(NP1_BLOCKS)
    sess = open_session(str(session))
    asset = DerivedAsset.open_or_create(str(out), sess.url, label=cfg.label)
    report = run_graph(standard_graph(sess, cfg).subset(until="preprocess"), asset, pool)
    assert report.ok, {k: r.error for k, r in report.results.items()}
    return report


@pytest.fixture(scope="module")
def np1_reference(np1_session, tmp_path_factory):
    """The session run on a Dask LocalCluster of two worker processes: what Ray must match."""
    from neuropool.cluster.dask import DaskPool

    with DaskPool(n_workers=2, threads_per_worker=1, gpus=0) as dask_pool:
        return run_np1(np1_session, tmp_path_factory.mktemp("np1-dask"), dask_pool)


def assert_same_np1_outputs(ours, ref) -> None:
    """Raw stores bit-identical, every array; preprocessed traces within 1e-6 of their RMS."""
    assert {k: r.state for k, r in ours.results.items()} == {
        "decompress[probe00]": "done", "preprocess[probe00]": "done"}
    for nid, r in ours.results.items():
        mine, theirs = dict(r.summary), dict(ref.results[nid].summary)
        assert mine.pop("rms_uv", 0) == pytest.approx(theirs.pop("rms_uv", 0), rel=1e-6)
        assert mine == theirs, nid
    for rel, exact in (("probe00/raw.zarr", True), ("probe00/preprocessed.zarr", False)):
        mine = dict(zarr.open_group(f"{ours.asset.url}/{rel}", mode="r").arrays())
        theirs = dict(zarr.open_group(f"{ref.asset.url}/{rel}", mode="r").arrays())
        assert sorted(mine) == sorted(theirs) and "traces" in mine
        for name, arr in theirs.items():
            a, b = mine[name][:], arr[:]
            assert a.dtype == b.dtype and a.shape == b.shape, f"{rel}/{name}"
            if exact or name != "traces":
                assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{rel}/{name} differs"
            else:
                rms = np.sqrt(np.mean(np.square(b, dtype=np.float64)))
                assert np.abs(a.astype(np.float64) - b).max() <= 1e-6 * rms, f"{rel}/{name}"


# -- an in-process local Ray instance ---------------------------------------------------------


class TestLocalRay:
    @pytest.fixture(scope="class")
    def pool(self):
        with RayPool(num_cpus=2) as pool:
            yield pool
        assert not ray.is_initialized()  # the instance it started is shut down

    def test_results_in_other_processes_and_resources(self, pool):
        assert pool.owns_instance and pool.kind == "ray"
        assert pool.worker_resources() == [{"CPU": 2.0, "GPU": 0.0}]
        pids = {pool.submit(os.getpid, key="getpid").result() for _ in range(4)}
        assert os.getpid() not in pids
        assert pool.submit(functools.partial(divmod, 7), 2).result() == (3, 1)  # not a function
        assert pool.submit(max, 3, 9).result() == 9

    def test_exceptions_keep_their_type_and_message(self, pool, tmp_path):
        fut = pool.submit(fail_until, str(tmp_path / "n"), 5)
        exc = fut.exception()
        assert type(exc) is Flaky and str(exc) == f"attempt 1 of {tmp_path / 'n'} fails"
        assert fut.done() and fut.exception() is exc
        assert any("fail_until" in note for note in exc.__notes__)  # the remote traceback
        with pytest.raises(Flaky, match="attempt 1"):
            fut.result()
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result()

    def test_a_call_that_raises_is_retried(self, pool, tmp_path):
        counters = [str(tmp_path / name) for name in ("enough", "too-few", "none")]
        assert pool.submit(fail_until, counters[0], 2, retries=2).result() == "ok after 3"
        assert isinstance(pool.submit(fail_until, counters[1], 2, retries=1).exception(), Flaky)
        assert isinstance(pool.submit(fail_until, counters[2], 2).exception(), Flaky)
        assert [int(Path(c).read_text()) for c in counters] == [3, 2, 1]

    def test_wait_returns_when_one_is_done_and_cancel(self, pool):
        slow, fast = pool.submit(time.sleep, 4), pool.submit(time.sleep, 0.2)
        t0 = time.perf_counter()
        assert pool.wait([slow, fast]) == ({fast}, {slow}) and time.perf_counter() - t0 < 3
        blocker = pool.submit(time.sleep, 4)
        queued = pool.submit(time.sleep, 60)  # both CPUs are taken: it waits for one
        assert pool.wait([queued], timeout=0.3) == (set(), {queued}) and not queued.done()
        assert queued.cancel() and isinstance(queued.exception(), ray.exceptions.TaskCancelledError)
        assert not fast.cancel() and fast.result() is None
        assert pool.wait([slow, blocker], timeout=30)[1] in (set(), {blocker})
        assert time.perf_counter() - t0 < 10  # the cancelled call never ran

    def test_toy_graph_same_as_in_process(self, pool, tmp_path):
        ours = run_toy(tmp_path / "ray", pool)
        assert_same_toy_run(ours, run_toy(tmp_path / "inprocess", InProcessPool(gpus=0)))
        again = run_graph(toy_graph(tmp_path / "ray"), ours[0].asset, pool)
        assert {r.state for k, r in again.results.items() if k != "toy_fail[probe01]"} == {"cached"}
        with pytest.raises(ResourceError, match="toy_gpu.*needs 1 GPU"):  # rather than waiting forever
            run_toy(tmp_path / "gpu", pool, **{"toy_gpu[probe00]": {}})

    def test_np1_session_same_as_on_dask(self, pool, np1_session, np1_reference, tmp_path):
        assert_same_np1_outputs(run_np1(np1_session, tmp_path, pool), np1_reference)


# -- a head and a joined node, as separate processes ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_node(args: list[str], log: Path, timeout: float = 90) -> subprocess.Popen:
    """``ray start ARGS --block`` in the background; return once it says it started."""
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args,
                             "--disable-usage-stats", "--block"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_ray_node(proc)
            raise RuntimeError(f"ray start {' '.join(args)} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def stop_ray_node(proc: subprocess.Popen) -> None:
    """Stop one ``ray start --block`` and every process it started, by their ids."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.send_signal(signal.SIGTERM)  # --block tears its node down on SIGTERM
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    _, alive = psutil.wait_procs(family, timeout=15)
    for p in alive:
        p.kill()


@pytest.fixture
def ray_cluster(ray_env):
    """A head with 1 CPU and a joined node with 1 CPU and 1 (advertised) GPU; yields the head's
    address. (The head's Ray Client server gets a free port rather than 10001.)"""
    port, client_port = free_port(), free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_env}"]
    started = []
    try:
        started.append(start_ray_node(["--head", f"--port={port}", "--num-gpus=0", *common,
                                       "--include-dashboard=false", f"--ray-client-server-port={client_port}"],
                                      ray_env / "head.log"))
        started.append(start_ray_node([f"--address=127.0.0.1:{port}", "--num-gpus=1", *common],
                                      ray_env / "node.log"))
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(started):
            stop_ray_node(proc)


@pytest.mark.slow
def test_head_and_joined_node_run_the_graph_like_dask(ray_cluster, np1_session, np1_reference, tmp_path):
    with RayPool(ray_cluster) as pool:
        assert not pool.owns_instance
        deadline = time.monotonic() + 60
        while len(pool.worker_resources()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sorted(pool.worker_resources(), key=lambda r: r["GPU"]) == [
            {"CPU": 1.0, "GPU": 0.0}, {"CPU": 1.0, "GPU": 1.0}]
        nodes = {n["NodeID"]: n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]}
        gpu_node = next(nid for nid, gpus in nodes.items() if gpus)

        report, counts, _ = run_toy(tmp_path / "toy", pool, **{
            "toy_gpu[probe00]": {},
            "toy_ray_node[probe00]": {"gpus": 1, "n_blocks": 3},
            "toy_ray_node[probe01]": {"gpus": 0, "n_blocks": 4, "sleep_s": 0.5}})
        states = {k: r.state for k, r in report.results.items()}
        assert states.pop("toy_fail[probe01]") == "failed" and set(states.values()) == {"done"}
        assert counts["toy_fail[probe01]"] == 3
        assert report.results["toy_ray_node[probe00]"].summary == {"node_ids": [gpu_node] * 3}
        # CPU blocks may run on either node (Ray keeps them off GPU nodes when it can)
        assert set(report.results["toy_ray_node[probe01]"].summary["node_ids"]) <= set(nodes)

        assert_same_np1_outputs(run_np1(np1_session, tmp_path / "np1", pool), np1_reference)
    assert not ray.is_initialized()
    # closing the pool left the cluster up; a job's runtime_env reaches its tasks
    with RayPool(ray_cluster, runtime_env={"env_vars": {"NP_MARK": "from the job"}}) as again:
        assert len(again.worker_resources()) == 2
        assert again.submit(read_env, "NP_MARK").result() == "from the job"


def test_connect_routes_ray_addresses():
    pytest.importorskip("ray")
    import neuropool

    with neuropool.connect("ray", num_cpus=1) as client:
        assert client.pool.kind == "ray"
        assert client.pool.worker_resources()[0]["CPU"] == 1.0
