"""Toy tasks for pools of real worker processes: who ran a block, and slow many-block work.

``pool_where`` needs a GPU and reports the Dask worker that ran it (on loopback every worker has
the same host name, so the commit record's ``host`` cannot tell them apart). ``pool_slow`` sleeps
in each of many blocks and writes one file per block, leaving a trace file when a block starts,
so a test can kill a worker in the middle of a block and check what was re-run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from neuropool.io import urls
from neuropool.tasks import register
from neuropool.tasks.base import Params, Resources, Task, TaskContext


def worker_name() -> str:
    """The name of the Dask worker running this code; ``"local"`` outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:
        return "local"


def is_daemon() -> bool:
    """Whether this process is daemonic (a daemonic worker cannot start process pools)."""
    import multiprocessing

    return multiprocessing.current_process().daemon


def block_text(block: int, value: float) -> str:
    """What ``pool_slow`` writes for ``block``: tests compare files with it exactly."""
    return f"block {block}: {value * (block + 1):g}\n"


class PoolWhere(Task):
    name = "pool_where"
    version = "1"
    inputs = ("toy.value",)
    outputs = ("pool.where",)
    default_resources = Resources(gpus=1)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        where = {"worker": worker_name(), "pid": os.getpid()}
        urls.write_json(urls.join(ctx.outputs["pool.where"], "where.json"), where)
        return where


class SlowParams(Params):
    n_blocks: int = Field(12, ge=1)
    sleep_s: float = Field(1.0, ge=0)
    trace_dir: str = ""


class PoolSlow(Task):
    name = "pool_slow"
    version = "1"
    Params = SlowParams
    inputs = ("toy.value",)
    outputs = ("pool.blocks",)

    def setup(self, ctx: TaskContext) -> list[Any]:
        return list(range(self.params.n_blocks))

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        who = worker_name()
        if self.params.trace_dir:  # "this block started on this worker"
            (Path(self.params.trace_dir) / f"{block:03d}-{who}-{os.getpid()}").touch()
        value = urls.read_json(urls.join(ctx.inputs["toy.value"], "value.json"))["value"]
        time.sleep(self.params.sleep_s)
        fs, path = urls.get_fs(urls.join(ctx.outputs["pool.blocks"], f"block{block:03d}.txt"))
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        with fs.open(path, "w") as f:
            f.write(block_text(block, value))
        return who

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        return {"blocks": len(results), "workers": sorted(set(results))}


for _cls in (PoolWhere, PoolSlow):
    register(_cls.name, _cls)
