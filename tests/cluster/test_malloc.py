"""Worker processes keep freed block-sized memory (glibc malloc settings) and can opt out."""

from __future__ import annotations

import os
import platform
import resource

import numpy as np
import pytest

from neuropool.cluster import connect
from neuropool.cluster.malloc import (
    DEFAULT_KEEP_MB,
    MALLOC_VARIABLES,
    retain_freed_memory,
    worker_environ,
)

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_worker_environ(monkeypatch):
    monkeypatch.delenv("NEUROPOOL_MALLOC_KEEP_MB", raising=False)
    env = worker_environ()
    assert env == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(DEFAULT_KEEP_MB << 19),
                   "MALLOC_TRIM_THRESHOLD_": str(DEFAULT_KEEP_MB << 20)}
    monkeypatch.setenv("NEUROPOOL_MALLOC_KEEP_MB", "0")
    assert worker_environ() == {}
    assert worker_environ(4096)["MALLOC_TRIM_THRESHOLD_"] == str(2**31 - 1)  # mallopt's int


def _faults_of_block_sized_arrays() -> list[int]:
    """Page faults of allocating and filling a 96 MB array, 5 times over (as blocks do)."""
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        a = np.empty((384, 64_000), dtype=np.float32)
        a[...] = 1.0
        del a
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    return faults


@pytest.mark.skipif(not GLIBC, reason="the malloc settings are glibc's")
@pytest.mark.parametrize("keep_mb", ["0", None])
def test_dask_workers_reuse_freed_block_memory(monkeypatch, keep_mb):
    if keep_mb is None:
        monkeypatch.delenv("NEUROPOOL_MALLOC_KEEP_MB", raising=False)
    else:
        monkeypatch.setenv("NEUROPOOL_MALLOC_KEEP_MB", keep_mb)
    # a nanny exports its pre-spawn environment into this process, where it then overrides the
    # configuration of later nannies: start from a clean slate, and leave one behind
    for name in MALLOC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with connect(n_workers=1, threads_per_worker=1) as pool:
        env = pool.client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX",)})
        assert list(env.values()) == [{"MALLOC_ARENA_MAX": None if keep_mb == "0" else "1"}]
        # a worker runs tasks on a thread of its own: with the settings (one arena) the later
        # arrays reuse the first one's pages; without them every array faults its pages in anew
        first, *later = pool.client.submit(_faults_of_block_sized_arrays, pure=False).result()
        if keep_mb == "0":
            assert min(later) > first / 2, (first, later)
        else:
            assert sum(later) < first / 2, (first, later)


@pytest.mark.skipif(not GLIBC, reason="the malloc settings are glibc's")
def test_retain_freed_memory_in_this_process():
    assert retain_freed_memory() is True
    assert retain_freed_memory(0) is True  # once per process: the first call decides
