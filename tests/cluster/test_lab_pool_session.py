"""A real recording on a pool of lab machines: ``neuropool scheduler`` and ``worker`` processes on
loopback run the standard graph on a demo session.

Two things the toy-task tests cannot show: the sorter, declared as needing a GPU, runs only on
the worker that advertises one (the GPU itself is the one thing mocked here: the worker says it
has one), and a worker killed in the middle of preprocessing costs a retry, with outputs
identical, sample for sample, to an undisturbed run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from neuropool.demo import make_demo_session
from neuropool.io import timeseries
from neuropool.io.store import DerivedAsset
from tests.cluster.processes import ROOT, start_pool
from tests.tasks.conftest import assert_asset_consistent, run_standard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DURATION_S = 8.0


@pytest.fixture(scope="module")
def demo_session(tmp_path_factory) -> Path:
    return make_demo_session(tmp_path_factory.mktemp("raw"), duration=DURATION_S, n_units=12, seed=3)


def neuropool_run(*args: str, timeout: float = 480) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neuropool.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def processes(asset_dir: Path) -> dict[str, dict]:
    doc = json.loads((asset_dir / "processing.json").read_text())
    return {p["node"]: p for p in doc["processing_pipeline"]["data_processes"]}


def only_asset(out: Path) -> Path:
    (asset_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return asset_dir


def test_the_sorter_runs_on_the_gpu_worker_and_chunks_spread_over_all(procs, demo_session, tmp_path):
    address, _, _ = start_pool(procs, [
        ["--nthreads", "1", "--gpus", "1", "--name", "gpu-worker"],
        ["--nthreads", "1", "--gpus", "0", "--name", "cpu-worker"],
    ])
    config = tmp_path / "gpu-sort.yaml"
    config.write_text(yaml.safe_dump({"sort": {"gpus": 1, "n_jobs": 1}, "qc": {"n_jobs": 1}}))
    out = tmp_path / "derived"
    done = neuropool_run("run", str(demo_session), "--cluster", address, "--config", str(config),
                         "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    ran = processes(only_asset(out))
    assert set(ran) == {f"{t}[probe00]" for t in
                        ("decompress", "preprocess", "sort", "qc", "localize", "export", "nwb",
                         "decompress_lf", "lfp", "raw_qc")}
    host = socket.gethostname()
    gpu, cpu = f"{host}/dask:gpu-worker", f"{host}/dask:cpu-worker"
    assert ran["sort[probe00]"]["host"] == [gpu]
    assert ran["sort[probe00]"]["resources"]["gpus"] == 1
    # the chunk tasks of decompress and preprocess went to both workers
    assert ran["decompress[probe00]"]["host"] == [cpu, gpu]
    assert ran["preprocess[probe00]"]["host"] == [cpu, gpu]
    assert ran["sort[probe00]"]["summary"]["n_units"] > 0


def test_a_worker_killed_mid_preprocess_leaves_outputs_identical_to_an_undisturbed_run(
        procs, demo_session, tmp_path):
    reference = run_standard(demo_session, tmp_path / "reference", until="preprocess",
                             config={"preprocess": {"chunks_per_block": 1}})
    assert reference.ok
    ref_asset = only_asset(tmp_path / "reference")

    address, _, workers = start_pool(
        procs, [["--nthreads", "1", "--gpus", "0", "--name", f"w{i}"] for i in range(3)])
    config = tmp_path / "fine-blocks.yaml"
    config.write_text(yaml.safe_dump({"preprocess": {"chunks_per_block": 1}}))
    out = tmp_path / "derived"
    run = subprocess.Popen(
        [sys.executable, "-m", "neuropool.cli", "run", str(demo_session), "--cluster", address,
         "--config", str(config), "--out", str(out), "--until", "preprocess"],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # wait until preprocessing is under way: some of its chunks written, not all, no commit
        n_chunks = int(np.ceil(DURATION_S))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            chunks = list(out.glob("*/probe00/preprocessed.zarr/traces/*.0"))
            if 1 <= len(chunks) <= n_chunks - 4:
                break
            assert run.poll() is None, run.communicate()[0]
            time.sleep(0.05)
        else:
            pytest.fail("preprocessing did not start on the pool")
        asset_dir = only_asset(out)
        assert not (asset_dir / "_commits" / "preprocess[probe00].json").exists()
        workers[1].kill_group()  # the whole machine goes: nanny and worker process
        output, _ = run.communicate(timeout=400)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output

    asset = DerivedAsset(str(asset_dir))
    commits = assert_asset_consistent(asset)
    assert set(commits) == {"decompress[probe00]", "preprocess[probe00]"}
    assert list(processes(asset_dir)).count("preprocess[probe00]") == 1
    for dataset in ("raw.zarr", "preprocessed.zarr"):
        got = timeseries.TimeseriesStore(str(asset_dir / "probe00" / dataset)).traces[:]
        want = timeseries.TimeseriesStore(str(ref_asset / "probe00" / dataset)).traces[:]
        np.testing.assert_array_equal(got, want, err_msg=dataset)
