"""Tiny tasks over JSON files, to test graphs and the runner without any real data.

``toy_source`` copies a number from the source file; ``toy_double`` doubles it over several
blocks; ``toy_fail`` raises when told to. Counters in a side folder record how often each block
really ran, so tests can assert that cached nodes did not run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from neuropool.io import urls
from neuropool.tasks import register
from neuropool.tasks.base import Params, Resources, Task, TaskContext


def _bump(counter_dir: str, name: str) -> None:
    if counter_dir:
        p = Path(counter_dir) / name
        p.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))


class SourceParams(Params):
    counter_dir: str = ""


class ToySource(Task):
    name = "toy_source"
    version = "1"
    Params = SourceParams
    inputs = ("ephys.source",)
    outputs = ("toy.value",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        _bump(self.params.counter_dir, ctx.node)
        value = urls.read_json(ctx.inputs["ephys.source"])["value"]
        urls.write_json(urls.join(ctx.outputs["toy.value"], "value.json"), {"value": value})
        return {"value": value}


class DoubleParams(Params):
    factor: float = Field(2.0, gt=0)
    n_blocks: int = Field(3, ge=1)
    counter_dir: str = ""


class ToyDouble(Task):
    name = "toy_double"
    version = "1"
    Params = DoubleParams
    inputs = ("toy.value",)
    outputs = ("toy.doubled",)

    def setup(self, ctx: TaskContext) -> list[Any]:
        return list(range(self.params.n_blocks))

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        _bump(self.params.counter_dir, f"{ctx.node}-{block}")
        value = urls.read_json(urls.join(ctx.inputs["toy.value"], "value.json"))["value"]
        urls.write_json(urls.join(ctx.outputs["toy.doubled"], f"part{block}.json"),
                        {"value": value * self.params.factor})
        return value * self.params.factor

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        return {"total": sum(results)}


class FailParams(Params):
    fail: bool = True
    counter_dir: str = ""


class ToyFail(Task):
    name = "toy_fail"
    version = "1"
    Params = FailParams
    inputs = ("toy.doubled",)
    outputs = ("toy.final",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        _bump(self.params.counter_dir, ctx.node)
        if self.params.fail:
            raise ValueError(f"{ctx.inputs['toy.doubled']}: this toy task was told to fail")
        urls.write_json(urls.join(ctx.outputs["toy.final"], "done.json"), {"ok": True})
        return {"ok": True}


class ToyGPU(Task):
    name = "toy_gpu"
    version = "1"
    inputs = ("toy.value",)
    outputs = ("toy.gpu",)
    default_resources = Resources(gpus=1)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        return {}


class ToyLoopA(Task):
    name = "toy_loop_a"
    version = "1"
    inputs = ("toy.b",)
    outputs = ("toy.a",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        return {}


class ToyLoopB(Task):
    name = "toy_loop_b"
    version = "1"
    inputs = ("toy.a",)
    outputs = ("toy.b",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        return {}


for _cls in (ToySource, ToyDouble, ToyFail, ToyGPU, ToyLoopA, ToyLoopB):
    register(_cls.name, _cls)


class SlowParams(Params):
    n_blocks: int = Field(4, ge=1)
    seconds: float = Field(0.5, ge=0)
    out_dir: str = ""


class ToySlow(Task):
    """Sleeps in each block and writes one file per block (to check nothing is written twice)."""

    name = "toy_slow"
    version = "1"
    Params = SlowParams
    inputs = ("toy.value",)
    outputs = ("toy.slow",)

    def setup(self, ctx: TaskContext) -> list[Any]:
        return list(range(self.params.n_blocks))

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        import time

        time.sleep(self.params.seconds)
        urls.write_json(urls.join(ctx.outputs["toy.slow"], f"block{block}.json"), {"block": block})
        return block


register(ToySlow.name, ToySlow)
