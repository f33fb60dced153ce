"""A toy task that reports which Ray node ran each of its blocks, to test placement on Ray.

``toy_ray_node`` reads ``toy.value`` (made by ``toy_source`` in :mod:`tests.graphs.toytasks`),
asks for ``gpus`` GPUs per block and returns, per block, the id of the Ray node it ran on;
``finish`` sums them up as ``{"node_ids": [...]}`` (one entry per block, in block order).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from neuropool.io import urls
from neuropool.tasks import register
from neuropool.tasks.base import Params, Resources, Task, TaskContext


class NodeParams(Params):
    gpus: int = Field(0, ge=0)
    n_blocks: int = Field(1, ge=1)
    #: How long each block holds its worker, so that concurrent blocks spread over the nodes.
    sleep_s: float = Field(0.0, ge=0)


class ToyRayNode(Task):
    name = "toy_ray_node"
    version = "1"
    Params = NodeParams
    inputs = ("toy.value",)
    outputs = ("toy.node",)

    def resources(self) -> Resources:
        return Resources(gpus=self.params.gpus)

    def setup(self, ctx: TaskContext) -> list[Any]:
        return list(range(self.params.n_blocks))

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        import ray  # only ever run on a Ray worker

        node_id = ray.get_runtime_context().get_node_id()
        time.sleep(self.params.sleep_s)
        urls.write_json(urls.join(ctx.outputs["toy.node"], f"part{block}.json"), {"node_id": node_id})
        return node_id

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        return {"node_ids": list(results)}


register(ToyRayNode.name, ToyRayNode)
